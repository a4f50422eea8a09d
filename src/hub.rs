//! The hub: one thread that owns every room and fans messages out to the members.
//!
//! Like gorilla's chat example, nothing else touches the room table: connections
//! join, leave and publish by sending a [`Command`] over a channel, and the hub applies
//! the commands one at a time. No locks, no races between a join and a publish.
//!
//! The hub never waits for a client. It hands each member its copy with `try_send`;
//! a member whose queue is full is a *slow consumer*: it is removed from its room and
//! asked to close with 1008 (policy violation), and everyone else keeps receiving.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::thread;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

/// Commands waiting for the hub. When readers publish faster than the hub fans out,
/// they wait here (back-pressure) instead of growing memory without bound.
pub const HUB_QUEUE: usize = 4096;

/// Close code asked of a member the hub dropped for not keeping up.
pub const SLOW_CONSUMER_CODE: u16 = 1008;
/// Close reason sent with [`SLOW_CONSUMER_CODE`].
pub const SLOW_CONSUMER_REASON: &str = "slow consumer: send queue full";
/// Close code sent to everyone when the server shuts down.
pub const GOING_AWAY_CODE: u16 = 1001;
/// Close reason sent with [`GOING_AWAY_CODE`].
pub const GOING_AWAY_REASON: &str = "server shutting down";

/// Identifies one connection for as long as the process runs.
pub type ConnId = u64;

/// What a connection's writer can be asked to send. Everything that reaches the
/// socket passes through one of these, in order, so frames never interleave.
#[derive(Debug)]
pub enum Outgoing {
    /// A text or binary message for the peer.
    Message(Message),
    /// The reply to a ping the reader received (same payload).
    Pong(tungstenite::Bytes),
    /// Send this close frame, then stop writing. `None` is a close frame without a code
    /// (the right reply to a peer that sent one without a code).
    Close(Option<tungstenite::protocol::CloseFrame>),
    /// Look at the connection's [`CloseSignal`]: the server wants it closed.
    Wake,
    /// The peer is gone (no close frame possible): stop without writing.
    Stop,
}

/// A close the server asks of a connection from outside its own threads (slow
/// consumer, shutdown). A flag rather than a queued message, because the reason we
/// close a slow consumer is precisely that its queue is full.
#[derive(Debug, Default)]
pub struct CloseSignal(AtomicU16);

impl CloseSignal {
    /// Ask for a close with `code`; the first request wins.
    pub fn request(&self, code: u16) {
        let _ = self
            .0
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The close the server asked for, with its reason, if any.
    pub fn requested(&self) -> Option<(CloseCode, &'static str)> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            SLOW_CONSUMER_CODE => Some((CloseCode::Policy, SLOW_CONSUMER_REASON)),
            _ => Some((CloseCode::Away, GOING_AWAY_REASON)),
        }
    }
}

/// The hub's handle on one connection: the queue to its writer and its close flag.
#[derive(Clone, Debug)]
pub struct Subscriber {
    /// The connection's bounded outgoing queue.
    pub tx: Sender<Outgoing>,
    /// Where the hub asks the connection to close.
    pub close: Arc<CloseSignal>,
}

impl Subscriber {
    /// Ask this connection to close with `code`, and wake its writer if it is idle.
    pub fn request_close(&self, code: u16) {
        self.close.request(code);
        // If the queue is full the writer is busy and will see the flag anyway.
        let _ = self.tx.try_send(Outgoing::Wake);
    }
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
        subscriber: Subscriber,
    },
    /// A connection is closing.
    Leave {
        /// The connection.
        id: ConnId,
        /// The room it was in, if any.
        room: Option<String>,
        /// Answered once the connection is out of the room: from then on the hub queues
        /// nothing more for it.
        done: Option<Sender<()>>,
    },
    /// Broadcast `message` to every member of `room`. When `reached` is given, the hub
    /// answers with the number of members the message was queued to.
    Publish {
        /// Target room.
        room: String,
        /// The message, shared by every member (the payload is reference-counted).
        message: Message,
        /// Where to report how many members got it.
        reached: Option<Sender<usize>>,
    },
    /// Report every room with its member count, sorted by name.
    Stats(Sender<Vec<(String, usize)>>),
    /// Ask every connection to close with 1001 and stop the hub.
    Shutdown,
}

