//! What connections and the HTTP side ask of the hub ([`Command`]), and what it
//! answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tungstenite::Message;

use super::{ConnId, Member, OperatorRequest};
use crate::budget::Reservation;
use crate::hub::cluster::{FromLink, LinkStatus, ToLink};
use crate::room::{Resume, Tag};

/// Longest anyone waits for the hub to answer a request (stats, publish, leave).
pub const HUB_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Commands waiting for the hub. When readers publish faster than the hub fans out,
/// they wait here (back-pressure) instead of growing memory without bound.
pub const HUB_QUEUE: usize = 4096;

/// Where the hub sends the one answer to a request: a channel from the standard
/// library, not crossbeam. Whoever asked waits for exactly one message, and a
/// crossbeam receiver spins and gives up the CPU (`sched_yield`) several times before
/// it sleeps; with hundreds of threads on a few cores each of those is a switch to
/// another thread. The standard library's receiver spins briefly and sleeps.
pub type Reply<T> = std::sync::mpsc::SyncSender<T>;

/// What a publish produced, for publishers that asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Members the message was queued to (0 for a duplicate).
    pub delivered: usize,
    /// The message's id in the room.
    pub id: u64,
    /// The room's epoch.
    pub epoch: u64,
    /// The client id had been seen already; nothing was broadcast.
    pub duplicate: bool,
}

/// One room's figures, for `/stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomStats {
    /// The room's name.
    pub name: String,
    /// Members right now.
    pub members: usize,
    /// Messages in history.
    pub history_messages: usize,
    /// Bytes of history.
    pub history_bytes: usize,
    /// The newest id in the room (0 when nothing was ever published).
    pub last_id: u64,
    /// The room's epoch.
    pub epoch: u64,
}

/// What connections and the HTTP side ask of the hub.
#[derive(Debug)]
pub enum Command {
    /// A connection opened; `room` is `None` for connections outside any room (echo).
    Join {
        /// The connection.
        id: ConnId,
        /// The room it joins, if any.
        room: Option<String>,
        /// How to reach it.
        member: Member,
        /// Where it wants to start in the room's history.
        resume: Resume,
    },
    /// A connection is closing.
    Leave {
        /// The connection.
        id: ConnId,
        /// The room it was in, if any.
        room: Option<String>,
        /// Answered once the connection is out of the room: from then on the hub queues
        /// nothing more for it.
        done: Option<Reply<()>>,
    },
    /// Broadcast `message` to every member of `room` and keep it in history.
    Publish {
        /// Target room.
        room: String,
        /// The payload (text or binary), shared by every member.
        message: Message,
        /// The publisher's own id for it (to drop repeats), and who published it.
        tag: Tag,
        /// The publishing connection, which gets the ack when `cid` is set.
        from: Option<ConnId>,
        /// Where to report the outcome.
        reply: Option<Reply<Published>>,
        /// The message's bytes on the memory budget (charged by whoever read it).
        charge: Reservation,
    },
    /// The memory budget runs short: free what can be freed (`Hub::relieve`).
    Reclaim,
    /// Something from the link to other instances (Redis): only a server sharing
    /// its rooms sends these, and `sharing.rs` handles them all.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Link(FromLink),
    /// Report every room, sorted by name.
    Stats(Reply<Vec<RoomStats>>),
    /// A request from the operator's API (`--admin-token`).
    Operator(OperatorRequest),
    /// Ask every connection to close with 1001 once it has sent what is queued to it,
    /// queue nothing more, answer their `Leave`s until they have all left or the
    /// deadline passes (the server's one drain deadline, which also bounds each
    /// connection's sending), and stop the hub.
    Shutdown(Instant),
}

/// The hub's end of a link to other instances.
#[derive(Debug)]
pub struct LinkEnd {
    /// Requests to the link.
    pub tx: Sender<ToLink>,
    /// The link's figures (the hub counts what it could not hand over).
    pub status: Arc<LinkStatus>,
}
