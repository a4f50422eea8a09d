//! How a connection ends: the close frame for how the reader's loop ended, the
//! linger that keeps reading until the peer has seen our close frame, and the close
//! code the writer hands back to the reader when it is done.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use tungstenite::Message;
use tungstenite::error::{Error as WsError, ProtocolError};
use tungstenite::protocol::WebSocketContext;

use super::read_half::ReadHalf;
use super::reader::ReadEnd;
use crate::hub::{ConnId, Outgoing};
use crate::net::one_shot::OneShot;
use crate::net::socket::Socket;
use crate::protocol::close::CloseReason;

/// After we fail a connection we keep reading (and discarding) this long, so the
/// peer can read our close frame before the socket closes. Closing a socket with
/// unread input makes the kernel send a reset, which can destroy the close frame.
pub const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// The writer's side of its last word to the reader: the code of the close frame it
/// sent (`None`: it sent none). Reported when this is dropped, so also when the
/// writer panics, and the reader never waits forever. Not a channel: every
/// connection holds one all its life, and a channel's buffer and padding cost more
/// than half a KiB (bench/ANALYSIS.md, idle memory).
pub(super) struct LastWord {
    slot: Arc<OneShot<Option<u16>>>,
    /// The code to report.
    pub(super) code: Option<u16>,
}

/// The reader's side: waits for the writer's [`LastWord`].
pub(super) struct AwaitedWord(Arc<OneShot<Option<u16>>>);

/// Both sides of a writer's last word.
pub(super) fn last_word() -> (LastWord, AwaitedWord) {
    let slot = Arc::new(OneShot::default());
    let awaited = AwaitedWord(Arc::clone(&slot));
    (LastWord { slot, code: None }, awaited)
}

impl Drop for LastWord {
    fn drop(&mut self) {
        self.slot.put(self.code);
    }
}

impl AwaitedWord {
    /// Waits until the writer has finished, and returns the close code it sent.
    pub(super) fn wait(self) -> Option<u16> {
        self.0.take()
    }
}

/// Tells the writer how the connection ends.
pub(super) fn finish(
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
        ReadEnd::Fail(reason) => {
            log::debug!(
                "connection {id}: failing with {} ({})",
                u16::from(reason.code()),
                reason.reason()
            );
            close_with(reason, to_writer, ctx, input);
        }
    }
}

/// We close the connection for `reason`: the writer sends the close frame, and this
/// thread keeps reading until the peer has seen it and hung up (see [`linger`]).
pub(super) fn close_with(
    reason: CloseReason,
    to_writer: &Sender<Outgoing>,
    ctx: &mut WebSocketContext,
    input: &mut ReadHalf,
) {
    let frame = Some(reason.frame());
    if to_writer.send(Outgoing::Close(Box::new(frame))).is_ok() {
        linger(ctx, input);
    }
}

/// After failing a connection: keep reading (and ignoring) frames until the peer's
/// close reply arrives, the peer hangs up, a frame is unreadable, or CLOSE_LINGER
/// passes. Then our close frame has surely reached the peer before the socket closes.
pub(super) fn linger(ctx: &mut WebSocketContext, input: &mut ReadHalf) {
    let deadline = Instant::now() + CLOSE_LINGER;
    while let Some(left) = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
    {
        if input.socket.set_read_timeout(Some(left)).is_err() {
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
            Err(_) => return drain(&input.socket, deadline),
        }
    }
}

/// Reads and discards raw bytes until end of stream, an error, `deadline`, or what
/// looks like the peer's close frame: the bytes so far end with one complete masked
/// close frame (`0x88`, `0x80 | n`, 4 mask bytes, n bytes), as a client answering our
/// close sends. (tungstenite cannot help here: after a bad frame header it keeps
/// failing on that same header.)
pub(super) fn drain(socket: &Socket, deadline: Instant) {
    let mut sink = [0u8; 1024];
    let mut tail: Vec<u8> = Vec::with_capacity(2 * MAX_CLOSE_FRAME);
    while let Some(left) = deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
    {
        if socket.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&*socket).read(&mut sink) {
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
pub(super) const MAX_CLOSE_FRAME: usize = 2 + 4 + 125;

pub(super) fn ends_with_close_frame(bytes: &[u8]) -> bool {
    (0..=125usize).any(|n| {
        bytes.len() >= 6 + n && {
            let frame = &bytes[bytes.len() - 6 - n..];
            frame[0] == 0x88 && frame[1] == 0x80 | n as u8
        }
    })
}
