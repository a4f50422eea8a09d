//! Server-Sent Events: `GET /events/<room>`, the fallback for browsers that cannot
//! open a WebSocket (a proxy in the way). The connection's own thread streams the
//! room, joined to the hub as an enveloped member like a WebSocket.
//!
//! We write the response head ourselves and send each batch of events as HTTP chunks
//! (`Transfer-Encoding: chunked`), flushed at once. Chunking also lets the stream
//! *end* (a zero-length chunk) on a connection the browser keeps alive.
//!
//! Both SSE and long polling write through a [`BoundedBody`] (`bounded_body.rs`), so
//! a stream or poll never holds more than a bounded piece of a replay, however large
//! the replay and however slowly the client reads.

use std::fmt::{self, Write as _};
use std::io;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use crate::context::Shared;
use crate::http::bounded_body::BoundedBody;
use crate::http::poll::Admitted;
use crate::http::reply::{Reply, close_gently};
use crate::http::response_head::{Patience, ResponseFraming, response_head};
use crate::http::{Exchange, browser};
use crate::hub::{CloseSignal, Outgoing, QueueEnd, Queued};
use crate::net::limit::WRITE_TIMEOUT;
use crate::net::socket::Socket;
use crate::protocol::close::CloseReason;
use crate::protocol::{control, envelope};
use crate::room::RoomMessage;

/// A comment line this often keeps proxies and load balancers from closing a quiet
/// stream (many close after 30–60 s of silence).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// At shutdown, owed events are written until this long before the drain deadline;
/// the rest of the time is for `event: close` and the end of the body.
pub const CLOSE_RESERVE: Duration = Duration::from_millis(500);

/// How long the browser waits before reconnecting a dropped stream (`retry:`), in ms.
pub const RETRY_MILLIS: u64 = 2000;

/// `GET /events/<room>`: checks the room, the token and the connection limit, then
/// streams on this thread until the client goes away or the server shuts down.
pub fn start(exchange: Exchange) {
    let admitted = match crate::http::poll::admit(&exchange) {
        Ok(admitted) => admitted,
        Err(reply) => return exchange.answer(reply),
    };
    let cors = browser::cors_headers(&exchange.head, &exchange.shared.policy);
    exchange.log(200);
    let Exchange { conn, shared, .. } = exchange;
    let Some(socket) = conn.finish() else {
        return; // cut off meanwhile (shutdown, or too many requests in progress)
    };
    serve(&socket, &admitted, shared, &cors);
    close_gently(&socket);
}

/// Streams `room` to the client until it goes away or the server shuts down.
/// `admitted` holds its place under `--max-connections` until then.
fn serve(socket: &Socket, admitted: &Admitted, shared: &Shared, cors: &[(&str, String)]) {
    let (room, caller) = (admitted.room.as_str(), &admitted.caller);
    let joining = shared.join(room, admitted.resume.clone(), (caller.person(), true));
    let Some(member) = joining else {
        Reply::text(503, "server shutting down").send(socket, false);
        return;
    };
    let id = member.membership.id();
    // A signed token's stream ends when the token expires (4001).
    if let Some(valid) = caller.valid_for() {
        member.close.expire_at(Instant::now() + valid);
    }
    let _gauge = shared.counters.sse_streams.enter();
    log::debug!("SSE stream {id} opened for room '{room}'");

    let head = response_head(
        "Content-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n\
         X-Accel-Buffering: no\r\n",
        cors,
    );
    // Each write must make progress within WRITE_TIMEOUT: a client that stops reading
    // ends its own stream instead of holding this thread.
    let mut body = BoundedBody::new(
        socket,
        head,
        ResponseFraming::Chunked,
        Patience::EachWrite(WRITE_TIMEOUT),
    )
    .charged_to(&shared.budget);
    if let Err(e) = stream_events(&mut body, &member.queue, &member.close) {
        log::debug!("SSE stream {id} ended: {e}");
    }
}

