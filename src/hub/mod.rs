//! The hub: one thread that owns every room and fans messages out to the members.
//!
//! Like gorilla's chat example, nothing else touches the room table: connections
//! join, leave and publish by sending a [`Command`] over a channel, and the hub applies
//! the commands one at a time. No locks, no races between a join and a publish.
//!
//! The hub never waits for a client. It hands each member its copy with `try_send`;
//! a member whose queue is full is a *slow consumer*: it is removed from its room and
//! asked to close with 1008 (policy violation) at once, dropping what is queued to it,
//! and everyone else keeps receiving. At shutdown every member is asked to close with
//! 1001 (going away) *after* what is queued to it, by the server's drain deadline: a
//! queued message was accepted and acknowledged to its publisher, so it is owed.
//!
//! Each room also keeps its history ([`crate::room::History`]); because the hub does a
//! join and the replay of missed messages in one step, no publish can fall between
//! them: a resuming client sees every message exactly once.
//!
//! Each member's queue is bounded in bytes as well as in items (`queue.rs`), and
//! every message the hub holds is on the memory budget ([`crate::budget`]). When the
//! budget runs high the hub frees memory itself: it closes the members that are far
//! behind (1008), then trims the oldest messages across all rooms' histories
//! (`Hub::relieve`).
//!
//! With a link to other instances (Redis, see [`crate::hub::cluster`]) the hub numbers
//! nothing itself while the link is up: publishes go out to the link, and messages
//! come back numbered ([`Command::Remote`]), from this instance and every other. That
//! part of the hub has a file of its own, `src/hub/sharing.rs`.

use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

use crate::budget::{Budget, Category, Reservation};
use crate::hub::cluster::{Arrival, LinkStatus, Outbound, ToLink};
use crate::protocol::envelope;
use crate::room::{self, CatchUp, Duplicate, History, HistoryLimits, Resume, RoomMessage};

pub mod cluster;
mod queue;
mod sharing;

pub use queue::{Backlog, QueueEnd};
use sharing::{Sharing, WaitingJoin, forward};

/// Rooms with no members that keep their history for returning clients; past this
/// many, the least recently used one is dropped (bounds memory whatever names
/// clients invent).
pub const MAX_IDLE_ROOMS: usize = 1024;
/// Member-count updates are sent while a room has at most this many members; above
/// it every join would cost a message to every member (quadratic traffic).
pub const PRESENCE_MAX_MEMBERS: usize = 100;

/// How long shutdown lets connections finish their close handshakes.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest anyone waits for the hub to answer a request (stats, publish, leave).
pub const HUB_REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Commands waiting for the hub. When readers publish faster than the hub fans out,
/// they wait here (back-pressure) instead of growing memory without bound.
pub const HUB_QUEUE: usize = 4096;

/// Close code asked of a member the hub dropped for not keeping up.
pub const SLOW_CONSUMER_CODE: u16 = 1008;
/// Close reason sent with [`SLOW_CONSUMER_CODE`].
pub const SLOW_CONSUMER_REASON: &str = "slow consumer: too far behind";
/// When the memory budget runs high, members with more than this fraction of their
/// `--send-queue-bytes` waiting count as far behind, and are closed first. (Not
/// less than a half: a member that keeps up with messages of the largest size may
/// have one or two of them waiting at any moment.)
pub const BEHIND_FRACTION: usize = 2;
/// Close code sent to everyone when the server shuts down.
pub const GOING_AWAY_CODE: u16 = 1001;
/// Close reason sent with [`GOING_AWAY_CODE`].
pub const GOING_AWAY_REASON: &str = "server shutting down";

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
    /// The reply to a ping the reader received (same payload).
    Pong(Box<tungstenite::Bytes>),
    /// Send this close frame, then stop writing. `None` is a close frame without a code
    /// (the right reply to a peer that sent one without a code).
    Close(Box<Option<tungstenite::protocol::CloseFrame>>),
    /// Look at the connection's [`CloseSignal`]: the server wants it closed. (Queued
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
    /// Its charge on the budget.
    pub charge: Reservation,
}

