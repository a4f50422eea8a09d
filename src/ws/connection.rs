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

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Bytes, Message};

use crate::envelope;
use crate::hub::{
    CloseSignal, Command, ConnId, Counters, HUB_REPLY_TIMEOUT, Notice, Outgoing, Subscriber,
};
use crate::limit::{RateLimit, Slot};
use crate::room::Resume;
use crate::security::AccessPolicy;
use crate::stream::Stream;

/// Bytes read from the socket per `read` call. tungstenite's 128 KiB default is
/// allocated up front for every connection; 2 KiB keeps an idle connection under
/// 32 KiB of memory in all (see BENCHMARKS.md). A large frame still gets a buffer of
/// its own size, so big messages cost more system calls, not more copies.
pub const READ_BUFFER_BYTES: usize = 2 * 1024;
/// The writer collects frames up to this size before a `write` system call; a
/// `flush` after each batch sends whatever is left.
pub const WRITE_BUFFER_BYTES: usize = 16 * 1024;
/// Longest a single write may block on a peer that does not read (gorilla's
/// `writeWait`). After that the peer is treated as gone.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After we fail a connection we keep reading (and discarding) this long, so the
/// peer can read our close frame before the socket closes. Closing a socket with
/// unread input makes the kernel send a reset, which can destroy the close frame.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// Stack of each connection thread. Threads here parse frames and copy buffers that
/// live on the heap, so they need little stack; 128 KiB leaves a wide margin even in
/// unoptimized builds, and untouched stack pages cost no memory anyway.
pub const THREAD_STACK_BYTES: usize = 128 * 1024;
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
    let (subscriber, rx) = Subscriber::new(settings.send_queue, raw);
    let tx = subscriber.tx.clone();
    let close = Arc::clone(&subscriber.close);

    let writer = {
        let out = WriteHalf(Arc::clone(&stream));
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

    let mut input = ReadHalf(Arc::clone(&stream));
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
        let _ = tx.send(Outgoing::Stop); // the hub is gone: the server is stopping
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
        if left.is_zero() || input.0.set_read_timeout(Some(left)).is_err() {
            break "no token within the authentication deadline";
        }
        match ctx.read(input) {
            Ok(Message::Text(token)) if policy.token_ok(Some(token.as_str())) => {
                let _ = input.0.set_read_timeout(Some(pong_timeout));
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
struct ReadHalf(Arc<Stream>);

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
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
struct WriteHalf(Arc<Stream>);

impl Read for WriteHalf {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Ok(0) // the writer never reads; tungstenite's write path does not call this
    }
}

impl Write for WriteHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        (&*self.0).flush()
    }
}

/// What bounds the reader's input besides the message size: the message rate.
struct InputLimits<'a> {
    rate: RateLimit,
    counters: &'a Counters,
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
            Err(e) => return classify(e),
        };
        let delivered = match message {
            Message::Text(_) | Message::Binary(_) => {
                counters.messages_in.fetch_add(1, Ordering::Relaxed);
                match destination {
                    // Blocking send: if the client sends faster than it reads its echoes,
                    // the queue fills and we stop reading, and TCP slows the client down.
                    Destination::Echo => {
                        to_writer.send(Outgoing::Message(Box::new(message))).is_ok()
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
                        };
                        hub.send(publish).is_ok()
                    }
                }
            }
            // RFC 6455 §5.5.2: answer a ping with a pong carrying the same payload. It
            // takes its turn in the queue, so it never splits a message on the wire.
            Message::Ping(payload) => to_writer.send(Outgoing::Pong(Box::new(payload))).is_ok(),
            // A pong needs no answer: having read it already reset our read deadline.
            Message::Pong(_) => true,
            Message::Close(frame) => return ReadEnd::PeerClosed(frame),
            Message::Frame(_) => true, // raw frames are never returned by read()
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
        if input.0.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match ctx.read(input) {
            Ok(Message::Close(_)) => return, // the closing handshake is complete
            Ok(_) => {}                      // anything else the peer still sends: dropped
            Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))
            | Err(WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Io(_)) => return,
            // The fault left us mid-frame, so the bytes no longer parse as frames:
            // discard them raw until the peer hangs up or the time is up.
            Err(_) => return drain(&input.0, deadline),
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

