//! What the hub sends a connection: every item a writer (or an SSE stream, or a long
//! poll) takes from its queue, in order.

use std::sync::Arc;

use tungstenite::Message;

use crate::budget::Reservation;
use crate::protocol::control;
use crate::protocol::person::Person;
use crate::room::{CatchUp, RoomMessage};

/// Identifies one connection for as long as the process runs.
pub type ConnId = u64;

/// What a connection's writer can be asked to send. Everything that reaches the
/// socket passes through one of these, in order, so frames never interleave.
///
/// Every variant is at most a pointer: each connection's queue reserves room for
/// `--send-queue` of these up front, so their size is memory per idle connection.
#[derive(Debug)]
pub enum Outgoing {
    /// A message to send as it is (echo).
    Message(Box<Echo>),
    /// A room message; the writer sends its enveloped or raw form.
    Room(Arc<RoomMessage>),
    /// What a joining member is owed before live messages: welcome, gap, replay.
    /// One queue item however long the replay, so a resume never overflows the queue.
    Joined(Box<Joined>),
    /// A control notice for enveloped members.
    Notice(Box<Notice>),
    /// An event for the connection's own inspector (`?inspect=1`, lesson mode): sent
    /// as a text frame, to raw and enveloped connections alike.
    Inspect(Box<Inspection>),
    /// The reply to a ping the reader received (same payload).
    Pong(Box<tungstenite::Bytes>),
    /// Send this close frame, then stop writing. `None` is a close frame without a code
    /// (the right reply to a peer that sent one without a code).
    Close(Box<Option<tungstenite::protocol::CloseFrame>>),
    /// Look at the connection's [`CloseSignal`](super::CloseSignal): the server wants it closed. (Queued
    /// for a writer that may be asleep on an empty queue; a full queue needs none.)
    Wake,
    /// The peer is gone (no close frame possible): stop without writing.
    Stop,
}

/// A message to send back as it is (`/echo`), with its bytes on the memory budget
/// until the writer has sent it.
#[derive(Debug)]
pub struct Echo {
    /// The message.
    pub message: Message,
    /// Its charge on the budget: never read, only held, so that dropping the item
    /// (sent, or dropped with a closed queue) gives the bytes back.
    #[expect(dead_code, reason = "held for its Drop")]
    pub charge: Reservation,
}

impl Outgoing {
    /// The bytes of message this item holds, for the queue's [`Backlog`](super::Backlog): a room
    /// message's cost, an echo's length. A catch-up counts 0: its messages are the
    /// room's history, shared (the budget counts them once), and a client that asks
    /// for a replay of the whole history is catching up, not falling behind.
    pub fn bytes(&self) -> usize {
        match self {
            Outgoing::Message(echo) => echo.message.len(),
            Outgoing::Room(message) => message.cost(),
            _ => 0,
        }
    }
}

/// An inspect event's JSON (lesson mode), boxed in the queue like every larger item.
#[derive(Debug)]
pub struct Inspection(pub String);

/// The catch-up a member gets when it joins a room.
#[derive(Debug)]
pub struct Joined {
    /// The room's name.
    pub room: String,
    /// Welcome facts, gap and replay.
    pub plan: CatchUp,
    /// Who is in the room (JSON, the welcome's `users`); `None` in a room too large
    /// to list, and for the catch-up after a link outage.
    pub users: Option<String>,
}

impl Joined {
    /// The welcome control frame that opens the catch-up.
    pub fn welcome_json(&self) -> String {
        control::welcome_json(&self.room, &self.plan.welcome(), self.users.as_deref())
    }
}

/// Control notices (see `docs/PROTOCOL.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// To a publisher that gave a client id: which id its message got.
    Ack {
        /// The client's id for the message.
        cid: String,
        /// The room id it got (the first copy's, for a duplicate).
        id: u64,
        /// The room had seen this client id already; nothing was broadcast.
        duplicate: bool,
    },
    /// The room's member count changed.
    Members(usize),
    /// A person's first connection to the room arrived.
    Join(Arc<Person>),
    /// A person's last connection to the room left.
    Leave(Arc<Person>),
    /// To a client whose message was refused (it may not publish here): why. Nothing
    /// was broadcast; the connection stays.
    Error(&'static str),
}

impl Notice {
    /// Its `type`: the SSE event name it goes out under.
    pub fn kind(&self) -> &'static str {
        match self {
            Notice::Ack { .. } => "ack",
            Notice::Members(_) => "members",
            Notice::Join(_) => "join",
            Notice::Leave(_) => "leave",
            Notice::Error(_) => "error",
        }
    }

    /// The control frame for this notice (see `docs/PROTOCOL.md`).
    pub fn json(&self) -> String {
        match self {
            Notice::Ack { cid, id, duplicate } => control::ack_json(cid, *id, *duplicate),
            Notice::Members(count) => control::members_json(*count),
            Notice::Join(person) => control::presence_json("join", person),
            Notice::Leave(person) => control::presence_json("leave", person),
            Notice::Error(reason) => control::error_json(reason),
        }
    }
}
