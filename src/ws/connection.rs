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
//! The server closes a connection from outside in one of two ways ([`Queued`]): a
//! slow consumer is closed at once, its queue dropped; at shutdown the writer first
//! sends what is queued (each message was already accepted and acknowledged to its
//! publisher), then its close 1001 — all within the server's drain deadline.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, Sender, TryRecvError};
use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{CloseCode, Data as OpData, OpCode};
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Bytes, Message};

use crate::budget::{Budget, Category, RECLAIM_WAIT, Reservation};
use crate::hub::{
    CloseSignal, Command, ConnId, Counters, Echo, HUB_REPLY_TIMEOUT, Outgoing, QueueEnd, Queued,
    SLOW_CONSUMER_REASON, Subscriber,
};
use crate::limit::{RateLimit, Slot, THREAD_STACK_BYTES, WRITE_TIMEOUT};
use crate::protocol::envelope;
use crate::room::MESSAGE_OVERHEAD_BYTES;
use crate::room::Resume;
use crate::security::AccessPolicy;
use crate::stream::Stream;
use crate::ws::edges::FrameEdges;

/// Bytes read from the socket per `read` call. tungstenite's 128 KiB default is
/// allocated up front for every connection; 2 KiB keeps an idle connection under
/// 32 KiB of memory in all (see BENCHMARKS.md). A large frame still gets a buffer of
/// its own size, so big messages cost more system calls, not more copies.
pub const READ_BUFFER_BYTES: usize = 2 * 1024;
/// The writer collects frames up to this size before a `write` system call; a
/// `flush` after each batch sends whatever is left.
pub const WRITE_BUFFER_BYTES: usize = 16 * 1024;
/// Messages longer than this go out in fragments of this size (RFC 6455 §5.4).
/// tungstenite copies each frame it sends into the connection's write buffer, which
/// keeps its largest size for good: one 1 MiB frame would leave every connection that
/// was sent one holding 1 MiB. In fragments, the buffer stays near this size. (16 KiB
/// fragments cost a tenth of the 64 KiB echo benchmark in system calls.)
pub const FRAGMENT_BYTES: usize = 32 * 1024;
/// Close code for a publisher whose message the memory budget cannot take even after
/// the hub has freed what it can (RFC 6455's registry: 1013, try again later).
pub const BUDGET_CLOSE_REASON: &str = "server memory budget exhausted; try again later";
/// On plain TCP a write blocked on a peer that does not read waits in system calls of
/// at most this long, and looks between them whether a shutdown has brought its
/// deadline forward: a writer stuck when the shutdown starts still gives up in time.
/// (Only a stuck write wakes this way, so an idle connection costs nothing.)
const WRITE_SLICE: Duration = Duration::from_millis(500);
/// At shutdown the writer sends what is queued until this long before the server's
/// drain deadline, and drops whatever is still left then. The rest of the time is the
/// close handshake's.
const QUEUE_RESERVE: Duration = Duration::from_millis(500);
/// At shutdown the writer's close frame must be written by this long before the drain
/// deadline. What is left is for the peer to answer it and for the reader to leave
/// the hub, so that the connection has ended when the server stops waiting.
const CLOSE_FRAME_RESERVE: Duration = Duration::from_millis(250);
/// Even past its deadline, the close frame gets one try this long (one system call
/// that hardly waits): it is small, and a peer with room for it learns why the
/// connection ends. A writer the CPU reached late still says goodbye.
const CLOSE_FRAME_LAST_TRY: Duration = Duration::from_millis(1);
/// After we fail a connection we keep reading (and discarding) this long, so the
/// peer can read our close frame before the socket closes. Closing a socket with
/// unread input makes the kernel send a reset, which can destroy the close frame.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Most queued items the writer handles before it flushes and checks its clock.
const MAX_BATCH: usize = 64;
/// Close reasons must fit in a control frame (125 bytes minus the 2-byte code).
const MAX_CLOSE_REASON: usize = 123;

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