/// What the writer listens to: its queue, and the server's close requests.
struct Inbox {
    queue: Receiver<Outgoing>,
    close: Arc<CloseSignal>,
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
    let Inbox { queue, close } = inbox;
    let mut next_ping = Instant::now() + ping_interval;
    let mut failure = None;
    let result = loop {
        // Sleep until there is something to send or it is time to ping. An idle
        // connection costs no CPU: the thread is parked in the channel.
        let first = match queue.recv_deadline(next_ping) {
            Ok(item) => Some(item),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break Ok(Next::Stop),
        };

        // Handle what is already queued (up to MAX_BATCH items), then flush once: one
        // system call for a burst of messages instead of one per message.
        let mut next = Next::Continue;
        let mut item = first;
        let mut handled = 0;
        while let Some(outgoing) = item.take() {
            if close.requested().is_some() {
                break; // the server wants this connection closed: skip the rest
            }
            match write_one(&mut ctx, &mut out, outgoing, counters, raw) {
                Ok(Next::Continue) => {}
                Ok(other) => {
                    next = other;
                    break;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
            handled += 1;
            if handled < MAX_BATCH {
                item = queue.try_recv().ok();
            }
        }
        if let Some(e) = failure.take() {
            break Err(e);
        }
        if let Some((code, reason)) = close.requested() {
            next = Next::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            }));
        }
        // Heartbeat: ping on schedule, even while data flows, so a peer that only
        // receives still answers with pongs and its reader never times out.
        if matches!(next, Next::Continue) && Instant::now() >= next_ping {
            next_ping = Instant::now() + ping_interval;
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

    match result {
        Ok(Next::Close(frame)) => {
            // §5.5.1: after sending a close frame an endpoint sends nothing more. The
            // reader keeps reading until the peer's close (or EOF) arrives.
            let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
            let _ = ctx.close(&mut out, frame);
            let _ = out.0.shutdown(Shutdown::Write);
            Some(code)
        }
        Ok(_) => {
            let _ = out.0.shutdown(Shutdown::Both);
            None
        }
        Err(e) => {
            log::debug!("connection {id}: write failed: {e}");
            // Wake the reader too: nobody can write to this peer any more.
            let _ = out.0.shutdown(Shutdown::Both);
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
    match item {
        Outgoing::Message(message) => write_data(ctx, out, *message, counters)?,
        Outgoing::Room(message) => {
            let message = if raw { &message.raw } else { &message.framed };
            write_data(ctx, out, message.clone(), counters)?;
        }
        Outgoing::Joined(joined) if !raw => {
            let plan = &joined.plan;
            ctx.write(
                out,
                Message::text(envelope::welcome_json(&joined.room, plan)),
            )?;
            if let Some((from, to)) = plan.gap {
                ctx.write(out, Message::text(envelope::gap_json(from, to)))?;
            }
            for message in &plan.replay {
                write_data(ctx, out, message.framed.clone(), counters)?;
            }
        }
        Outgoing::Notice(notice) if !raw => ctx.write(out, Message::text(notice_json(&notice)))?,
        Outgoing::Joined(_) | Outgoing::Notice(_) => {}
        Outgoing::Pong(payload) => ctx.write(out, Message::Pong(*payload))?,
        Outgoing::Close(frame) => return Ok(Next::Close(*frame)),
        Outgoing::Wake => {}
        Outgoing::Stop => return Ok(Next::Stop),
    }
    Ok(Next::Continue)
}

/// Buffers one data message and counts it.
fn write_data(
    ctx: &mut WebSocketContext,
    out: &mut WriteHalf,
    message: Message,
    counters: &Counters,
) -> Result<(), WsError> {
    ctx.write(out, message)?;
    counters.messages_out.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// The control frame for a notice.
pub fn notice_json(notice: &Notice) -> String {
    match notice {
        Notice::Ack { cid, id, duplicate } => envelope::ack_json(cid, *id, *duplicate),
        Notice::Members(count) => envelope::members_json(*count),
    }
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
