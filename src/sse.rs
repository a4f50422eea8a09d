//! Server-Sent Events: `GET /events/<room>`, the fallback for browsers that cannot
//! open a WebSocket (a proxy in the way). The connection's own thread streams the
//! room, joined to the hub as an enveloped member like a WebSocket.
//!
//! We write the response head ourselves and send each batch of events as one HTTP
//! chunk (`Transfer-Encoding: chunked`), flushed at once. Chunking also lets the
//! stream *end* (a zero-length chunk) on a connection the browser keeps alive.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use crate::envelope;
use crate::http::reply::{Reply, close_gently, write_all_by};
use crate::http::{Exchange, browser};
use crate::hub::Outgoing;
use crate::room::Resume;
use crate::server::Shared;
use crate::stream::Stream;
use crate::ws::connection::{WRITE_TIMEOUT, notice_json};

/// A comment line this often keeps proxies and load balancers from closing a quiet
/// stream (many close after 30–60 s of silence).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long the browser waits before reconnecting a dropped stream (`retry:`), in ms.
pub const RETRY_MILLIS: u64 = 2000;

/// `GET /events/<room>`: checks the room, the token and the connection limit, then
/// streams on this thread until the client goes away or the server shuts down.
pub fn start(exchange: Exchange) {
    let admitted = match crate::poll::admit(&exchange) {
        Ok(admitted) => admitted,
        Err(reply) => return exchange.answer(reply),
    };
    let cors = browser::cors_headers(&exchange.head, &exchange.shared.policy);
    exchange.log(200);
    let Exchange { conn, shared, .. } = exchange;
    let Some(stream) = conn.finish() else {
        return; // cut off meanwhile (shutdown, or too many requests in progress)
    };
    let _slot = admitted.slot;
    serve(&stream, &admitted.room, admitted.resume, shared, &cors);
    close_gently(&stream);
}

/// Streams `room` to the client until it goes away or the server shuts down.
fn serve(stream: &Stream, room: &str, resume: Resume, shared: &Shared, cors: &[(&str, String)]) {
    let Some(member) = shared.join(room, resume) else {
        Reply::text(503, "server shutting down").send(stream, false);
        return;
    };
    let (id, queue, close) = (member.id, &member.queue, &member.close);
    let _gauge = shared.counters.sse_streams.enter();
    log::debug!("SSE stream {id} opened for room '{room}'");

    let mut out = ChunkWriter { stream };
    let result = (|| -> io::Result<()> {
        let mut head = String::from(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
             Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n\
             X-Content-Type-Options: nosniff\r\nTransfer-Encoding: chunked\r\n",
        );
        for (name, value) in cors {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("Connection: close\r\n\r\n");
        out.send(head.as_bytes())?;
        let mut batch = format!("retry: {RETRY_MILLIS}\n\n").into_bytes();
        out.chunk(&mut batch)?;
        loop {
            let item = match queue.recv_timeout(KEEP_ALIVE) {
                Ok(item) => item,
                Err(RecvTimeoutError::Timeout) => {
                    batch.extend_from_slice(b": keep-alive\n\n");
                    out.chunk(&mut batch)?;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            // This item and whatever else is already queued go out as one chunk.
            for item in std::iter::once(item).chain(queue.try_iter()) {
                if close.requested().is_some() {
                    batch.extend_from_slice(b"event: close\ndata: server closing this stream\n\n");
                    out.chunk(&mut batch)?;
                    return out.send(b"0\r\n\r\n");
                }
                write_event(&mut batch, item)?;
            }
            out.chunk(&mut batch)?;
        }
        // The zero-length chunk: the response is complete.
        out.send(b"0\r\n\r\n")
    })();
    if let Err(e) = result {
        log::debug!("SSE stream {id} ended: {e}");
    }
}

/// Writes to the client, each write bounded by WRITE_TIMEOUT: a client that stops
/// reading ends its stream instead of holding this thread.
struct ChunkWriter<'a> {
    stream: &'a Stream,
}

impl ChunkWriter<'_> {
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        write_all_by(self.stream, bytes, Instant::now() + WRITE_TIMEOUT)
    }

    /// Sends `batch` as one HTTP chunk (`<size in hex>\r\n<bytes>\r\n`) and empties it.
    fn chunk(&mut self, batch: &mut Vec<u8>) -> io::Result<()> {
        let mut framed = format!("{:x}\r\n", batch.len()).into_bytes();
        framed.extend_from_slice(batch);
        framed.extend_from_slice(b"\r\n");
        batch.clear();
        self.send(&framed)
    }
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
