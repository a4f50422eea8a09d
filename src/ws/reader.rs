//! The reader half of a connection: it reads frames, sends data to the room (or back,
//! for echo) and queues every reply a control frame needs for the writer. It never
//! writes to the socket. What it reads is charged to the memory budget until its
//! message is complete.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tungstenite::Message;
use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tungstenite::protocol::{CloseFrame, WebSocketContext};

use super::close::close_with;
use super::read_half::ReadHalf;
use super::settings::Destination;
use crate::budget::Reservation;
use crate::hub::{self, ConnId, Counters, Echo, Notice, Outgoing};
use crate::net::rate::RateLimit;
use crate::protocol::close::CloseReason;
use crate::protocol::envelope;
use crate::protocol::person::Person;
use crate::protocol::rights::{Caller, NOT_ALLOWED_HERE};
use crate::room::Tag;
use crate::security::AccessPolicy;

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
) -> Option<Caller> {
    let (auth_timeout, pong_timeout) = timeouts;
    let deadline = Instant::now() + auth_timeout;
    let refusal = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || input.socket.set_read_timeout(Some(left)).is_err() {
            break "no token within the authentication deadline";
        }
        let read = ctx.read(input);
        input.message_done();
        match read {
            Ok(Message::Text(token)) => match policy.caller(Some(token.as_str())) {
                Some(caller) => {
                    let _ = input.socket.set_read_timeout(Some(pong_timeout));
                    return Some(caller);
                }
                None => break "the first message must be the token",
            },
            Ok(Message::Ping(payload)) => {
                let _ = to_writer.send(Outgoing::Pong(Box::new(payload)));
            }
            Ok(Message::Pong(_)) => {}
            Ok(Message::Close(frame)) => {
                let _ = to_writer.send(Outgoing::Close(Box::new(frame)));
                return None;
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
            Err(_) => return None, // the peer broke off or broke the protocol
        }
    };
    log::warn!("connection {id}: authentication failed: {refusal}");
    close_with(CloseReason::Unauthorized(refusal), to_writer, ctx, input);
    None
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
    /// The peer broke the protocol or a limit: we *fail the connection* for this reason.
    Fail(CloseReason),
}

/// Where the reader sends what it reads, and what bounds it.
pub(super) struct Routes<'a> {
    /// The connection.
    pub(super) id: ConnId,
    /// Echo, or a room.
    pub(super) destination: &'a Destination,
    /// Whether the client may publish into its room (its token's `publish`); if not,
    /// its messages are answered with an `error` notice and go nowhere.
    pub(super) may_publish: bool,
    /// Who the client is, stamped on every message it publishes (`from`); `None` for
    /// a client with no name. Set by the server from the token, never from the client.
    pub(super) sender: Option<Arc<Person>>,
    /// The connection's own writer (pongs, echoes, the close frame).
    pub(super) to_writer: &'a Sender<Outgoing>,
    /// The hub (publishes).
    pub(super) hub: &'a hub::Handle,
    /// The message rate, the counters, the echo backlog.
    pub(super) limits: InputLimits<'a>,
}

/// Reads messages until the connection ends: data goes to its destination, and each
/// control frame that needs an answer is queued for the writer.
pub(super) fn read_loop(
    ctx: &mut WebSocketContext,
    input: &mut ReadHalf,
    routes: &mut Routes,
) -> ReadEnd {
    loop {
        let read = ctx.read(input);
        input.forward_inspections(routes.to_writer);
        let message = match read {
            Ok(message) => message,
            Err(e) => return input.failed(e),
        };
        let step = match message {
            Message::Text(_) | Message::Binary(_) => {
                let charge = input.take_data(ctx, message.len());
                routes.deliver(message, charge)
            }
            control => {
                input.message_done();
                if control.is_pong() {
                    input.ponged(routes.to_writer);
                    input.forward_inspections(routes.to_writer);
                }
                routes.answer(control)
            }
        };
        match step {
            Ok(true) => {}
            // The writer has stopped (the server is closing this connection).
            Ok(false) => return ReadEnd::Done,
            Err(end) => return end,
        }
    }
}

