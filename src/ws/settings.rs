//! What a WebSocket connection is given when it starts: its settings from the server's
//! configuration and who the client is ([`Settings`]), and where the messages it reads
//! go ([`Destination`]).

use std::sync::Arc;
use std::time::Duration;

use crate::budget::Budget;
use crate::lesson::Watch;
use crate::net::limit::Slot;
use crate::protocol::rights::Caller;
use crate::room::Resume;
use crate::security::AccessPolicy;

/// The per-connection settings taken from the server's `Config`.
#[derive(Debug)]
pub struct Settings {
    /// Writer pings this often.
    pub ping_interval: Duration,
    /// Reader gives up on a peer silent this long.
    pub pong_timeout: Duration,
    /// Largest incoming message.
    pub max_message_bytes: usize,
    /// Messages per second the client may publish into a room (bursts of twice
    /// that); past it, close 1008.
    pub max_messages_per_second: u32,
    /// Outgoing queue length.
    pub send_queue: usize,
    /// Outgoing queue bytes before the connection is a slow consumer.
    pub send_queue_bytes: usize,
    /// The memory budget bytes being read and messages are charged to.
    pub budget: Arc<Budget>,
    /// `--auth first-message`: the token the first message must carry.
    pub first_message_auth: Option<Arc<AccessPolicy>>,
    /// Deadline for the handshake, and for the token under `--auth first-message`.
    pub handshake_timeout: Duration,
    /// Under `--auth first-message`: this connection's place in the pool of
    /// not-yet-authenticated sockets, given back once the token is accepted.
    pub unauthenticated: Option<Slot>,
    /// Who the handshake's token showed the client to be (`None` under
    /// `--auth first-message`: the first message tells).
    pub caller: Option<Caller>,
    /// How the connection is watched (lesson mode) and its figures.
    pub watch: Option<Arc<Watch>>,
}

/// Where the reader delivers the messages it receives.
#[derive(Clone, Debug)]
pub enum Destination {
    /// Back to the same connection (`/echo`).
    Echo,
    /// To every member of a room, through the hub.
    Room {
        /// The room.
        name: String,
        /// Raw mode: payloads exactly as published, no envelope, no `cid:` parsing.
        raw: bool,
        /// Where to start in the room's history.
        resume: Resume,
    },
}
