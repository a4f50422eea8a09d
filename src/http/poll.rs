//! Long polling: `GET /poll/<room>?since=<id>&epoch=<epoch>`, the last-resort
//! transport. Answers at once with what the client missed, or waits up to
//! `--poll-timeout` for the next message. The client loops.
//!
//! A waiting poll is simply a short-lived member of the room: it joins with its
//! `since`, takes the catch-up (or the first live message), and leaves. The hub's
//! atomic join-and-replay therefore gives polling the same guarantee as WebSocket
//! resume: nothing lost, nothing twice.
//!
//! The answer is written as it is produced, through a bounded buffer
//! ([`BoundedBody`]): a poll of a whole history costs the server at most
//! [`BODY_BOUND`](crate::http::bounded_body::BODY_BOUND) bytes of JSON at a time, even when the client
//! never reads it. Short answers still go out whole with a `Content-Length`; longer
//! ones are chunked (HTTP/1.1) or end with the connection (HTTP/1.0).

use std::fmt;
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::budget::Budget;
use crate::context::Shared;
use crate::http::bounded_body::BoundedBody;
use crate::http::endpoints::check_rights;
use crate::http::reply::{ANSWER_TIMEOUT, Reply, close_gently};
use crate::http::response_head::{Patience, ResponseFraming, response_head};
use crate::http::{Exchange, browser};
use crate::hub::Outgoing;
use crate::net::limit::Slot;
use crate::net::socket::Socket;
use crate::protocol::close::CloseReason;
use crate::protocol::control;
use crate::protocol::envelope::{self, format_epoch, write_message_json};
use crate::protocol::json::JsonObject;
use crate::protocol::person::Person;
use crate::protocol::rights::{Action, Caller};
use crate::protocol::url::{BAD_ROOM, room_in_path};
use crate::room::{Resume, RoomMessage};

/// An SSE stream or long poll that may go ahead: its room, where to start, and the
/// connection slot it holds.
pub struct Admitted {
    /// The room.
    pub room: String,
    /// Where to start in its history.
    pub resume: Resume,
    /// Its place under `--max-connections`.
    pub slot: Slot,
    /// Who it is, as its token (and `?name=`) showed.
    pub caller: Caller,
}

/// The checks shared by `/events/<room>` and `/poll/<room>`: a valid room, the token,
/// and a free connection slot.
///
/// # Errors
/// The answer to refuse with (404, 401, 503).
pub fn admit(exchange: &Exchange) -> Result<Admitted, Reply> {
    let (head, shared) = (&exchange.head, exchange.shared);
    let prefix = if head.path().starts_with("/events/") {
        "/events/"
    } else {
        "/poll/"
    };
    let Some(room) = room_in_path(head.path(), prefix) else {
        return Err(Reply::text(404, BAD_ROOM));
    };
    let caller = check_rights(head, shared, room, Action::Join)?;
    let Some(slot) = shared.limit.try_acquire() else {
        // The limit in force: --max-connections as lowered at start-up to what the
        // machine allows.
        let full = format!("server full: {} connections open", shared.limit.max());
        return Err(Reply::text(503, &full));
    };
    if let Some(busy) = shared.memory_refusal() {
        return Err(Reply::text(503, busy));
    }
    // The browser's automatic SSE reconnect sends Last-Event-ID (`<epoch>:<id>`) and
    // reuses the original URL, so the header wins over `?since=`.
    let resume = match head
        .header("Last-Event-ID")
        .and_then(envelope::parse_event_id)
    {
        Some((epoch, id)) => Resume::Since {
            id,
            epoch: Some(epoch),
        },
        None => Resume::from_query(head.query()),
    };
    Ok(Admitted {
        room: room.to_string(),
        resume,
        slot,
        caller,
    })
}

/// `GET /poll/<room>`: admitted, then answered on this thread.
pub fn start(exchange: Exchange) {
    let admitted = match admit(&exchange) {
        Ok(admitted) => admitted,
        Err(reply) => return exchange.answer(reply),
    };
    let cors = browser::cors_headers(&exchange.head, &exchange.shared.policy);
    exchange.log(200);
    let head_only = exchange.head.is_head();
    let framing = ResponseFraming::for_version(exchange.head.minor_version);
    // A waiting poll is long-lived: it leaves the registry of requests in progress,
    // whose ceiling cuts off the oldest.
    let Some(socket) = exchange.conn.finish() else {
        return;
    };
    let person = admitted.caller.person();
    let answer = wait((admitted.room, admitted.resume, person), exchange.shared);
    drop(admitted.slot);
    let Some(answer) = answer else {
        let refusal = Reply::text(503, "server shutting down").headers(cors);
        return refusal.send(&socket, head_only);
    };
    let budget = &exchange.shared.budget;
    match send(&socket, &answer, &cors, framing, head_only, budget) {
        Ok(()) => close_gently(&socket),
        Err(e) => log::debug!("poll client went away before its answer was sent: {e}"),
    }
}