/// The stream itself: `retry:`, then every queued item as events, a batch at a time,
/// with a keep-alive comment in quiet times. Ends the body (the zero-length chunk)
/// when the hub lets go of the queue or the server asks for a close.
fn stream_events(body: &mut BoundedBody, queue: &QueueEnd, close: &CloseSignal) -> io::Result<()> {
    body.write(|out| write!(out, "retry: {RETRY_MILLIS}\n\n"))?;
    body.end_batch()?;
    loop {
        // Wake for the keep-alive, or when the client's signed token expires.
        let keep_alive = Instant::now() + KEEP_ALIVE;
        let wake = close.expiry().map_or(keep_alive, |at| at.min(keep_alive));
        let item = match queue.recv_deadline(wake) {
            Ok(item) => item,
            Err(RecvTimeoutError::Timeout) if close.expired(Instant::now()) => {
                return close_stream(body, close);
            }
            Err(RecvTimeoutError::Timeout) => {
                body.write(|out| out.write_str(": keep-alive\n\n"))?;
                body.end_batch()?;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // This item and whatever else is already queued go out as one batch: one
        // chunk, or several of at most BODY_BOUND bytes for a long replay.
        for item in std::iter::once(item).chain(queue.try_iter()) {
            match close.queued() {
                None => body.write(|out| write_event(out, item))?,
                // A slow consumer (or a user disconnected, a room deleted): what is
                // queued is dropped, the client resumes later.
                Some(Queued::Drop) => return close_stream(body, close),
                // A shutdown: every queued message was accepted and acknowledged to its
                // publisher, so the client is owed it; the hub queues nothing more.
                Some(Queued::SendBy(deadline)) => {
                    let owed = std::iter::once(item).chain(queue.try_iter());
                    for item in owed.take_while(|_| Instant::now() + CLOSE_RESERVE < deadline) {
                        body.write(|out| write_event(out, item))?;
                    }
                    return close_stream(body, close);
                }
            }
        }
        body.end_batch()?;
    }
    body.finish()
}

/// Tells the client the server is closing the stream and why, with the close code a
/// WebSocket would get (`event: close`), and ends the body.
fn close_stream(body: &mut BoundedBody, close: &CloseSignal) -> io::Result<()> {
    let reason = close.requested().unwrap_or(&CloseReason::GoingAway);
    let data = control::close_json(u16::from(reason.code()), &reason.reason());
    body.write(|out| write!(out, "event: close\ndata: {data}\n\n"))?;
    body.finish()
}

/// One queued item as SSE events (see docs/PROTOCOL.md).
fn write_event(out: &mut impl fmt::Write, item: Outgoing) -> fmt::Result {
    match item {
        Outgoing::Room(message) => write_message(out, &message),
        Outgoing::Joined(joined) => {
            let plan = &joined.plan;
            write!(out, "event: welcome\ndata: {}\n\n", joined.welcome_json())?;
            if let Some((from, to)) = plan.gap {
                write!(out, "event: gap\ndata: {}\n\n", control::gap_json(from, to))?;
            }
            plan.replay
                .iter()
                .try_for_each(|message| write_message(out, message))
        }
        Outgoing::Notice(notice) => {
            write!(out, "event: {}\ndata: {}\n\n", notice.kind(), notice.json())
        }
        _ => Ok(()),
    }
}

/// One room message as an event. Its JSON is one line: newlines inside the payload
/// are escaped, so the event's data arrives byte for byte. It is written piece by
/// piece, never held whole.
fn write_message(out: &mut impl fmt::Write, message: &RoomMessage) -> fmt::Result {
    let kind = if message.raw.is_text() {
        "message"
    } else {
        "binary"
    };
    write!(
        out,
        "id: {}\nevent: {kind}\ndata: ",
        envelope::event_id(message.epoch, message.id)
    )?;
    envelope::write_message_json(out, message.header(), &message.raw)?;
    out.write_str("\n\n")
}