/// Authentication by first message (`--auth first-message`): the token travels as the
/// connection's first text message instead of in the URL, where proxies would log it.
/// Until it arrives the client joins nothing and receives nothing; a wrong token, any
/// other message, or none within the handshake deadline closes with 1008.
fn authenticate(
    id: ConnId,
    ctx: &mut WebSocketContext,
    input: &mut ReadHalf,
    policy: &AccessPolicy,
    to_writer: &Sender<Outgoing>,
    timeouts: (Duration, Duration),
) -> bool {
    let (auth_timeout, pong_timeout) = timeouts;
    let deadline = Instant::now() + auth_timeout;
    let refusal = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || input.stream.set_read_timeout(Some(left)).is_err() {
            break "no token within the authentication deadline";
        }
        let read = ctx.read(input);
        input.message_done();
        match read {
            Ok(Message::Text(token)) if policy.token_ok(Some(token.as_str())) => {
                let _ = input.stream.set_read_timeout(Some(pong_timeout));
                return true;
            }
            Ok(Message::Ping(payload)) => {
                let _ = to_writer.send(Outgoing::Pong(Box::new(payload)));
            }
            Ok(Message::Pong(_)) => {}
            Ok(Message::Close(frame)) => {
                let _ = to_writer.send(Outgoing::Close(Box::new(frame)));
                return false;
            }
            Ok(_) => break "the first message must be the token",
            Err(WsError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break "no token within the authentication deadline";
            }
            Err(_) => return false, // the peer broke off or broke the protocol
        }
    };
    log::warn!("connection {id}: authentication failed: {refusal}");
    let frame = CloseFrame {
        code: CloseCode::Policy,
        reason: refusal.into(),
    };
    if to_writer
        .send(Outgoing::Close(Box::new(Some(frame))))
        .is_ok()
    {
        linger(ctx, input);
    }
    false
}

/// The reader's side of the socket. Reads come from the socket; writes go nowhere,
/// because whatever tungstenite would write from inside `read()` (pong and close
/// replies) is sent by the writer thread instead.
///
/// Every byte read is charged to the memory budget until its message is complete
/// (a frame that is still arriving is memory too): then the message's bytes move to
/// the `messages` category ([`ReadHalf::take_message`]) and the rest is given back.
struct ReadHalf {
    stream: Arc<Stream>,
    /// Bytes read since the last complete message.
    reading: Reservation,
    /// The budget could not take the bytes just read: the connection fails with 1013.
    short: bool,
    /// Where the frames read so far begin and end (see `edges.rs`).
    edges: FrameEdges,
    /// The settings a fresh context gets.
    config: WebSocketConfig,
}

impl ReadHalf {
    /// A complete message of `bytes` arrived: its charge, now a message's.
    fn take_message(&mut self, bytes: usize) -> Reservation {
        let charge = self
            .reading
            .split_into(Category::Messages, bytes + MESSAGE_OVERHEAD_BYTES);
        self.reading.shrink_to(0);
        charge
    }

    /// A control frame arrived (or a message was dropped): nothing is still arriving.
    fn message_done(&mut self) {
        self.reading.shrink_to(0);
    }
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // tungstenite asks for at most READ_BUFFER_BYTES at a time, so the bytes read
        // before they are charged are few (part of the fixed cost per connection).
        // After a large frame's header, never past a frame's edge.
        let room = self.edges.limit(buf.len());
        let n = (&*self.stream).read(&mut buf[..room])?;
        self.edges.saw(&buf[..n]);
        if !self.reading.grow_within(n, RECLAIM_WAIT) {
            self.short = true;
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "memory budget exhausted",
            ));
        }
        Ok(n)
    }
}