/// What a poll answers with: the messages themselves are shared with the room's
/// history (an `Arc` each), and only turned into JSON as the answer is written.
#[derive(Default)]
struct Answer {
    epoch: u64,
    last_id: u64,
    epoch_changed: bool,
    gap: Option<(u64, u64)>,
    messages: Vec<Arc<RoomMessage>>,
    /// Why the server ended the wait, when the client must know (4003, 4004).
    closed: Option<CloseReason>,
}

/// Waits for messages of `room` after `resume`: the catch-up, or the first live
/// message, or nothing by `--poll-timeout`. `None` when the server is shutting down.
fn wait(
    (room, resume, person): (String, Resume, Option<Arc<Person>>),
    shared: &Shared,
) -> Option<Answer> {
    let member = shared.join(&room, resume, (person, false))?;
    let (queue, close) = (&member.queue, &member.close);
    let _gauge = shared.counters.polls_waiting.enter();

    let deadline = Instant::now() + shared.config.poll_timeout;
    let mut answer = Answer::default();
    while let Ok(item) = queue.recv_deadline(deadline) {
        // Take this item and anything else already queued; stop once we have messages.
        for item in std::iter::once(item).chain(queue.try_iter()) {
            match item {
                Outgoing::Joined(joined) => {
                    let plan = joined.plan;
                    (
                        answer.epoch,
                        answer.last_id,
                        answer.epoch_changed,
                        answer.gap,
                    ) = (plan.epoch, plan.last_id, plan.epoch_changed, plan.gap);
                    answer.messages.extend(plan.replay);
                }
                Outgoing::Room(message) => {
                    answer.last_id = answer.last_id.max(message.id);
                    answer.messages.push(message);
                }
                _ => {}
            }
        }
        if !answer.messages.is_empty() || answer.gap.is_some() || close.requested().is_some() {
            break;
        }
    }
    // The operator disconnected its user or deleted its room: the client is told.
    answer.closed = close
        .requested()
        .filter(|r| matches!(r, CloseReason::Disconnected | CloseReason::RoomDeleted))
        .cloned();
    drop(member); // leave the room before answering
    shared
        .counters
        .messages_out
        .fetch_add(answer.messages.len() as u64, Ordering::Relaxed);
    Some(answer)
}

/// Writes the answer within [`ANSWER_TIMEOUT`], as it is produced: a short one whole
/// with its `Content-Length`, a long one (a large history, six times its size as
/// JSON when it is full of control characters) in pieces of at most
/// [`BODY_BOUND`](crate::http::bounded_body::BODY_BOUND) bytes, framed as `framing` says.
fn send(
    socket: &Socket,
    answer: &Answer,
    cors: &[(&str, String)],
    framing: ResponseFraming,
    head_only: bool,
    budget: &Arc<Budget>,
) -> io::Result<()> {
    let head = response_head(
        "Content-Type: application/json\r\nCache-Control: no-store\r\n",
        cors,
    );
    let patience = Patience::Until(Instant::now() + ANSWER_TIMEOUT);
    let mut body = BoundedBody::new(socket, head, framing, patience).charged_to(budget);
    if head_only {
        body = body.without_body();
    }
    body.write(|out| write_answer(out, answer))?;
    body.finish()
}

/// The answer as JSON (docs/PROTOCOL.md), one message after the other.
fn write_answer(out: &mut impl fmt::Write, answer: &Answer) -> fmt::Result {
    let mut json = JsonObject::new();
    json.string("epoch", &format_epoch(answer.epoch))
        .number("last_id", answer.last_id)
        .bool("epoch_changed", answer.epoch_changed);
    if let Some((from, to)) = answer.gap {
        json.raw(
            "gap",
            &JsonObject::new()
                .number("from", from)
                .number("to", to)
                .finish(),
        );
    }
    if let Some(reason) = &answer.closed {
        let code = u16::from(reason.code());
        json.raw("closed", &control::close_json(code, &reason.reason()));
    }
    out.write_str(&json.before_value("messages"))?;
    out.write_char('[')?;
    for (i, message) in answer.messages.iter().enumerate() {
        if i > 0 {
            out.write_char(',')?;
        }
        write_message_json(out, message.header(), &message.raw)?;
    }
    out.write_str("]}")
}
