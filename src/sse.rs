//! Server-Sent Events: `GET /events/<room>`, the fallback for browsers that cannot
//! open a WebSocket (a proxy in the way). One thread per stream, like a WebSocket
//! connection, joined to the hub as an enveloped member.
//!
//! tiny_http buffers a streamed body 8 KiB at a time and never flushes it, so small
//! events would stall; we take the raw writer (`Request::into_writer`), write the
//! response head ourselves, and send each batch of events as one HTTP chunk
//! (`Transfer-Encoding: chunked`), flushed at once. Chunking also lets the stream
//! *end* (a zero-length chunk) on a connection the browser keeps alive.

use std::io::{self, Write};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::RecvTimeoutError;
use tiny_http::Request;

use crate::envelope;
use crate::hub::Outgoing;
use crate::limit::Slot;
use crate::room::Resume;
use crate::server::Shared;
use crate::ws::connection::notice_json;

/// A comment line this often keeps proxies and load balancers from closing a quiet
/// stream (many close after 30–60 s of silence).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long the browser waits before reconnecting a dropped stream (`retry:`), in ms.
pub const RETRY_MILLIS: u64 = 2000;

/// Streams `room` to the client until it goes away or the server shuts down.
pub fn serve(request: Request, room: String, resume: Resume, shared: Arc<Shared>, _slot: Slot) {
    let Some(member) = shared.join(&room, resume) else {
        return; // shutting down; dropping the request answers 500
    };
    let (id, queue, close) = (member.id, &member.queue, &member.close);
    let _gauge = shared.counters.sse_streams.enter();
    log::debug!("SSE stream {id} opened for room '{room}'");

    let mut out = request.into_writer();
    let result = (|| -> io::Result<()> {
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n\
             X-Accel-Buffering: no\r\nTransfer-Encoding: chunked\r\n\r\n"
        )?;
        let mut batch = format!("retry: {RETRY_MILLIS}\n\n").into_bytes();
        send_chunk(&mut out, &mut batch)?;
        loop {
            let item = match queue.recv_timeout(KEEP_ALIVE) {
                Ok(item) => item,
                Err(RecvTimeoutError::Timeout) => {
                    batch.extend_from_slice(b": keep-alive\n\n");
                    send_chunk(&mut out, &mut batch)?;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            // This item and whatever else is already queued go out as one chunk.
            for item in std::iter::once(item).chain(queue.try_iter()) {
                if close.requested().is_some() {
                    batch.extend_from_slice(b"event: close\ndata: server closing this stream\n\n");
                    send_chunk(&mut out, &mut batch)?;
                    return end_stream(&mut out);
                }
                write_event(&mut batch, item)?;
            }
            send_chunk(&mut out, &mut batch)?;
        }
        end_stream(&mut out)
    })();
    if let Err(e) = result {
        log::debug!("SSE stream {id} ended: {e}");
    }
}

/// Sends `batch` as one HTTP chunk (`<size in hex>\r\n<bytes>\r\n`), flushes, and
/// empties it.
fn send_chunk(out: &mut impl Write, batch: &mut Vec<u8>) -> io::Result<()> {
    write!(out, "{:x}\r\n", batch.len())?;
    out.write_all(batch)?;
    out.write_all(b"\r\n")?;
    out.flush()?;
    batch.clear();
    Ok(())
}

/// The zero-length chunk: the response is complete.
fn end_stream(out: &mut impl Write) -> io::Result<()> {
    out.write_all(b"0\r\n\r\n")?;
    out.flush()
}

/// One queued item as SSE events (see docs/PROTOCOL.md).
fn write_event(out: &mut impl Write, item: Outgoing) -> io::Result<()> {
    match item {
        Outgoing::Room(message) => write_message(out, &message),
        Outgoing::Joined(joined) => {
            let plan = &joined.plan;
            write!(
                out,
                "event: welcome\ndata: {}\n\n",
                envelope::welcome_json(&joined.room, plan)
            )?;
            if let Some((from, to)) = plan.gap {
                write!(
                    out,
                    "event: gap\ndata: {}\n\n",
                    envelope::gap_json(from, to)
                )?;
            }
            plan.replay
                .iter()
                .try_for_each(|message| write_message(out, message))
        }
        Outgoing::Notice(notice) => {
            let kind = if matches!(*notice, crate::hub::Notice::Members(_)) {
                "members"
            } else {
                "ack"
            };
            write!(out, "event: {kind}\ndata: {}\n\n", notice_json(&notice))
        }
        _ => Ok(()),
    }
}

fn write_message(out: &mut impl Write, message: &crate::room::RoomMessage) -> io::Result<()> {
    let kind = if message.raw.is_text() {
        "message"
    } else {
        "binary"
    };
    // The JSON is one line: newlines inside the payload are escaped, so the event's
    // data arrives byte for byte.
    write!(
        out,
        "id: {}\nevent: {kind}\ndata: {}\n\n",
        envelope::event_id(message),
        envelope::message_json(message)
    )
}