impl Outgoing {
    /// The bytes of message this item holds, for the queue's [`Backlog`]: a room
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

/// The catch-up a member gets when it joins a room.
#[derive(Debug)]
pub struct Joined {
    /// The room's name.
    pub room: String,
    /// Welcome facts, gap and replay.
    pub plan: CatchUp,
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
}

impl Notice {
    /// The control frame for this notice (see `docs/PROTOCOL.md`).
    pub fn json(&self) -> String {
        match self {
            Notice::Ack { cid, id, duplicate } => envelope::ack_json(cid, *id, *duplicate),
            Notice::Members(count) => envelope::members_json(*count),
        }
    }
}

/// What a close the server asks for does with the items already in the connection's
/// queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queued {
    /// Drop them and close at once. For a slow consumer: its queue is exactly what is
    /// full, and it resumes from the room's history when it comes back.
    Drop,
    /// Send them first and close when the queue is empty, but give up on whatever is
    /// left at this deadline (the server's drain deadline). For a shutdown: each of
    /// them was accepted, and acknowledged to its publisher, so the member is owed it.
    SendBy(Instant),
}

/// A close the server asked of a connection: the code, and what happens to the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CloseRequest {
    /// The close code ([`SLOW_CONSUMER_CODE`] or [`GOING_AWAY_CODE`]).
    code: u16,
    /// Whether what is queued is dropped or sent first.
    queued: Queued,
}

/// A close the server asks of a connection from outside its own threads (slow
/// consumer, shutdown). A flag rather than a queued message, because the reason we
/// close a slow consumer is precisely that its queue is full. Set once: the first
/// request wins.
#[derive(Debug, Default)]
pub struct CloseSignal(OnceLock<CloseRequest>);

impl CloseSignal {
    /// Ask for a close with `code` at once, dropping whatever is still queued.
    pub fn request(&self, code: u16) {
        let _ = self.0.set(CloseRequest {
            code,
            queued: Queued::Drop,
        });
    }

    /// Ask for a close with `code` once everything queued so far is sent, giving up on
    /// the rest at `deadline`. Whoever queues to this connection must queue nothing
    /// more (the hub stops at shutdown), or the queue might never be empty.
    pub fn request_after_queue(&self, code: u16, deadline: Instant) {
        let _ = self.0.set(CloseRequest {
            code,
            queued: Queued::SendBy(deadline),
        });
    }

    /// The close the server asked for, with its reason, if any.
    pub fn requested(&self) -> Option<(CloseCode, &'static str)> {
        self.0.get().map(|request| match request.code {
            SLOW_CONSUMER_CODE => (CloseCode::Policy, SLOW_CONSUMER_REASON),
            _ => (CloseCode::Away, GOING_AWAY_REASON),
        })
    }

    /// What the close asked for does with the queue; `None` while none is asked for.
    pub fn queued(&self) -> Option<Queued> {
        self.0.get().map(|request| request.queued)
    }
}

/// The hub's handle on one connection: the queue to its writer, its close flag, and
/// whether it wants payloads only (raw) or the envelope and control notices.
#[derive(Clone, Debug)]
pub struct Subscriber {
    /// The connection's bounded outgoing queue.
    pub tx: Sender<Outgoing>,
    /// The bytes waiting in that queue, and how many may.
    pub backlog: Arc<Backlog>,
    /// A receiving end of the same queue, to drop what is queued when the connection
    /// is closed at once (its memory is free then, not when its writer gets to it).
    unsent: QueueEnd,
    /// Where the hub asks the connection to close.
    pub close: Arc<CloseSignal>,
    /// Raw mode: no catch-up, no notices, payloads exactly as published.
    pub raw: bool,
}