impl Write for ReadHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len()) // discarded on purpose: the writer owns the outgoing direction
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The writer's side of the socket: the only code in the server that writes frames.
/// Every write ends by its deadline: [`WRITE_TIMEOUT`] from the start of the message
/// it is part of ([`WriteHalf::begin`]), or earlier at shutdown (the step's share of
/// the drain deadline the close signal carries).
struct WriteHalf {
    /// The connection's socket, shared with the reader.
    stream: Arc<Stream>,
    /// The server's close requests; at shutdown it carries the drain deadline.
    close: Arc<CloseSignal>,
    /// The writer is at its close frame: at shutdown that step has a later deadline
    /// than the queue's.
    closing: bool,
    /// Whether a write that timed out may simply be tried again, so that it can wait
    /// in slices ([`WRITE_SLICE`]): on plain TCP, where it has written nothing. Not on
    /// TLS, whose session may already hold the bytes of a write that timed out (trying
    /// again would send them twice): there one system call waits for all the time.
    waits_in_slices: bool,
    /// The socket's write timeout as last set, so it is set only when it changes.
    timeout: Option<Duration>,
    /// When the message (or control frame) being written began to be written.
    began: Instant,
}

impl WriteHalf {
    fn new(stream: Arc<Stream>, close: Arc<CloseSignal>) -> WriteHalf {
        let waits_in_slices = match *stream {
            Stream::Plain(_) => true,
            #[cfg(feature = "tls")]
            Stream::Tls(_) => false,
        };
        WriteHalf {
            stream,
            close,
            closing: false,
            waits_in_slices,
            timeout: None,
            began: Instant::now(),
        }
    }

    /// A new message (or control frame) starts: every write for it, however many
    /// system calls the peer's pace takes, must end within [`WRITE_TIMEOUT`] of now.
    fn begin(&mut self) {
        self.began = Instant::now();
    }

    /// When a write that started at `started` must have ended.
    fn deadline(&self, started: Instant) -> Instant {
        let own = self.began + WRITE_TIMEOUT;
        match self.close.queued() {
            Some(Queued::SendBy(drain)) if self.closing => {
                let last_try = started + CLOSE_FRAME_LAST_TRY;
                own.min(before(drain, CLOSE_FRAME_RESERVE).max(last_try))
            }
            Some(Queued::SendBy(drain)) => own.min(before(drain, QUEUE_RESERVE)),
            _ => own,
        }
    }

    /// Runs one write to the socket (`op`) until its deadline, which it looks up again
    /// after each slice of waiting: a shutdown may have brought it forward meanwhile.
    /// Past the deadline: `TimedOut` (and the writer writes nothing more).
    fn bounded<T>(&mut self, mut op: impl FnMut(&mut &Stream) -> io::Result<T>) -> io::Result<T> {
        let started = Instant::now();
        let mut now = started;
        loop {
            let left = self.deadline(started).saturating_duration_since(now);
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the peer took no data before the write's deadline",
                ));
            }
            let wait = if self.waits_in_slices {
                left.min(WRITE_SLICE)
            } else {
                left
            };
            self.set_timeout(wait)?;
            match op(&mut &*self.stream) {
                Err(e) if self.waits_in_slices && is_timeout(&e) => now = Instant::now(),
                result => return result,
            }
        }
    }

    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        if self.timeout != Some(timeout) {
            self.stream.set_write_timeout(Some(timeout))?;
            self.timeout = Some(timeout);
        }
        Ok(())
    }
}

impl Read for WriteHalf {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Ok(0) // the writer never reads; tungstenite's write path does not call this
    }
}

impl Write for WriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bounded(|stream| stream.write(buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        self.bounded(|stream| stream.flush())
    }
}

/// A blocking socket call that ran out of time (`EAGAIN` on Unix, which writes nothing).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// `reserve` before `deadline` (or `deadline` itself, so close to the clock's origin).
fn before(deadline: Instant, reserve: Duration) -> Instant {
    deadline.checked_sub(reserve).unwrap_or(deadline)
}