impl Routes<'_> {
    /// Sends a data message where it goes. `Ok(false)`: the writer or the hub has
    /// stopped; `Err`: the client broke a limit and the connection fails.
    fn deliver(&mut self, message: Message, charge: Reservation) -> Result<bool, ReadEnd> {
        let counters = self.limits.counters;
        counters.messages_in.fetch_add(1, Ordering::Relaxed);
        match self.destination {
            Destination::Echo => self.echo(message, charge),
            Destination::Room { name, raw, .. } => {
                let (name, raw) = (name.clone(), *raw);
                self.publish(name, raw, message, charge)
            }
        }
    }

    /// Back to this connection's writer. Blocking send: if the client sends faster
    /// than it reads its echoes, the queue fills and we stop reading, and TCP slows
    /// the client down. A client that lets more bytes than its queue's share pile up
    /// is a slow consumer, as in a room.
    fn echo(&self, message: Message, charge: Reservation) -> Result<bool, ReadEnd> {
        if !self.limits.backlog.add(message.len()) {
            let counters = self.limits.counters;
            counters.slow_consumers.fetch_add(1, Ordering::Relaxed);
            return Err(ReadEnd::Fail(CloseReason::SlowConsumer));
        }
        let echo = Echo { message, charge };
        Ok(self
            .to_writer
            .send(Outgoing::Message(Box::new(echo)))
            .is_ok())
    }

    /// To the hub, for every member of the room. A room's messages cost every member:
    /// a client publishing faster than its allowance is closed (1008).
    fn publish(
        &mut self,
        room: String,
        raw: bool,
        message: Message,
        charge: Reservation,
    ) -> Result<bool, ReadEnd> {
        if !self.limits.rate.allow(Instant::now()) {
            let counters = self.limits.counters;
            counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            let per_second = self.limits.rate.per_second_limit();
            return Err(ReadEnd::Fail(CloseReason::TooFast { per_second }));
        }
        if !self.may_publish {
            // Refused, not failed: the connection stays, and keeps receiving.
            let refusal = Notice::Error(NOT_ALLOWED_HERE);
            return Ok(self
                .to_writer
                .send(Outgoing::Notice(Box::new(refusal)))
                .is_ok());
        }
        // An enveloped client may name its message (`cid:<id>` line) so the room can
        // drop a resent copy; raw clients are never parsed.
        let (cid, message) = if raw {
            (None, message)
        } else {
            envelope::split_client_id(message)
        };
        let tag = Tag {
            cid,
            sender: self.sender.clone(),
        };
        Ok(self.hub.post(room, (message, charge), tag, Some(self.id)))
    }

    /// Answers a control frame. RFC 6455 §5.5.2: a ping gets a pong with the same
    /// payload; it takes its turn in the writer's queue, so it never splits a message
    /// on the wire. A pong needs no answer (reading it reset our read deadline). A
    /// close ends the loop: the writer answers it.
    fn answer(&self, control: Message) -> Result<bool, ReadEnd> {
        match control {
            Message::Ping(payload) => Ok(self
                .to_writer
                .send(Outgoing::Pong(Box::new(payload)))
                .is_ok()),
            Message::Close(frame) => Err(ReadEnd::PeerClosed(frame)),
            // Pongs; raw frames are never returned by read().
            _ => Ok(true),
        }
    }
}

/// Maps a read error to how the connection ends, with the close code RFC 6455 §7.4.1
/// prescribes for each kind of fault.
pub(super) fn classify(error: WsError) -> ReadEnd {
    let fail = ReadEnd::Fail;
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
        WsError::Protocol(e) => fail(CloseReason::Protocol(e.to_string())),
        WsError::Utf8(_) => fail(CloseReason::InvalidUtf8),
        WsError::Capacity(CapacityError::MessageTooLong { max_size, .. }) => fail(
            CloseReason::TooBig(format!("message larger than {max_size} bytes")),
        ),
        WsError::Capacity(e) => fail(CloseReason::TooBig(e.to_string())),
        WsError::AttackAttempt => fail(CloseReason::AttackAttempt),
        e => fail(CloseReason::Internal(e.to_string())),
    }
}
