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
//! thread its own [`WebSocketContext`] over the same `Arc<Stream>` (a `TcpStream`, or
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
use std::thread;
use std::time::Duration;

use crossbeam_channel::Sender;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};

use super::close::{finish, linger};
use super::reader::{InputLimits, READ_BUFFER_BYTES, ReadHalf, authenticate, read_loop};
use super::writer::{Inbox, WRITE_BUFFER_BYTES, WriteHalf, write_loop};
use crate::budget::{Budget, Category};
use crate::hub::{Command, ConnId, Counters, HUB_REPLY_TIMEOUT, Outgoing, Subscriber};
use crate::limit::{RateLimit, Slot, THREAD_STACK_BYTES, WRITE_TIMEOUT};
use crate::room::Resume;
use crate::security::AccessPolicy;
use crate::stream::Stream;
use crate::ws::edges::FrameEdges;

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

/// Runs a connection whose handshake is complete: the calling thread becomes the
/// reader, a new thread becomes the writer. Returns when both have finished, with
/// the code of the close frame the writer sent (`None`: the peer vanished first).
/// `leftover` holds bytes the client sent right after its handshake request.
pub fn serve(
    id: ConnId,
    stream: Stream,
    leftover: Vec<u8>,
    destination: Destination,
    hub: Sender<Command>,
    counters: Arc<Counters>,
    mut settings: Settings,
) -> Option<u16> {
    let stream = Arc::new(stream);
    let ws_config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_message_size(Some(settings.max_message_bytes))
        .max_frame_size(Some(settings.max_message_bytes));

    // Socket timeouts do the timing, so no extra timer thread is needed: a read that
    // sees nothing for `pong_timeout` fails, and so does a write stuck for WRITE_TIMEOUT.
    if let Err(e) = stream
        .set_read_timeout(Some(settings.pong_timeout))
        .and_then(|()| stream.set_write_timeout(Some(WRITE_TIMEOUT)))
    {
        log::debug!("connection {id}: cannot set socket timeouts: {e}");
        return None;
    }

    let (room, raw, resume) = match &destination {
        Destination::Room { name, raw, resume } => (Some(name.clone()), *raw, resume.clone()),
        Destination::Echo => (None, true, Resume::Live),
    };
    let (subscriber, rx) = Subscriber::new(
        settings.send_queue,
        settings.send_queue_bytes,
        raw,
        &counters,
    );
    let backlog = Arc::clone(&subscriber.backlog);
    let tx = subscriber.tx.clone();
    let close = Arc::clone(&subscriber.close);

    let writer = {
        let out = WriteHalf::new(Arc::clone(&stream), Arc::clone(&close));
        // The writer never reads: its context needs no read buffer.
        let ctx = WebSocketContext::new(Role::Server, Some(ws_config.read_buffer_size(0)));
        let counters = Arc::clone(&counters);
        let ping_interval = settings.ping_interval;
        thread::Builder::new()
            .name(format!("ws-write-{id}"))
            .stack_size(THREAD_STACK_BYTES)
            .spawn(move || {
                let inbox = Inbox { queue: rx, close };
                write_loop(id, ctx, out, &inbox, &counters, ping_interval, raw)
            })
    };
    let writer = match writer {
        Ok(handle) => handle,
        Err(e) => {
            log::warn!("connection {id}: cannot start a writer thread ({e}); dropping it");
            return None;
        }
    };

    let mut input = ReadHalf {
        stream: Arc::clone(&stream),
        reading: settings.budget.force(Category::Reading, 0),
        short: false,
        edges: FrameEdges::default(),
        config: ws_config,
    };
    input.edges.saw(&leftover); // bytes the client sent right behind its handshake
    let mut ctx = WebSocketContext::from_partially_read(leftover, Role::Server, Some(ws_config));
    let admitted = match &settings.first_message_auth {
        Some(policy) => {
            // While it waits for its token the connection is known to the hub as a
            // loner (in no room), so that a shutdown closes it with 1001 too.
            let waiting = Command::Join {
                id,
                room: None,
                subscriber: subscriber.clone(),
                resume: Resume::Live,
            };
            let timeouts = (settings.handshake_timeout, settings.pong_timeout);
            hub.send(waiting).is_ok() && {
                let ok = authenticate(id, &mut ctx, &mut input, policy, &tx, timeouts);
                let _ = hub.send(Command::Leave {
                    id,
                    room: None,
                    done: None,
                });
                ok
            }
        }
        None => true,
    };
    drop(settings.unauthenticated.take()); // authenticated (or leaving): not waiting any more
    let join = Command::Join {
        id,
        room: room.clone(),
        subscriber,
        resume,
    };
    // A client refused at authentication never joins: dropping its `Join` (and with
    // it the writer's queue sender) ends the writer at once, freeing the slot.
    let join = admitted.then_some(join);
    if join.is_some_and(|join| hub.send(join).is_ok()) {
        // Should this thread panic, the guard still takes the connection out of its
        // room; the writer then ends when its queue has no senders left.
        let _leave_on_panic = LeaveOnPanic {
            id,
            room: room.clone(),
            hub: &hub,
        };
        let limits = InputLimits {
            rate: RateLimit::per_second(settings.max_messages_per_second),
            counters: &counters,
            backlog: &backlog,
        };
        let end = read_loop(id, &mut ctx, &mut input, &destination, &tx, &hub, limits);
        // Leave the room and wait until the hub confirms. Every message published
        // before that moment is then already in our writer's queue, so the close frame
        // we queue next cannot overtake a message the peer is owed.
        let (left_tx, left_rx) = crossbeam_channel::bounded(1);
        let leave = Command::Leave {
            id,
            room,
            done: Some(left_tx),
        };
        if hub.send(leave).is_ok() {
            let _ = left_rx.recv_timeout(HUB_REPLY_TIMEOUT);
        }
        finish(id, end, &tx, &mut ctx, &mut input);
    } else if admitted {
        // The hub is gone: the server is stopping, and this client's handshake finished
        // just as it began. It is told so like everyone else (1001), and its close
        // reply is read so the kernel does not reset our close frame away.
        let away = CloseFrame {
            code: CloseCode::Away,
            reason: "server shutting down".into(),
        };
        if tx.send(Outgoing::Close(Box::new(Some(away)))).is_ok() {
            linger(&mut ctx, &mut input);
        }
    }
    drop(tx);
    writer.join().ok().flatten()
}

/// Sends `Leave` for a reader thread that is unwinding from a panic.
struct LeaveOnPanic<'a> {
    id: ConnId,
    room: Option<String>,
    hub: &'a Sender<Command>,
}

impl Drop for LeaveOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            let room = self.room.take();
            let _ = self.hub.send(Command::Leave {
                id: self.id,
                room,
                done: None,
            });
        }
    }
}