/// What bounds the reader's input besides the message size and the memory budget:
/// the message rate, and for echo the bytes waiting for the writer.
struct InputLimits<'a> {
    rate: RateLimit,
    counters: &'a Counters,
    backlog: &'a crate::hub::Backlog,
}

/// How the reader's loop ended.
enum ReadEnd {
    /// The peer sent a close frame (§5.5.1): we answer with the same code.
    /// tungstenite has already replaced a code not allowed on the wire by 1002.
    PeerClosed(Option<CloseFrame>),
    /// The connection is over on our side (the close handshake finished, or the
    /// writer has stopped): nothing more to send.
    Done,
    /// The peer vanished (reset, EOF without close, or silence past the pong timeout):
    /// there is nobody to send a close frame to.
    Vanished(String),
    /// The peer broke the protocol: we *fail the connection* with this close frame.
    Fail(CloseFrame),
}

/// Reads messages until the connection ends: data goes to its destination, and each
/// control frame that needs an answer is queued for the writer.
fn read_loop(
    id: ConnId,
    ctx: &mut WebSocketContext,
    input: &mut ReadHalf,
    destination: &Destination,
    to_writer: &Sender<Outgoing>,
    hub: &Sender<Command>,
    mut limits: InputLimits,
) -> ReadEnd {
    let counters = limits.counters;
    loop {
        let message = match ctx.read(input) {
            Ok(message) => message,
            Err(_) if input.short => {
                input.message_done();
                return ReadEnd::Fail(CloseFrame {
                    code: CloseCode::Again,
                    reason: BUDGET_CLOSE_REASON.into(),
                });
            }
            Err(e) => return classify(e),
        };
        let charge = match &message {
            Message::Text(_) | Message::Binary(_) => {
                // A large message leaves tungstenite holding a buffer of its size for
                // good; a fresh context has a small one. Safe now: no byte of the
                // next frame has been read (see `edges.rs`).
                if input.edges.at_edge_after_large() {
                    *ctx = WebSocketContext::new(Role::Server, Some(input.config));
                    input.edges.reset();
                }
                Some(input.take_message(message.len()))
            }
            _ => {
                input.message_done();
                None
            }
        };
        let delivered = match (message, charge) {
            (message @ (Message::Text(_) | Message::Binary(_)), Some(charge)) => {
                counters.messages_in.fetch_add(1, Ordering::Relaxed);
                match destination {
                    // Blocking send: if the client sends faster than it reads its echoes,
                    // the queue fills and we stop reading, and TCP slows the client down.
                    // A client that lets more bytes than its queue's share pile up is a
                    // slow consumer, as in a room.
                    Destination::Echo => {
                        if !limits.backlog.add(message.len()) {
                            counters.slow_consumers.fetch_add(1, Ordering::Relaxed);
                            return ReadEnd::Fail(CloseFrame {
                                code: CloseCode::Policy,
                                reason: SLOW_CONSUMER_REASON.into(),
                            });
                        }
                        let echo = Echo { message, charge };
                        to_writer.send(Outgoing::Message(Box::new(echo))).is_ok()
                    }
                    Destination::Room { name, raw, .. } => {
                        // A room's messages cost every member: a client publishing
                        // faster than its allowance is closed (1008).
                        if !limits.rate.allow(Instant::now()) {
                            counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                            let per_second = limits.rate.per_second_limit();
                            return ReadEnd::Fail(CloseFrame {
                                code: CloseCode::Policy,
                                reason: format!("more than {per_second} messages per second")
                                    .into(),
                            });
                        }
                        // An enveloped client may name its message (`cid:<id>` line) so
                        // the room can drop a resent copy; raw clients are never parsed.
                        let (cid, message) = if *raw {
                            (None, message)
                        } else {
                            envelope::split_client_id(message)
                        };
                        let publish = Command::Publish {
                            room: name.clone(),
                            message,
                            cid,
                            from: Some(id),
                            reply: None,
                            charge,
                        };
                        hub.send(publish).is_ok()
                    }
                }
            }
            // RFC 6455 §5.5.2: answer a ping with a pong carrying the same payload. It
            // takes its turn in the queue, so it never splits a message on the wire.
            (Message::Ping(payload), _) => {
                to_writer.send(Outgoing::Pong(Box::new(payload))).is_ok()
            }
            // A pong needs no answer: having read it already reset our read deadline.
            (Message::Pong(_), _) => true,
            (Message::Close(frame), _) => return ReadEnd::PeerClosed(frame),
            // Raw frames are never returned by read(); data always has its charge.
            (Message::Frame(_) | Message::Text(_) | Message::Binary(_), _) => true,
        };
        if !delivered {
            return ReadEnd::Done; // the writer has stopped (server closing this connection)
        }
    }
}