impl Subscriber {
    /// A subscriber with a fresh queue of `capacity` items and `bytes` bytes (its
    /// backlog counted into `counters.queued_bytes`); returns the receiving end too.
    pub fn new(
        capacity: usize,
        bytes: usize,
        raw: bool,
        counters: &Counters,
    ) -> (Subscriber, QueueEnd) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let backlog = Arc::new(Backlog::new(bytes, Arc::clone(&counters.queued_bytes)));
        let end = QueueEnd::new(rx, Arc::clone(&backlog));
        (
            Subscriber {
                tx,
                backlog,
                unsent: end.clone(),
                close: Arc::new(CloseSignal::default()),
                raw,
            },
            end,
        )
    }

    /// Ask this connection to close with `code` at once, dropping what is queued to it
    /// (right here: its memory is free at once, even while the writer is stuck in a
    /// write to a peer that does not read), and wake its writer if it is idle.
    pub fn request_close(&self, code: u16) {
        self.close.request(code);
        if self.close.queued() == Some(Queued::Drop) {
            self.unsent.try_iter().for_each(drop);
        }
        self.wake();
    }

    /// Ask this connection to close with `code` after what is queued to it, by
    /// `deadline`, and wake its writer if it is idle. The caller queues nothing more.
    pub fn request_close_after_queue(&self, code: u16, deadline: Instant) {
        self.close.request_after_queue(code, deadline);
        self.wake();
    }

    /// Makes an idle writer look at the close signal. If the queue is full the writer
    /// is busy and will see the flag anyway; if it has ended, there is nobody to wake.
    fn wake(&self) {
        let _ = self.tx.try_send(Outgoing::Wake);
    }
}

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
        done: Option<Sender<()>>,
    },
    /// Broadcast `message` to every member of `room` and keep it in history.
    Publish {
        /// Target room.
        room: String,
        /// The payload (text or binary), shared by every member.
        message: Message,
        /// The publisher's own id for it, to drop repeats.
        cid: Option<String>,
        /// The publishing connection, which gets the ack when `cid` is set.
        from: Option<ConnId>,
        /// Where to report the outcome.
        reply: Option<Sender<Published>>,
        /// The message's bytes on the memory budget (charged by whoever read it).
        charge: Reservation,
    },
    /// The memory budget runs short: free what can be freed (`Hub::relieve`).
    Reclaim,
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
    LinkUp,
    /// The link is lost: every room carries on alone.
    LinkDown,
    /// Report every room, sorted by name.
    Stats(Sender<Vec<RoomStats>>),
    /// Ask every connection to close with 1001 once it has sent what is queued to it,
    /// queue nothing more, answer their `Leave`s until they have all left or the
    /// deadline passes (the server's one drain deadline, which also bounds each
    /// connection's sending), and stop the hub.
    Shutdown(Instant),
}

/// Counters shared by every thread (atomics: no lock, no hub round trip).
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages received from clients and publishers.
    pub messages_in: AtomicU64,
    /// Messages written to clients.
    pub messages_out: AtomicU64,
    /// Connections closed with 1008 because their queue was full.
    pub slow_consumers: AtomicU64,
    /// Connections closed with 1008 for sending faster than `--max-messages-per-second`.
    pub rate_limited: AtomicU64,
    /// Messages trimmed from room histories because the memory budget ran high.
    pub history_trimmed: AtomicU64,
    /// Bytes waiting in every connection's send queue together (a message queued to
    /// n connections counts n times; the budget counts it once).
    pub queued_bytes: Arc<AtomicUsize>,
    /// From a publish being accepted to its frame being written to each WebSocket
    /// member (live messages; replays are not counted).
    pub delivery_latency: crate::latency::Histogram,
    /// Server-Sent Events streams open right now.
    pub sse_streams: Gauge,
    /// Long-poll requests waiting right now.
    pub polls_waiting: Gauge,
}

/// A count of things in progress; [`Gauge::enter`] counts one until the guard drops.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

/// Counts one for its [`Gauge`] while it lives.
#[derive(Debug)]
pub struct GaugeGuard<'a>(&'a Gauge);

impl Gauge {
    /// Counts one until the returned guard is dropped.
    pub fn enter(&self) -> GaugeGuard<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(self)
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The hub's end of a link to other instances.
#[derive(Debug)]
pub struct LinkEnd {
    /// Requests to the link.
    pub tx: Sender<ToLink>,
    /// The link's figures (the hub counts what it could not hand over).
    pub status: Arc<LinkStatus>,
}

/// Starts the hub thread. It runs until it gets [`Command::Shutdown`] or every sender
/// of `commands` is gone.
pub fn spawn(
    commands: Receiver<Command>,
    counters: Arc<Counters>,
    limits: HistoryLimits,
    link: Option<LinkEnd>,
    budget: Arc<Budget>,
) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name("hub".into())
        .spawn(move || Hub::new(limits, link, budget).run(commands, &counters))
        .expect("spawn hub thread")
}

