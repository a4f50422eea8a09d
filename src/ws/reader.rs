//! The reader half of a connection: it reads frames, sends data to the room (or back,
//! for echo) and queues every reply a control frame needs for the writer. It never
//! writes to the socket. What it reads is charged to the memory budget until its
//! message is complete.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tungstenite::Message;
use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};

use super::close::linger;
use super::connection::Destination;
use crate::budget::{Category, RECLAIM_WAIT, Reservation};
use crate::hub::{Command, ConnId, Counters, Echo, Outgoing, SLOW_CONSUMER_REASON};
use crate::limit::RateLimit;
use crate::protocol::envelope;
use crate::room::MESSAGE_OVERHEAD_BYTES;
use crate::security::AccessPolicy;
use crate::stream::Stream;
use crate::ws::edges::FrameEdges;

/// Bytes read from the socket per `read` call. tungstenite's 128 KiB default is
/// allocated up front for every connection; 2 KiB keeps an idle connection under
/// 32 KiB of memory in all (see BENCHMARKS.md). A large frame still gets a buffer of
/// its own size, so big messages cost more system calls, not more copies.
pub const READ_BUFFER_BYTES: usize = 2 * 1024;

/// Close code for a publisher whose message the memory budget cannot take even after
/// the hub has freed what it can (RFC 6455's registry: 1013, try again later).
pub const BUDGET_CLOSE_REASON: &str = "server memory budget exhausted; try again later";

/// Close reasons must fit in a control frame (125 bytes minus the 2-byte code).
pub(super) const MAX_CLOSE_REASON: usize = 123;

/// Authentication by first message (`--auth first-message`): the token travels as the
/// connection's first text message instead of in the URL, where proxies would log it.
/// Until it arrives the client joins nothing and receives nothing; a wrong token, any
/// other message, or none within the handshake deadline closes with 1008.
pub(super) fn authenticate(
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
pub(super) struct ReadHalf {
    pub(super) stream: Arc<Stream>,
    /// Bytes read since the last complete message.
    pub(super) reading: Reservation,
    /// The budget could not take the bytes just read: the connection fails with 1013.
    pub(super) short: bool,
    /// Where the frames read so far begin and end (see `edges.rs`).
    pub(super) edges: FrameEdges,
    /// The settings a fresh context gets.
    pub(super) config: WebSocketConfig,
}

impl ReadHalf {
    /// A complete message of `bytes` arrived: its charge, now a message's.
    pub(super) fn take_message(&mut self, bytes: usize) -> Reservation {
        let charge = self
            .reading
            .split_into(Category::Messages, bytes + MESSAGE_OVERHEAD_BYTES);
        self.reading.shrink_to(0);
        charge
    }

    /// A control frame arrived (or a message was dropped): nothing is still arriving.
    pub(super) fn message_done(&mut self) {
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

/// What bounds the reader's input besides the message size and the memory budget:
/// the message rate, and for echo the bytes waiting for the writer.
pub(super) struct InputLimits<'a> {
    pub(super) rate: RateLimit,
    pub(super) counters: &'a Counters,
    pub(super) backlog: &'a crate::hub::Backlog,
}

/// How the reader's loop ended.
pub(super) enum ReadEnd {
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
pub(super) fn read_loop(
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

/// Maps a read error to how the connection ends, with the close code RFC 6455 §7.4.1
/// prescribes for each kind of fault.
pub(super) fn classify(error: WsError) -> ReadEnd {
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

pub(super) fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}
