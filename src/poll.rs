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

use tiny_http::Request;

use crate::envelope::{format_epoch, message_json};
use crate::hub::Outgoing;
use crate::json::JsonObject;
use crate::limit::Slot;
use crate::reply::Reply;
use crate::room::{Resume, RoomMessage};
use crate::server::Shared;

/// What a poll answers with.
#[derive(Default)]
struct Answer {
    epoch: u64,
    last_id: u64,
    epoch_changed: bool,
    gap: Option<(u64, u64)>,
    messages: Vec<Arc<RoomMessage>>,
}

/// Waits for messages of `room` after `resume` and answers the request with them.
pub fn serve(request: Request, room: String, resume: Resume, shared: Arc<Shared>, _slot: Slot) {
    let Some(member) = shared.join(&room, resume) else {
        return; // shutting down; dropping the request answers 500
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
    let body = json.finish();
    Reply::json(200, body).no_store().send(request);
}