/// A room: its members and its history.
struct Room {
    members: HashMap<ConnId, Subscriber>,
    history: History,
    /// The hub's clock when the room was last used, to find the least recently used.
    last_used: u64,
    /// Whether the room is shared through the link.
    sharing: Sharing,
    /// The last shared message (epoch, id) this room's members were given, so that
    /// after an outage they get exactly what they missed.
    served: Option<(u64, u64)>,
}

impl Room {
    fn is_loading(&self) -> bool {
        matches!(self.sharing, Sharing::Loading { .. })
    }

    /// Offers `message` to every member without blocking; members that cannot take it
    /// are dropped as slow consumers. Returns whether any was.
    fn broadcast(&mut self, message: &Arc<RoomMessage>, counters: &Counters) -> bool {
        let before = self.members.len();
        self.members
            .retain(|id, member| offer(*id, member, Outgoing::Room(Arc::clone(message)), counters));
        self.members.len() != before
    }

    /// No member, and nobody waiting to become one.
    fn is_idle(&self) -> bool {
        self.members.is_empty()
            && !matches!(&self.sharing, Sharing::Loading { waiting, .. } if !waiting.is_empty())
    }
}

/// The hub's state: only the hub thread ever sees it.
struct Hub {
    rooms: HashMap<String, Room>,
    /// Connections in no room (echo); the hub knows them only to close them at shutdown.
    loners: HashMap<ConnId, Subscriber>,
    limits: HistoryLimits,
    /// Counts commands; a cheap clock for "least recently used".
    clock: u64,
    /// The link to other instances, if any, and whether it is up right now.
    link: Option<LinkEnd>,
    link_up: bool,
    /// The memory budget every message is charged to.
    budget: Arc<Budget>,
}

impl Hub {
    fn new(limits: HistoryLimits, link: Option<LinkEnd>, budget: Arc<Budget>) -> Self {
        Hub {
            rooms: HashMap::new(),
            loners: HashMap::new(),
            limits,
            clock: 0,
            link,
            link_up: false,
            budget,
        }
    }

    fn run(mut self, commands: Receiver<Command>, counters: &Counters) {
        for command in commands.iter() {
            self.clock += 1;
            if let Command::Shutdown(deadline) = command {
                self.close_everyone(deadline);
                self.drain(&commands, counters, deadline);
                return;
            }
            // A bug in handling one command must not end every room: the hub logs it
            // and goes on with the next command. (Its state is plain maps, consistent
            // between statements, so carrying on is safe.)
            let handled = panic::catch_unwind(AssertUnwindSafe(|| self.apply(command, counters)));
            if handled.is_err() {
                log::error!("the hub caught a panic while handling a command; it keeps serving");
            }
        }
    }

    fn apply(&mut self, command: Command, counters: &Counters) {
        match command {
            Command::Join {
                id,
                room: Some(name),
                subscriber,
                resume,
            } => {
                self.join(name, id, subscriber, &resume, counters);
            }
            Command::Join {
                id,
                room: None,
                subscriber,
                ..
            } => {
                self.loners.insert(id, subscriber);
            }
            command @ Command::Leave { .. } => self.apply_leave(command, counters),
            Command::Publish {
                room,
                message,
                cid,
                from,
                reply,
                charge,
            } => {
                let outbound = Outbound {
                    room,
                    message,
                    cid,
                    from,
                    reply,
                    ts: room::now_millis(),
                    late: false,
                    charge: Some(charge),
                };
                match &self.link {
                    Some(link) => forward(link, outbound),
                    None => self.publish_here(outbound, counters),
                }
            }
            Command::PublishHere(outbound) => self.publish_here(*outbound, counters),
            Command::Stored(outbound, mut outcome) => {
                let Outbound {
                    room,
                    from,
                    cid,
                    reply,
                    ..
                } = *outbound;
                if let Some(room) = self.rooms.get(&room) {
                    acknowledge(room, from, cid, outcome.id, outcome.duplicate, counters);
                    if !outcome.duplicate {
                        outcome.delivered = room.members.len();
                    }
                }
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
            }
            Command::Remote(arrival) => self.arrive(*arrival, counters),
            Command::Loaded {
                room,
                epoch,
                messages,
            } => self.loaded(room, epoch, messages, counters),
            Command::LinkUp => self.link_up(counters),
            Command::LinkDown => self.link_down(counters),
            Command::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            Command::Reclaim => {
                self.budget.reclaimed();
                self.relieve(counters);
            }
            Command::Shutdown(_) => {}
        }
    }

