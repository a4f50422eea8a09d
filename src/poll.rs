//! Long polling: `GET /poll/<room>?since=<id>&epoch=<epoch>`, the last-resort
//! transport. Answers at once with what the client missed, or waits up to
//! `--poll-timeout` for the next message. The client loops.
//!
//! A waiting poll is simply a short-lived member of the room: it joins with its
//! `since`, takes the catch-up (or the first live message), and leaves. The hub's
//! atomic join-and-replay therefore gives polling the same guarantee as WebSocket
//! resume: nothing lost, nothing twice.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::envelope::{self, format_epoch, message_json};
use crate::http::endpoints::request_token;
use crate::http::reply::Reply;
use crate::http::{Exchange, browser};
use crate::hub::Outgoing;
use crate::json::JsonObject;
use crate::limit::Slot;
use crate::room::{Resume, RoomMessage};
use crate::server::Shared;
use crate::url::room_in_path;
use crate::ws::handshake::resume_from_query;

/// An SSE stream or long poll that may go ahead: its room, where to start, and the
/// connection slot it holds.
pub struct Admitted {
    /// The room.
    pub room: String,
    /// Where to start in its history.
    pub resume: Resume,
    /// Its place under `--max-connections`.
    pub slot: Slot,
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
        return Err(Reply::text(
            404,
            "room names are 1-64 characters of A-Z a-z 0-9 _ -",
        ));
    };
    if !shared.policy.token_ok(request_token(head).as_deref()) {
        return Err(Reply::text(401, "missing or wrong token"));
    }
    let Some(slot) = shared.limit.try_acquire() else {
        let full = format!(
            "server full: {} connections open",
            shared.config.max_connections
        );
        return Err(Reply::text(503, &full));
    };
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
        None => resume_from_query(head.query()),
    };
    Ok(Admitted {
        room: room.to_string(),
        resume,
        slot,
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
    // A waiting poll is long-lived: it leaves the registry of requests in progress,
    // whose ceiling cuts off the oldest.
    let Some(stream) = exchange.conn.finish() else {
        return;
    };
    let reply = serve(admitted.room, admitted.resume, exchange.shared).headers(cors);
    drop(admitted.slot);
    reply.send(&stream, head_only);
}

/// What a poll answers with.
#[derive(Default)]
struct Answer {
    epoch: u64,
    last_id: u64,
    epoch_changed: bool,
    gap: Option<(u64, u64)>,
    messages: Vec<Arc<RoomMessage>>,
}

/// Waits for messages of `room` after `resume` and builds the answer with them.
fn serve(room: String, resume: Resume, shared: &Shared) -> Reply {
    let Some(member) = shared.join(&room, resume) else {
        return Reply::text(503, "server shutting down");
    };
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
    drop(member); // leave the room before answering
    shared
        .counters
        .messages_out
        .fetch_add(answer.messages.len() as u64, Ordering::Relaxed);

    let mut messages = String::from("[");
    for (i, message) in answer.messages.iter().enumerate() {
        if i > 0 {
            messages.push(',');
        }
        messages.push_str(&message_json(message));
    }
    messages.push(']');
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
    json.raw("messages", &messages);
    Reply::json(200, json.finish()).no_store()
}
