//! What the hub and a *link* to other instances tell each other.
//!
//! One threadcast instance needs none of this: its hub numbers each room's messages
//! itself. Several instances behind a load balancer share their rooms through a link
//! (Redis, `--features redis`, see `src/redis_link/`), and then a room's ids must be the
//! same on every instance, so the link's store assigns them:
//!
//! 1. A local publish goes from the hub to the link ([`ToLink::Publish`]).
//! 2. The store numbers it, keeps it, and broadcasts it to every instance, this one
//!    included; each hub delivers it to its own members ([`FromLink::Remote`]).
//!    Every instance therefore delivers the same messages in the same order with the
//!    same ids, and a client can resume on any instance.
//! 3. When the link is down, the hub's rooms carry on alone under a fresh epoch, and
//!    the link keeps a bounded queue of what was published meanwhile, forwarded when
//!    it is back (marked *late*, so the instance that delivered it already does not
//!    deliver it twice).
//!
//! These types carry no Redis detail, so the hub's side is the same whatever the link.
//! Without `--features redis` nothing starts a link, so what only a link builds or
//! reads is never used; the hub's side is still compiled and unit-tested.
#![cfg_attr(not(feature = "redis"), allow(dead_code))]

use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use tungstenite::Message;

use crate::hub::{ConnId, Published, Reply};

/// Requests from the hub to the link.
#[derive(Debug)]
pub enum ToLink {
    /// Number, keep and broadcast this message for every instance.
    Publish(Box<Outbound>),
    /// Answer with the room's epoch and recent history
    /// ([`FromLink::Loaded`]).
    Load {
        /// The room.
        room: String,
    },
}

/// What the link tells the hub (inside [`crate::hub::Command::Link`]).
#[derive(Debug)]
pub enum FromLink {
    /// The link is down: deliver this message here, numbered by this instance.
    PublishHere(Box<Outbound>),
    /// The link's store numbered a message published here: tell its publisher.
    Stored(Box<Outbound>, Published),
    /// A room message from the link (published on any instance).
    Remote(Box<Arrival>),
    /// The link's copy of a room: its epoch and its newest messages, oldest first.
    Loaded {
        /// The room.
        room: String,
        /// The room's shared epoch.
        epoch: u64,
        /// Its history.
        messages: Vec<Arrival>,
    },
    /// The link is connected and subscribed: share the rooms.
    Up,
    /// The link is lost: every room carries on alone.
    Down,
}

/// A message published on this instance, on its way to the link.
#[derive(Debug)]
pub struct Outbound {
    /// Target room.
    pub room: String,
    /// The payload.
    pub message: Message,
    /// The publisher's own id for it (dropping repeats is the store's job), and who
    /// published it.
    pub tag: crate::room::Tag,
    /// The publishing connection, which gets the ack.
    pub from: Option<ConnId>,
    /// Where to report the outcome.
    pub reply: Option<Reply<Published>>,
    /// When it was published here, milliseconds since 1970.
    pub ts: u64,
    /// Already delivered by this instance while the link was down.
    pub late: bool,
    /// Its bytes on the memory budget, while this instance holds it (`None` for the
    /// copy the link keeps for Redis, whose bytes the original shares).
    pub charge: Option<crate::budget::Reservation>,
}

impl Outbound {
    /// A message published on this instance just now, not delivered anywhere yet.
    pub fn new(
        room: String,
        message: Message,
        tag: crate::room::Tag,
        from: Option<ConnId>,
        reply: Option<Reply<Published>>,
        charge: crate::budget::Reservation,
    ) -> Outbound {
        Outbound {
            room,
            message,
            tag,
            from,
            reply,
            ts: crate::room::now_millis(),
            late: false,
            charge: Some(charge),
        }
    }
}

/// A room message that arrived through the link, with what this instance must know
/// about it besides its id.
#[derive(Debug, Clone)]
pub struct Arrival {
    /// The room.
    pub room: String,
    /// The message, numbered by the store.
    pub message: std::sync::Arc<crate::room::RoomMessage>,
    /// This instance published it while the link was down and delivered it then:
    /// keep it in history, but do not deliver it to members again.
    pub delivered_here: bool,
}

/// The link's state as `/stats` and `/healthz` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not connected yet, or reconnecting after a failure.
    Down = 0,
    /// Connected and subscribed: rooms are shared.
    Up = 1,
}

/// Figures every thread can read without asking the link (atomics).
#[derive(Debug, Default)]
pub struct LinkStatus {
    state: AtomicU8,
    /// Messages waiting in the queue for the link to come back.
    pub queued: AtomicU64,
    /// Messages not forwarded because that queue was full (still delivered locally).
    pub dropped: AtomicU64,
    /// Times the link was (re)established.
    pub connects: AtomicU64,
    /// Why the link last went down (never holds credentials).
    pub last_error: Mutex<String>,
}

impl LinkStatus {
    /// The current state.
    pub fn state(&self) -> LinkState {
        match self.state.load(Ordering::Acquire) {
            1 => LinkState::Up,
            _ => LinkState::Down,
        }
    }

    /// Records a new state.
    pub fn set_state(&self, state: LinkState) {
        self.state.store(state as u8, Ordering::Release);
    }

    /// Records why the link went down.
    pub fn set_error(&self, error: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = error;
    }

    /// Why the link last went down ("" if it never did).
    pub fn error(&self) -> String {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
