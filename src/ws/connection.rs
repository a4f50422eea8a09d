//! One WebSocket connection: a **reader** thread and a **writer** thread sharing one
//! socket, with a rule that makes the split safe: *only the writer ever writes*.
//!
//! ```text
//!            ┌─ reader ─────────────────────┐   Publish    ┌─ hub ─┐
//! socket ──▶ │ text/binary → room or echo   │ ───────────▶ │       │
//!            │ ping        → Outgoing::Pong │              └───┬───┘
//!            │ close       → Outgoing::Close│                  │ Outgoing::Room  
//!            └──────────────┬───────────────┘                  ▼
//!                           └──────────▶ bounded queue ──▶ ┌─ writer ───────────────┐
//!                                                          │ write frames, flush    │ ──▶ socket
//!                                                          │ ping every interval    │
//!                                                          └────────────────────────┘
//! ```
//!
//! Why bother? A WebSocket peer must answer every ping with a pong and every close
//! with a close, and a reader is the first to see them. If the reader wrote those
//! replies itself while the writer was halfway through a large message, the two
//! frames' bytes would interleave on the wire and corrupt the stream. tungstenite's
//! `read()` does exactly that (it writes replies from inside `read`), so we give each
//! thread its own [`WebSocketContext`] over the same `Arc<Socket>` (a `TcpStream`, or
//! TLS over one with `--features tls`): the reader's
//! context writes into a sink, and the reader instead *queues* each reply for the
//! writer, which sends it between whole frames.
//!
//! The two halves have files of their own: `reader.rs` (frames in, replies queued,
//! bytes charged to the memory budget) and `writer.rs` (the only code that writes to
//! the socket); `close.rs` ends a connection. This file starts them and waits for them.
//!
//! The server closes a connection from outside in one of two ways ([`Queued`](crate::hub::Queued)): a
//! slow consumer is closed at once, its queue dropped; at shutdown the writer first
//! sends what is queued (each message was already accepted and acknowledged to its
//! publisher), then its close 1001 — all within the server's drain deadline.

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;
use tungstenite::protocol::{Role, WebSocketConfig, WebSocketContext};

use super::close::{AwaitedWord, close_with, finish, last_word};
use super::inbox::Inbox;
use super::read_half::{READ_BUFFER_BYTES, ReadHalf};
use super::reader::{InputLimits, Routes, authenticate, read_loop};
use super::settings::{Destination, Settings};
use super::write_half::WriteHalf;
use super::writer::{WRITE_BUFFER_BYTES, write_loop};
use crate::hub::{self, Backlog, ConnId, Counters, Member, Outgoing};
use crate::net::limit::WRITE_TIMEOUT;
use crate::net::rate::RateLimit;
use crate::net::socket::Socket;
use crate::net::spare_threads::{self, Kind};
use crate::protocol::close::CloseReason;
use crate::protocol::rights::{Action, Caller, NOT_ALLOWED_HERE};
use crate::room::Resume;

/// Runs a connection whose handshake is complete: the calling thread becomes the
/// reader, a new thread becomes the writer. Returns when both have finished, with
/// the code of the close frame the writer sent (`None`: the peer vanished first).
/// `leftover` holds bytes the client sent right after its handshake request.
pub fn serve(
    id: ConnId,
    socket: Socket,
    leftover: Vec<u8>,
    destination: Destination,
    hub: hub::Handle,
    counters: Arc<Counters>,
    mut settings: Settings,
) -> Option<u16> {
    let socket = Arc::new(socket);
    set_timeouts(id, &socket, &settings)?;
    let config = socket_config(&settings);
    let raw = !matches!(destination, Destination::Room { raw: false, .. });
    let (member, writer) = start_writer(id, &socket, &counters, config, &settings, raw)?;

    let mut input = ReadHalf::new(&socket, &settings.budget, config, &leftover)
        .watched(settings.watch.as_ref());
    let mut ctx = WebSocketContext::from_partially_read(leftover, Role::Server, Some(config));
    let tx = member.tx.clone();
    let admitted = admit(id, &mut ctx, &mut input, &member, &hub, &settings);
    drop(settings.unauthenticated.take()); // authenticated (or leaving): not waiting any more
    // A client refused at authentication never joins: dropping its `member` (and
    // with it the writer's queue sender) ends the writer at once, freeing the slot.
    if let Some(caller) = &admitted {
        let (to_writer, counters) = (&tx, &counters);
        let connection = Reader {
            id,
            hub: &hub,
            to_writer,
            counters,
            caller,
        };
        connection.join_and_read(member, &destination, &settings, (&mut ctx, &mut input));
    } else {
        drop(member);
    }
    drop(tx);
    // The writer reports its close code as its last act (nothing if it panicked).
    writer.wait()
}