/// Tells the writer how the connection ends.
fn finish(
    id: ConnId,
    end: ReadEnd,
    to_writer: &Sender<Outgoing>,
    ctx: &mut WebSocketContext,
    input: &mut ReadHalf,
) {
    match end {
        ReadEnd::PeerClosed(frame) => {
            log::debug!(
                "connection {id}: peer closed ({:?})",
                frame.as_ref().map(|f| u16::from(f.code))
            );
            let _ = to_writer.send(Outgoing::Close(Box::new(frame)));
        }
        ReadEnd::Done => {
            log::debug!("connection {id}: closed");
            let _ = to_writer.send(Outgoing::Stop);
        }
        ReadEnd::Vanished(why) => {
            log::debug!("connection {id}: gone ({why})");
            let _ = to_writer.send(Outgoing::Stop);
        }
        ReadEnd::Fail(frame) => {
            log::debug!(
                "connection {id}: failing with {} ({})",
                u16::from(frame.code),
                frame.reason
            );
            if to_writer
                .send(Outgoing::Close(Box::new(Some(frame))))
                .is_ok()
            {
                // Keep reading until the peer has seen our close frame and hung up.
                linger(ctx, input);
            }
        }
    }
}

/// Maps a read error to how the connection ends, with the close code RFC 6455 §7.4.1
/// prescribes for each kind of fault.
fn classify(error: WsError) -> ReadEnd {
    let fail = |code: CloseCode, reason: String| {
        let mut reason = reason;
        truncate_utf8(&mut reason, MAX_CLOSE_REASON);
        ReadEnd::Fail(CloseFrame {
            code,
            reason: reason.into(),
        })
    };
    match error {
        WsError::ConnectionClosed | WsError::AlreadyClosed => ReadEnd::Done,
        WsError::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            ReadEnd::Vanished("no frame within the pong timeout".into())
        }
        WsError::Io(e) => ReadEnd::Vanished(e.to_string()),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            ReadEnd::Vanished("connection ended without a close frame".into())
        }
        WsError::Protocol(e) => fail(CloseCode::Protocol, e.to_string()),
        WsError::Utf8(_) => fail(
            CloseCode::Invalid,
            "invalid UTF-8 in a text message or close reason".into(),
        ),
        WsError::Capacity(CapacityError::MessageTooLong { max_size, .. }) => fail(
            CloseCode::Size,
            format!("message larger than {max_size} bytes"),
        ),
        WsError::Capacity(e) => fail(CloseCode::Size, e.to_string()),
        WsError::AttackAttempt => fail(CloseCode::Policy, "attack attempt".into()),
        e => fail(CloseCode::Error, format!("internal error: {e}")),
    }
}

