//! The writer half of a connection: the only code that writes to its socket. It sends
//! what is queued (messages, catch-ups, notices, pongs, the close frame) a batch at a
//! time, pings on schedule, and gives every message one deadline however the peer
//! paces its reading.

use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tungstenite::error::Error as WsError;
use tungstenite::protocol::WebSocketContext;
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
use tungstenite::{Bytes, Message};

use super::inbox::{Inbox, Next, Work};
use super::write_half::WriteHalf;
use crate::hub::{ConnId, Counters, Outgoing, Queued};
use crate::protocol::control;

/// The writer collects frames up to this size before a `write` system call; a
/// `flush` after each batch sends whatever is left.
pub const WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// Messages longer than this go out in fragments of this size (RFC 6455 §5.4).
/// tungstenite copies each frame it sends into the connection's write buffer, which
/// keeps its largest size for good: one 1 MiB frame would leave every connection that
/// was sent one holding 1 MiB. In fragments, the buffer stays near this size. (16 KiB
/// fragments cost a tenth of the 64 KiB echo benchmark in system calls.)
pub const FRAGMENT_BYTES: usize = 32 * 1024;

/// Most queued items the writer handles before it flushes and checks its clock.
pub(super) const MAX_BATCH: usize = 64;

/// The writer thread: the only code that writes to this connection's socket.
pub(super) fn write_loop(
    id: ConnId,
    mut ctx: Box<WebSocketContext>,
    mut out: WriteHalf,
    inbox: &Inbox,
    counters: &Counters,
    ping_interval: Duration,
    raw: bool,
) -> Option<u16> {
    let mut next_ping = Instant::now() + ping_interval;
    out.started_writing(&mut ctx);
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
        if !matches!(next, Next::Continue) {
            break Ok(next);
        }
        // Heartbeat: ping on schedule, even while data flows, so a peer that only
        // receives still answers with pongs and its reader never times out.
        if Instant::now() >= next_ping {
            next_ping = Instant::now() + ping_interval;
            if let Err(e) = ping(&mut ctx, &mut out) {
                break Err(e);
            }
        }
        if let Err(e) = out.flush_all(&mut ctx) {
            break Err(e);
        }
    };
    end_writing(id, ctx, out, result)
}

/// Queues a ping (RFC 6455 §5.5.2), noting when for the round trip.
fn ping(ctx: &mut WebSocketContext, out: &mut WriteHalf) -> Result<(), WsError> {
    out.begin();
    out.figures.pinged();
    ctx.write(out, Message::Ping(Bytes::new()))
}

/// Writes `first` and what is already queued behind it (up to MAX_BATCH items) into
/// tungstenite's buffer, for the caller to flush once: one system call for a burst of
/// messages instead of one per message. Stops at an item that ends the connection,
/// and where the server's close request says to drop the rest.
pub(super) fn write_batch(
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
pub(super) fn end_writing(
    id: ConnId,
    mut ctx: Box<WebSocketContext>,
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
            out.announce_close(&mut ctx, frame.as_ref());
            match ctx.close(&mut out, frame) {
                // (`ConnectionClosed` would mean the close handshake is over: sent too.)
                Ok(()) | Err(WsError::ConnectionClosed) => {
                    let _ = out.socket.shutdown(Shutdown::Write);
                    Some(code)
                }
                Err(e) => {
                    // The peer takes no data (or the shutdown's time is up): it cannot
                    // answer a close it never gets, so wake the reader too.
                    log::debug!("connection {id}: close frame {code} not sent: {e}");
                    let _ = out.socket.shutdown(Shutdown::Both);
                    None
                }
            }
        }
        Ok(_) => {
            let _ = out.socket.shutdown(Shutdown::Both);
            None
        }
        Err(e) => {
            log::debug!("connection {id}: write failed: {e}");
            // Wake the reader too: nobody can write to this peer any more.
            let _ = out.socket.shutdown(Shutdown::Both);
            None
        }
    }
}

/// Writes (into tungstenite's buffer) one queued item. `raw` connections get room
/// payloads as published and no control frames; the others get the envelope.
pub(super) fn write_one(
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
            ctx.write(out, Message::text(joined.welcome_json()))?;
            if let Some((from, to)) = plan.gap {
                ctx.write(out, Message::text(control::gap_json(from, to)))?;
            }
            for message in &plan.replay {
                out.begin();
                write_data(ctx, out, message.framed.clone(), counters)?;
            }
        }
        Outgoing::Notice(notice) if !raw => ctx.write(out, Message::text(notice.json()))?,
        Outgoing::Joined(_) | Outgoing::Notice(_) => {}
        Outgoing::Pong(payload) => ctx.write(out, Message::Pong(*payload))?,
        Outgoing::Inspect(event) => ctx.write(out, Message::text(event.0))?,
        Outgoing::Close(frame) => return Ok(Next::Close(*frame)),
        Outgoing::Wake => {}
        Outgoing::Stop => return Ok(Next::Stop),
    }
    Ok(Next::Continue)
}

/// Buffers one data message and counts it. A long one goes out in fragments.
pub(super) fn write_data(
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
    out.figures.messages_out.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Sends one message as a first frame of its type and continuation frames of
/// [`FRAGMENT_BYTES`] each, the last one marked final (RFC 6455 §5.4). The pieces
/// are slices of the one shared buffer: nothing is copied but into the socket.
pub(super) fn write_fragments(
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