/// Socket timeouts do the timing, so no extra timer thread is needed: a read that
/// sees nothing for `pong_timeout` fails, and so does a write stuck for WRITE_TIMEOUT.
fn set_timeouts(id: ConnId, socket: &Socket, settings: &Settings) -> Option<()> {
    let set = socket
        .set_read_timeout(Some(settings.pong_timeout))
        .and_then(|()| socket.set_write_timeout(Some(WRITE_TIMEOUT)));
    if let Err(e) = set {
        log::debug!("connection {id}: cannot set socket timeouts: {e}");
        return None;
    }
    Some(())
}

/// tungstenite's settings for both halves: our buffer sizes and message limit.
fn socket_config(settings: &Settings) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(Some(settings.max_message_bytes))
        .max_frame_size(Some(settings.max_message_bytes))
}

/// The writer's WebSocket context. It never reads, so it needs no read buffer. It
/// lives on the heap, not in the thread's closure and `write_loop`'s frame: a writer
/// waiting for work then touches two pages of its stack, not three (4 KiB less per
/// idle connection, measured: see bench/ANALYSIS.md).
fn writer_context(config: WebSocketConfig) -> Box<WebSocketContext> {
    Box::new(WebSocketContext::new(
        Role::Server,
        Some(config.read_buffer_size(0)),
    ))
}

/// Starts the writer thread, the only one that will write to `socket`; returns the
/// hub's handle on the connection (its queue to that writer) and where the writer
/// reports its close code when it ends.
fn start_writer(
    id: ConnId,
    socket: &Arc<Socket>,
    counters: &Arc<Counters>,
    config: WebSocketConfig,
    settings: &Settings,
    raw: bool,
) -> Option<(Member, AwaitedWord)> {
    let (send_queue, send_bytes) = (settings.send_queue, settings.send_queue_bytes);
    // This thread becomes the reader: its id, for the inspector and /stats.
    settings
        .watch
        .iter()
        .for_each(|w| w.figures.on_reader_thread());
    let (member, queue) = Member::new(send_queue, send_bytes, raw, counters);
    let inbox = Inbox::new(queue, &member.close);
    let out = WriteHalf::new(
        Arc::clone(socket),
        Arc::clone(&inbox.close),
        settings.watch.as_ref(),
    );
    let ctx = writer_context(config);
    let counters = Arc::clone(counters);
    let ping_interval = settings.ping_interval;
    let (mut last_word, awaited) = last_word();
    let started = spare_threads::run(Kind::Writer, format!("ws-write-{id}"), move || {
        last_word.code = write_loop(id, ctx, out, &inbox, &counters, ping_interval, raw);
        drop((inbox, counters)); // all the writer holds is let go before it reports
        drop(last_word);
    });
    match started {
        Ok(()) => Some((member, awaited)),
        Err(e) => {
            log::warn!("connection {id}: cannot start a writer thread ({e}); dropping it");
            None
        }
    }
}