/// After failing a connection: keep reading (and ignoring) frames until the peer's
/// close reply arrives, the peer hangs up, a frame is unreadable, or CLOSE_LINGER
/// passes. Then our close frame has surely reached the peer before the socket closes.
fn linger(ctx: &mut WebSocketContext, input: &mut ReadHalf) {
    let deadline = Instant::now() + CLOSE_LINGER;
    while let Some(left) = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
    {
        if input.stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        let read = ctx.read(input);
        input.message_done();
        match read {
            Ok(Message::Close(_)) => return, // the closing handshake is complete
            Ok(_) => {}                      // anything else the peer still sends: dropped
            Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))
            | Err(WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Io(_)) => return,
            // The fault left us mid-frame, so the bytes no longer parse as frames:
            // discard them raw until the peer hangs up or the time is up.
            Err(_) => return drain(&input.stream, deadline),
        }
    }
}

/// Reads and discards raw bytes until end of stream, an error, `deadline`, or what
/// looks like the peer's close frame: the bytes so far end with one complete masked
/// close frame (`0x88`, `0x80 | n`, 4 mask bytes, n bytes), as a client answering our
/// close sends. (tungstenite cannot help here: after a bad frame header it keeps
/// failing on that same header.)
fn drain(stream: &Stream, deadline: Instant) {
    let mut sink = [0u8; 1024];
    let mut tail: Vec<u8> = Vec::with_capacity(2 * MAX_CLOSE_FRAME);
    while let Some(left) = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
    {
        if stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&*stream).read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                tail.extend_from_slice(&sink[..n]);
                if tail.len() > MAX_CLOSE_FRAME {
                    tail.drain(..tail.len() - MAX_CLOSE_FRAME);
                }
                if ends_with_close_frame(&tail) {
                    return;
                }
            }
        }
    }
}

/// Longest masked close frame a client can send: 2 header bytes, 4 mask bytes, 125.
const MAX_CLOSE_FRAME: usize = 2 + 4 + 125;

fn ends_with_close_frame(bytes: &[u8]) -> bool {
    (0..=125usize).any(|n| {
        bytes.len() >= 6 + n && {
            let frame = &bytes[bytes.len() - 6 - n..];
            frame[0] == 0x88 && frame[1] == 0x80 | n as u8
        }
    })
}

/// What the writer does after handling one queued item.
enum Next {
    Continue,
    /// Send this close frame, then stop.
    Close(Option<CloseFrame>),
    /// Stop without a close frame (the peer is gone).
    Stop,
}

/// What the writer finds when it looks for work.
enum Work {
    /// An item to write.
    Item(Outgoing),
    /// Nothing arrived before the next ping is due.
    PingDue,
    /// The connection ends this way (close, or stop).
    End(Next),
}

/// What the writer listens to: its queue, and the server's close requests.
struct Inbox {
    queue: QueueEnd,
    close: Arc<CloseSignal>,
}

impl Inbox {
    /// The next item. Normally the writer sleeps for one until `next_ping`. Once asked
    /// to close after its queue it never sleeps: nobody queues it anything more, so an
    /// empty queue means it has sent everything it was owed, and it closes.
    fn next(&self, next_ping: Instant) -> Work {
        if let Some(Queued::SendBy(_)) = self.close.queued() {
            return match self.queue.try_recv() {
                Ok(item) => Work::Item(item),
                Err(TryRecvError::Empty) => Work::End(self.requested_close()),
                Err(TryRecvError::Disconnected) => Work::End(Next::Stop),
            };
        }
        match self.queue.recv_deadline(next_ping) {
            Ok(item) => Work::Item(item),
            Err(RecvTimeoutError::Timeout) => Work::PingDue,
            Err(RecvTimeoutError::Disconnected) => Work::End(Next::Stop),
        }
    }

    /// Whether what is still queued must be dropped: the server asked for a close at
    /// once (slow consumer), or the shutdown's time for the queue is over.
    fn drop_the_rest(&self) -> bool {
        match self.close.queued() {
            None => false,
            Some(Queued::Drop) => true,
            Some(Queued::SendBy(drain)) => Instant::now() >= before(drain, QUEUE_RESERVE),
        }
    }