    /// Frees memory when the budget runs high, in the documented order: first the
    /// members that are far behind (more than 1/[`BEHIND_FRACTION`] of their queue's
    /// bytes) are closed as slow consumers — what is queued to them is freed, and they
    /// resume from history — then the oldest messages across every room's history are
    /// trimmed until the budget is back at its low-water mark (a client that resumes
    /// from before a trimmed message is told of the gap). If that is not enough, the
    /// memory is in bytes being read and in queues of members that keep up: new work
    /// is refused (503, 1013) until it is freed.
    fn relieve(&mut self, counters: &Counters) {
        if !self.budget.is_high() {
            return;
        }
        let mut shrunk = Vec::new();
        for (name, room) in &mut self.rooms {
            let before = room.members.len();
            room.members.retain(|id, member| {
                let behind = member.backlog.bytes() > member.backlog.limit() / BEHIND_FRACTION;
                if behind {
                    slow_consumer(*id, member, counters, "memory budget running short");
                }
                !behind
            });
            if room.members.len() != before {
                shrunk.push(name.clone());
            }
        }
        for name in shrunk {
            self.announce_members(&name, counters);
        }
        let mut trimmed = 0u64;
        while self.budget.excess() > 0 {
            let oldest = self
                .rooms
                .values_mut()
                .filter_map(|room| room.history.oldest_accepted().map(|at| (at, room)))
                .min_by_key(|(at, _)| *at);
            let Some((_, room)) = oldest else { break };
            room.history.drop_oldest();
            trimmed += 1;
        }
        if trimmed > 0 {
            counters
                .history_trimmed
                .fetch_add(trimmed, Ordering::Relaxed);
            // A room whose whole history went keeps its epoch and its ids (a few bytes;
            // the idle-room limit still bounds them), so a client resuming there is
            // told of the gap instead of finding a new room.
            log::warn!(
                "memory budget running high: trimmed the {trimmed} oldest messages from room histories"
            );
        }
    }

    /// After asking everyone to close: keep answering `Leave`s (their senders wait for
    /// the answer) until every connection has left or `deadline` passes. A
    /// connection that joins now is asked to close too (no room has queued it
    /// anything, so at once). Nothing is queued to anyone any more: a member's queue
    /// only empties, so its writer can tell when it has sent everything it was owed.
    fn drain(&mut self, commands: &Receiver<Command>, counters: &Counters, deadline: Instant) {
        while !self.loners.is_empty() || self.rooms.values().any(|r| !r.members.is_empty()) {
            match commands.recv_deadline(deadline) {
                Ok(Command::Join { id, subscriber, .. }) => {
                    subscriber.request_close_after_queue(GOING_AWAY_CODE, deadline);
                    self.loners.insert(id, subscriber);
                }
                Ok(command @ Command::Leave { .. }) => self.apply_leave(command, counters),
                Ok(Command::Stats(reply)) => {
                    let _ = reply.send(self.stats());
                }
                Ok(_) => {} // publishes are refused: their reply channel closes
                Err(_) => break,
            }
        }
        // Answer whatever is still queued, so no connection waits on a closed hub.
        for command in commands.try_iter() {
            self.apply_leave(command, counters);
        }
    }