/// Under `--auth first-message`, waits for the token (a loner in the hub meanwhile, so
/// that a shutdown closes it with 1001 too). Who the client is, when it may go on.
fn admit(
    id: ConnId,
    ctx: &mut WebSocketContext,
    input: &mut ReadHalf,
    member: &Member,
    hub: &hub::Handle,
    settings: &Settings,
) -> Option<Caller> {
    let Some(policy) = &settings.first_message_auth else {
        return settings.caller.clone();
    };
    let Some(waiting) = hub.join(id, None, member.clone(), Resume::Live) else {
        // The server is stopping: this client is told so like everyone else.
        going_away(&member.tx, ctx, input);
        return None;
    };
    let timeouts = (settings.handshake_timeout, settings.pong_timeout);
    let admitted = authenticate(id, ctx, input, policy, &member.tx, timeouts);
    drop(waiting); // out of the hub's loners: joining for real comes next
    admitted
}

/// The reader's side of one connection: who it is and where it sends things.
struct Reader<'a> {
    id: ConnId,
    hub: &'a hub::Handle,
    to_writer: &'a Sender<Outgoing>,
    counters: &'a Counters,
    /// Who the client is: what it may join and publish to.
    caller: &'a Caller,
}

impl Reader<'_> {
    /// Joins the room (or the hub's loners, for echo), reads until the connection
    /// ends, leaves, and tells the writer how it ends.
    fn join_and_read(
        &self,
        member: Member,
        destination: &Destination,
        settings: &Settings,
        (ctx, input): (&mut WebSocketContext, &mut ReadHalf),
    ) {
        let (room, resume) = match destination {
            Destination::Room { name, resume, .. } => (Some(name.clone()), resume.clone()),
            Destination::Echo => (None, Resume::Live),
        };
        // Under --auth first-message the room's rights are known only now.
        if room
            .as_ref()
            .is_some_and(|r| !self.caller.may(r, Action::Join))
        {
            let refused = CloseReason::Unauthorized(NOT_ALLOWED_HERE);
            return close_with(refused, self.to_writer, ctx, input);
        }
        let member = self.identified(member);
        let backlog = Arc::clone(&member.backlog);
        // The membership leaves the room when dropped, so should this thread panic
        // the connection still leaves; the writer then ends when its queue has no
        // senders left.
        let Some(membership) = self.hub.join(self.id, room, member, resume) else {
            return going_away(self.to_writer, ctx, input);
        };
        let end = read_loop(
            ctx,
            input,
            &mut self.routes(destination, settings, &backlog),
        );
        // Every message published before we left is in the writer's queue by now, so
        // the close frame queued next cannot overtake one the peer is owed.
        membership.leave_and_wait();
        finish(self.id, end, self.to_writer, ctx, input);
    }

    /// `member` with the client's identity: its name, if it has one, counts in the
    /// room's presence, and a signed token's connection closes when the token expires
    /// (its writer is woken to start watching the clock).
    fn identified(&self, mut member: Member) -> Member {
        member.person = self.caller.person();
        if let Some(valid) = self.caller.valid_for() {
            member.close.expire_at(Instant::now() + valid);
            let _ = self.to_writer.try_send(Outgoing::Wake);
        }
        member
    }

    /// Where what this connection reads goes, and what bounds it.
    fn routes<'a>(
        &'a self,
        destination: &'a Destination,
        settings: &Settings,
        backlog: &'a Backlog,
    ) -> Routes<'a> {
        let may_publish = match destination {
            Destination::Room { name, .. } => self.caller.may(name, Action::Publish),
            Destination::Echo => true,
        };
        Routes {
            id: self.id,
            destination,
            may_publish,
            sender: self.caller.person(),
            to_writer: self.to_writer,
            hub: self.hub,
            limits: InputLimits {
                rate: RateLimit::per_second(settings.max_messages_per_second),
                counters: self.counters,
                backlog,
            },
        }
    }
}

/// The hub is gone: the server is stopping, and this client's handshake finished just
/// as it began. It is told so like everyone else (1001), and its close reply is read
/// so the kernel does not reset our close frame away.
fn going_away(to_writer: &Sender<Outgoing>, ctx: &mut WebSocketContext, input: &mut ReadHalf) {
    close_with(CloseReason::GoingAway, to_writer, ctx, input);
}