/// Counters shared by every thread (atomics: no lock, no hub round trip).
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages received from clients and `/publish`.
    pub messages_in: AtomicU64,
    /// Messages written to clients.
    pub messages_out: AtomicU64,
    /// Connections closed with 1008 because their queue was full.
    pub slow_consumers: AtomicU64,
}

/// Starts the hub thread. It runs until it gets [`Command::Shutdown`] or every sender
/// of `commands` is gone.
pub fn spawn(commands: Receiver<Command>, counters: Arc<Counters>) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name("hub".into())
        .spawn(move || Hub::default().run(commands, &counters))
        .expect("spawn hub thread")
}

/// The hub's state: only the hub thread ever sees it.
#[derive(Default)]
struct Hub {
    /// Room name → its members.
    rooms: HashMap<String, HashMap<ConnId, Subscriber>>,
    /// Connections in no room (echo); the hub knows them only to close them at shutdown.
    loners: HashMap<ConnId, Subscriber>,
}

impl Hub {
    fn run(mut self, commands: Receiver<Command>, counters: &Counters) {
        for command in commands.iter() {
            match command {
                Command::Join {
                    id,
                    room: Some(room),
                    subscriber,
                } => {
                    self.rooms.entry(room).or_default().insert(id, subscriber);
                }
                Command::Join {
                    id,
                    room: None,
                    subscriber,
                } => {
                    self.loners.insert(id, subscriber);
                }
                Command::Leave { id, room, done } => {
                    match room {
                        Some(room) => self.leave(&room, id),
                        None => {
                            self.loners.remove(&id);
                        }
                    }
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
                Command::Publish {
                    room,
                    message,
                    reached,
                } => {
                    let n = self.publish(&room, message, counters);
                    if let Some(reply) = reached {
                        let _ = reply.send(n);
                    }
                }
                Command::Stats(reply) => {
                    let _ = reply.send(self.room_sizes());
                }
                Command::Shutdown => {
                    self.close_everyone();
                    return;
                }
            }
        }
    }

    fn leave(&mut self, room: &str, id: ConnId) {
        if let Some(members) = self.rooms.get_mut(room) {
            members.remove(&id);
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
    }

    /// Fan-out: offer the message to every member without ever blocking.
    fn publish(&mut self, room: &str, message: Message, counters: &Counters) -> usize {
        let Some(members) = self.rooms.get_mut(room) else {
            return 0;
        };
        let mut reached = 0;
        members.retain(
            |id, member| match member.tx.try_send(Outgoing::Message(message.clone())) {
                Ok(()) => {
                    reached += 1;
                    true
                }
                Err(TrySendError::Full(_)) => {
                    log::warn!(
                        "connection {id} in room '{room}' is a slow consumer; closing it with 1008"
                    );
                    counters.slow_consumers.fetch_add(1, Ordering::Relaxed);
                    member.request_close(SLOW_CONSUMER_CODE);
                    false
                }
                // Its writer has ended; the reader's Leave is on its way.
                Err(TrySendError::Disconnected(_)) => false,
            },
        );
        if members.is_empty() {
            self.rooms.remove(room);
        }
        reached
    }

    fn close_everyone(&mut self) {
        let everyone = self
            .rooms
            .values()
            .flat_map(|m| m.values())
            .chain(self.loners.values());
        for member in everyone {
            member.request_close(GOING_AWAY_CODE);
        }
    }

    fn room_sizes(&self) -> Vec<(String, usize)> {
        let mut sizes: Vec<_> = self
            .rooms
            .iter()
            .map(|(name, members)| (name.clone(), members.len()))
            .collect();
        sizes.sort();
        sizes
    }
}