    /// The close frame the server asked for (a close with no code if it asked none).
    fn requested_close(&self) -> Next {
        Next::Close(self.close.requested().map(|(code, reason)| CloseFrame {
            code,
            reason: reason.into(),
        }))
    }
}

/// The writer thread: the only code that writes to this connection's socket.
fn write_loop(
    id: ConnId,
    mut ctx: WebSocketContext,
    mut out: WriteHalf,
    inbox: &Inbox,
    counters: &Counters,
    ping_interval: Duration,
    raw: bool,
) -> Option<u16> {
    let mut next_ping = Instant::now() + ping_interval;
    let result = loop {
        // Sleep until there is something to send or it is time to ping. An idle
        // connection costs no CPU: the thread is parked in the channel.
        let first = match inbox.next(next_ping) {
            Work::Item(item) => Some(item),
            Work::PingDue => None,
            Work::End(next) => break Ok(next),
        };
        let next = match write_batch(&mut ctx, &mut out, first, inbox, counters, raw) {
            Ok(next) => next,
            Err(e) => break Err(e),
        };
        // Heartbeat: ping on schedule, even while data flows, so a peer that only
        // receives still answers with pongs and its reader never times out.
        if matches!(next, Next::Continue) && Instant::now() >= next_ping {
            next_ping = Instant::now() + ping_interval;
            out.begin();
            if let Err(e) = ctx.write(&mut out, Message::Ping(Bytes::new())) {
                break Err(e);
            }
        }
        match next {
            Next::Continue => {
                if let Err(e) = ctx.flush(&mut out) {
                    break Err(e);
                }
            }
            other => break Ok(other),
        }
    };
    end_writing(id, ctx, out, result)
}

/// Writes `first` and what is already queued behind it (up to MAX_BATCH items) into
/// tungstenite's buffer, for the caller to flush once: one system call for a burst of
/// messages instead of one per message. Stops at an item that ends the connection,
/// and where the server's close request says to drop the rest.
fn write_batch(
    ctx: &mut WebSocketContext,
    out: &mut WriteHalf,
    first: Option<Outgoing>,
    inbox: &Inbox,
    counters: &Counters,
    raw: bool,
) -> Result<Next, WsError> {
    let mut next = Next::Continue;
    let mut item = first;
    let mut handled = 0;
    while let Some(outgoing) = item.take() {
        if inbox.drop_the_rest() {
            break;
        }
        next = write_one(ctx, out, outgoing, counters, raw)?;
        if !matches!(next, Next::Continue) {
            break;
        }
        handled += 1;
        if handled < MAX_BATCH {
            item = inbox.queue.try_recv().ok();
        }
    }
    // Closing at once (or out of time at shutdown): the server's close frame goes now,
    // and what is still queued is dropped right away, so its memory is free before
    // the close handshake ends (a peer that stopped reading may take long to answer).
    // After a close *after the queue* the writer carries on until the queue is empty.
    if inbox.drop_the_rest() {
        inbox.queue.try_iter().for_each(drop);
        next = inbox.requested_close();
    }
    Ok(next)
}

/// Ends the connection as the writer's loop decided: sends the close frame, or just
/// shuts the socket.
fn end_writing(
    id: ConnId,
    mut ctx: WebSocketContext,
    mut out: WriteHalf,
    result: Result<Next, WsError>,
) -> Option<u16> {
    match result {
        Ok(Next::Close(frame)) => {
            // §5.5.1: after sending a close frame an endpoint sends nothing more. The
            // reader keeps reading until the peer's close (or EOF) arrives.
            let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
            out.closing = true;
            out.begin();
            match ctx.close(&mut out, frame) {
                // (`ConnectionClosed` would mean the close handshake is over: sent too.)
                Ok(()) | Err(WsError::ConnectionClosed) => {
                    let _ = out.stream.shutdown(Shutdown::Write);
                    Some(code)
                }
                Err(e) => {
                    // The peer takes no data (or the shutdown's time is up): it cannot
                    // answer a close it never gets, so wake the reader too.
                    log::debug!("connection {id}: close frame {code} not sent: {e}");
                    let _ = out.stream.shutdown(Shutdown::Both);
                    None
                }
            }
        }
        Ok(_) => {
            let _ = out.stream.shutdown(Shutdown::Both);
            None
        }
        Err(e) => {
            log::debug!("connection {id}: write failed: {e}");
            // Wake the reader too: nobody can write to this peer any more.
            let _ = out.stream.shutdown(Shutdown::Both);
            None
        }
    }
}