    fn apply_leave(&mut self, command: Command, counters: &Counters) {
        if let Command::Leave { id, room, done } = command {
            match room {
                Some(name) => self.leave(&name, id, counters),
                None => {
                    self.loners.remove(&id);
                }
            }
            if let Some(done) = done {
                let _ = done.send(());
            }
        }
    }

    fn room(&mut self, name: String) -> &mut Room {
        let clock = self.clock;
        let limits = self.limits;
        let room = self.rooms.entry(name).or_insert_with(|| Room {
            members: HashMap::new(),
            history: History::new(limits),
            last_used: clock,
            sharing: Sharing::Alone,
            served: None,
        });
        room.last_used = clock;
        room
    }

    /// Adds the member and queues its catch-up in the same step, so the replay and the
    /// live stream meet with no gap and no duplicate.
    fn join(
        &mut self,
        name: String,
        id: ConnId,
        subscriber: Subscriber,
        resume: &Resume,
        counters: &Counters,
    ) {
        let link_up = self.link_up;
        let room = self.room(name.clone());
        // A shared room's history comes from the link: the join waits for it.
        let waiting = WaitingJoin {
            id,
            subscriber,
            resume: resume.clone(),
        };
        match &mut room.sharing {
            Sharing::Alone if link_up => {
                room.sharing = Sharing::Loading {
                    early: Vec::new(),
                    waiting: vec![waiting],
                };
                self.request_load(name, counters);
            }
            Sharing::Loading { waiting: w, .. } => w.push(waiting),
            _ => self.join_now(name, waiting, counters),
        }
    }

    fn join_now(&mut self, name: String, join: WaitingJoin, counters: &Counters) {
        let WaitingJoin {
            id,
            subscriber,
            resume,
        } = join;
        let room = self.room(name.clone());
        room.members.insert(id, subscriber.clone());
        if !subscriber.raw {
            let plan = room.history.catch_up(&resume, room.members.len());
            if !offer(
                id,
                &subscriber,
                Outgoing::Joined(Box::new(Joined {
                    room: name.clone(),
                    plan,
                })),
                counters,
            ) {
                room.members.remove(&id);
            }
        }
        self.announce_members(&name, counters);
    }

    fn leave(&mut self, name: &str, id: ConnId, counters: &Counters) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        if let Sharing::Loading { waiting, .. } = &mut room.sharing {
            waiting.retain(|w| w.id != id);
        }
        if room.members.remove(&id).is_some() {
            self.announce_members(name, counters);
        }
        self.tidy(name);
    }

    /// Publishes into this instance's own sequence (no link, or the link is down).
    fn publish_here(&mut self, outbound: Outbound, counters: &Counters) {
        let Outbound {
            room,
            message,
            cid,
            from,
            reply,
            charge,
            ..
        } = outbound;
        let charge = charge.unwrap_or_else(|| self.budget.force(Category::Messages, 0));
        let published = self.publish(room, (message, charge), cid, from, counters);
        if let Some(reply) = reply {
            let _ = reply.send(published);
        }
    }

    /// Keeps the message in history and offers it to every member without ever
    /// blocking. Members that cannot take it are dropped as slow consumers.
    fn publish(
        &mut self,
        name: String,
        (message, charge): (Message, Reservation),
        cid: Option<String>,
        from: Option<ConnId>,
        counters: &Counters,
    ) -> Published {
        let room = self.room(name.clone());
        let epoch = room.history.epoch();
        let message = match room.history.append(message, cid.clone()) {
            Ok(message) => {
                message.charge(charge);
                message
            }
            Err(Duplicate { id }) => {
                acknowledge(room, from, cid, id, true, counters);
                return Published {
                    delivered: 0,
                    id,
                    epoch,
                    duplicate: true,
                };
            }
        };
        let dropped = room.broadcast(&message, counters);
        let delivered = room.members.len();
        acknowledge(room, from, cid, message.id, false, counters);
        if dropped {
            self.announce_members(&name, counters);
        }
        self.tidy(&name);
        self.relieve(counters);
        Published {
            delivered,
            id: message.id,
            epoch,
            duplicate: false,
        }
    }

    /// Tells enveloped members the room's new size (small rooms only).
    fn announce_members(&mut self, name: &str, counters: &Counters) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let count = room.members.len();
        if count == 0 || count > PRESENCE_MAX_MEMBERS {
            return;
        }
        room.members.retain(|id, member| {
            member.raw
                || offer(
                    *id,
                    member,
                    Outgoing::Notice(Box::new(Notice::Members(count))),
                    counters,
                )
        });
    }

    /// Drops a room nobody needs, and the least recently used idle room when there
    /// are too many of them.
    fn tidy(&mut self, name: &str) {
        if self
            .rooms
            .get(name)
            .is_some_and(|r| r.is_idle() && r.history.is_empty() && !r.is_loading())
        {
            self.rooms.remove(name);
        }
        // Counting idle rooms is a scan, so only when there could be too many.
        if self.rooms.len() > MAX_IDLE_ROOMS
            && self.rooms.values().filter(|r| r.is_idle()).count() > MAX_IDLE_ROOMS
        {
            let oldest = self
                .rooms
                .iter()
                .filter(|(_, r)| r.is_idle())
                .min_by_key(|(_, r)| r.last_used)
                .map(|(n, _)| n.clone());
            if let Some(oldest) = oldest {
                log::debug!(
                    "dropping idle room '{oldest}' and its history ({MAX_IDLE_ROOMS} idle rooms kept)"
                );
                self.rooms.remove(&oldest);
            }
        }
    }

    /// Shutdown's first step: asks every member and every connection in no room to
    /// close with 1001 once it has sent what is queued to it (each queued message was
    /// accepted and acknowledged to its publisher), giving up on the rest at
    /// `deadline`. Room members are asked first, then the connections in no room.
    fn close_everyone(&mut self, deadline: Instant) {
        // Joins still waiting for their room's history become members, so that their
        // `Leave` finds them while the hub drains.
        for room in self.rooms.values_mut() {
            if let Sharing::Loading { waiting, .. } = std::mem::take(&mut room.sharing) {
                for w in waiting {
                    room.members.insert(w.id, w.subscriber);
                }
            }
        }
        let everyone = self
            .rooms
            .values()
            .flat_map(|r| r.members.values())
            .chain(self.loners.values());
        for member in everyone {
            member.request_close_after_queue(GOING_AWAY_CODE, deadline);
        }
    }

    fn stats(&self) -> Vec<RoomStats> {
        let mut stats: Vec<_> = self
            .rooms
            .iter()
            .map(|(name, room)| RoomStats {
                name: name.clone(),
                members: room.members.len(),
                history_messages: room.history.len(),
                history_bytes: room.history.bytes(),
            })
            .collect();
        stats.sort_by(|a, b| a.name.cmp(&b.name));
        stats
    }
}

/// Tells the publisher, when it is an enveloped member of the room and named its
/// message (`cid`), which id the message got and whether it was a repeat.
fn acknowledge(
    room: &Room,
    from: Option<ConnId>,
    cid: Option<String>,
    id: u64,
    duplicate: bool,
    counters: &Counters,
) {
    let (Some(from), Some(cid)) = (from, cid) else {
        return;
    };
    if let Some(member) = room.members.get(&from).filter(|m| !m.raw) {
        let ack = Notice::Ack { cid, id, duplicate };
        offer(from, member, Outgoing::Notice(Box::new(ack)), counters);
    }
}

/// Offers one item to a member without blocking. A queue full in items or in bytes
/// makes it a slow consumer: it is asked to close with 1008. Returns whether the
/// member stays.
fn offer(id: ConnId, member: &Subscriber, item: Outgoing, counters: &Counters) -> bool {
    let bytes = item.bytes();
    if !member.backlog.add(bytes) {
        slow_consumer(id, member, counters, "send queue bytes full");
        return false;
    }
    match member.tx.try_send(item) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            member.backlog.remove(bytes);
            slow_consumer(id, member, counters, "send queue full");
            false
        }
        // Its writer has ended; its reader's Leave is on its way.
        Err(TrySendError::Disconnected(_)) => {
            member.backlog.remove(bytes);
            false
        }
    }
}