/// Writes (into tungstenite's buffer) one queued item. `raw` connections get room
/// payloads as published and no control frames; the others get the envelope.
fn write_one(
    ctx: &mut WebSocketContext,
    out: &mut WriteHalf,
    item: Outgoing,
    counters: &Counters,
    raw: bool,
) -> Result<Next, WsError> {
    out.begin();
    match item {
        Outgoing::Message(echo) => write_data(ctx, out, echo.message, counters)?,
        Outgoing::Room(message) => {
            let form = if raw { &message.raw } else { &message.framed };
            write_data(ctx, out, form.clone(), counters)?;
            counters
                .delivery_latency
                .observe(message.accepted.elapsed());
        }
        Outgoing::Joined(joined) if !raw => {
            let plan = &joined.plan;
            ctx.write(
                out,
                Message::text(envelope::welcome_json(&joined.room, &plan.welcome())),
            )?;
            if let Some((from, to)) = plan.gap {
                ctx.write(out, Message::text(envelope::gap_json(from, to)))?;
            }
            for message in &plan.replay {
                out.begin();
                write_data(ctx, out, message.framed.clone(), counters)?;
            }
        }
        Outgoing::Notice(notice) if !raw => ctx.write(out, Message::text(notice.json()))?,
        Outgoing::Joined(_) | Outgoing::Notice(_) => {}
        Outgoing::Pong(payload) => ctx.write(out, Message::Pong(*payload))?,
        Outgoing::Close(frame) => return Ok(Next::Close(*frame)),
        Outgoing::Wake => {}
        Outgoing::Stop => return Ok(Next::Stop),
    }
    Ok(Next::Continue)
}

/// Buffers one data message and counts it. A long one goes out in fragments.
fn write_data(
    ctx: &mut WebSocketContext,
    out: &mut WriteHalf,
    message: Message,
    counters: &Counters,
) -> Result<(), WsError> {
    match message {
        Message::Text(text) if text.len() > FRAGMENT_BYTES => {
            write_fragments(ctx, out, OpData::Text, text.into())?;
        }
        Message::Binary(bytes) if bytes.len() > FRAGMENT_BYTES => {
            write_fragments(ctx, out, OpData::Binary, bytes)?;
        }
        message => ctx.write(out, message)?,
    }
    counters.messages_out.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Sends one message as a first frame of its type and continuation frames of
/// [`FRAGMENT_BYTES`] each, the last one marked final (RFC 6455 §5.4). The pieces
/// are slices of the one shared buffer: nothing is copied but into the socket.
fn write_fragments(
    ctx: &mut WebSocketContext,
    out: &mut WriteHalf,
    kind: OpData,
    payload: Bytes,
) -> Result<(), WsError> {
    let mut start = 0;
    while start < payload.len() {
        // Closed at once meanwhile (a slow consumer): the rest is not sent. The close
        // frame may follow a message's fragments before its last one (§5.4, §5.5.1).
        if start > 0 && out.close.queued() == Some(Queued::Drop) {
            break;
        }
        let end = (start + FRAGMENT_BYTES).min(payload.len());
        let opcode = if start == 0 { kind } else { OpData::Continue };
        let fragment = Frame::message(
            payload.slice(start..end),
            OpCode::Data(opcode),
            end == payload.len(),
        );
        ctx.write(out, Message::Frame(fragment))?;
        start = end;
    }
    Ok(())
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}