/// Closes a member that fell too far behind with 1008, dropping what is queued to it.
fn slow_consumer(id: ConnId, member: &Subscriber, counters: &Counters, why: &str) {
    log::warn!("connection {id} is a slow consumer ({why}); closing it with 1008");
    counters.slow_consumers.fetch_add(1, Ordering::Relaxed);
    member.request_close(SLOW_CONSUMER_CODE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_close_request_wins() {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let slow = CloseSignal::default();
        assert_eq!(slow.queued(), None);
        slow.request(SLOW_CONSUMER_CODE);
        slow.request_after_queue(GOING_AWAY_CODE, deadline);
        assert_eq!(slow.queued(), Some(Queued::Drop));
        assert_eq!(
            slow.requested(),
            Some((CloseCode::Policy, SLOW_CONSUMER_REASON))
        );

        let stopping = CloseSignal::default();
        stopping.request_after_queue(GOING_AWAY_CODE, deadline);
        stopping.request(SLOW_CONSUMER_CODE);
        assert_eq!(stopping.queued(), Some(Queued::SendBy(deadline)));
        assert_eq!(
            stopping.requested(),
            Some((CloseCode::Away, GOING_AWAY_REASON))
        );
    }

    #[test]
    fn a_budget_running_high_closes_far_behind_members_then_trims_the_oldest_history() {
        let budget = Budget::new(10_000);
        let limits = HistoryLimits {
            messages: 100,
            bytes: 1 << 20,
        };
        let mut hub = Hub::new(limits, None, Arc::clone(&budget));
        let counters = Counters::default();
        // A member that never reads, allowed 8000 bytes: far behind past 4000.
        let (behind, _never_read) = Subscriber::new(100, 8_000, true, &counters);
        hub.join("busy".into(), 1, behind.clone(), &Resume::Live, &counters);
        let publish = |hub: &mut Hub, room: &str, n: usize| {
            let charge = budget.try_reserve(Category::Messages, n).unwrap();
            let message = (Message::binary(vec![0; n]), charge);
            hub.publish(room.into(), message, None, None, &counters);
        };
        publish(&mut hub, "old", 4_000);
        publish(&mut hub, "busy", 2_000);
        assert_eq!(behind.close.queued(), None, "below the high-water mark");
        publish(&mut hub, "busy", 3_000); // over 7/8 of the budget

        assert_eq!(behind.close.queued(), Some(Queued::Drop), "closed first");
        assert_eq!(behind.backlog.bytes(), 0, "its queue dropped at once");
        assert!(hub.rooms["busy"].members.is_empty());
        // Its messages are still in history: the oldest message of all rooms went.
        assert_eq!(hub.rooms["old"].history.len(), 0);
        assert_eq!(hub.rooms["busy"].history.len(), 2);
        assert_eq!(counters.history_trimmed.load(Ordering::Relaxed), 1);
        assert!(budget.used() <= 7_500, "back at the low-water mark");
    }

    #[test]
    fn shutdown_asks_every_member_to_close_after_its_queue() {
        let limits = HistoryLimits {
            messages: 16,
            bytes: 1 << 20,
        };
        let budget = Budget::new(64 << 20);
        let mut hub = Hub::new(limits, None, Arc::clone(&budget));
        let counters = Counters::default();
        let (member, queue) = Subscriber::new(4, 1 << 20, true, &counters);
        hub.join("r".into(), 1, member.clone(), &Resume::Live, &counters);
        let (loner, _loner_queue) = Subscriber::new(4, 1 << 20, true, &counters);
        hub.loners.insert(2, loner.clone());
        let owed = (Message::text("owed"), budget.force(Category::Messages, 4));
        hub.publish("r".into(), owed, None, None, &counters);

        let deadline = Instant::now() + DRAIN_TIMEOUT;
        hub.close_everyone(deadline);
        for signal in [&member.close, &loner.close] {
            assert_eq!(signal.queued(), Some(Queued::SendBy(deadline)));
        }
        // The message stays queued ahead of the wake-up: it is still to be sent.
        assert!(matches!(queue.try_recv(), Ok(Outgoing::Room(_))));
        assert!(matches!(queue.try_recv(), Ok(Outgoing::Wake)));
    }
}
