//! Publishing over HTTP: `POST /publish/<room>` (anyone the room's rights allow), and
//! `POST /publish?room=a&room=b` (the operator: one message into several rooms).
//!
//! The body becomes one message, text if it is valid UTF-8 and binary otherwise. Its
//! declared length is checked before any of it is read, all of it must arrive within
//! `--request-timeout`, and its bytes are charged to the memory budget as they come.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tungstenite::Message;

use super::body::{self, BodyError};
use super::endpoints::{check_rights, unanswered};
use super::head::Head;
use super::operator::check_operator;
use super::reply::{Reply, write_all_by};
use super::{Exchange, browser};
use crate::budget::{Category, Reservation};
use crate::hub::Published;
use crate::protocol::envelope;
use crate::protocol::json::JsonObject;
use crate::protocol::rights::Action;
use crate::protocol::url::{BAD_ROOM, is_room, query_param, query_params, room_in_path};
use crate::room::{MESSAGE_OVERHEAD_BYTES, Tag};

/// Most rooms one `POST /publish?room=…` may name.
pub const MAX_ROOMS_PER_PUBLISH: usize = 64;

/// `POST /publish/<room>` and `POST /publish?room=…`: answered on this thread.
pub fn publish(exchange: Exchange) {
    let reply = if exchange.head.path() == "/publish" {
        publish_many(&exchange)
    } else {
        publish_one(&exchange)
    };
    let cors = browser::cors_headers(&exchange.head, &exchange.shared.policy);
    exchange.answer(reply.headers(cors));
}

/// One message into the room in the path; the publisher's identity is its `from`.
fn publish_one(exchange: &Exchange) -> Reply {
    let (head, shared) = (&exchange.head, exchange.shared);
    let Some(room) = room_in_path(head.path(), "/publish/") else {
        return Reply::text(404, BAD_ROOM);
    };
    let sender = match check_rights(head, shared, room, Action::Publish) {
        Ok(caller) => caller.person(),
        Err(refusal) => return refusal,
    };
    let cid = match client_id(head) {
        Ok(cid) => cid,
        Err(refusal) => return refusal,
    };
    let message = match read_message(exchange) {
        Ok(read) => read,
        Err(refusal) => return refusal,
    };
    shared.counters.messages_in.fetch_add(1, Ordering::Relaxed);
    match shared
        .hub
        .publish(room.to_string(), message, Tag { cid, sender })
    {
        Ok(published) => Reply::json(202, published_json(None, &published)),
        Err(why) => unanswered(why),
    }
}

/// The operator's one message into every room of `?room=` (at most
/// [`MAX_ROOMS_PER_PUBLISH`]); one id per room in the answer. A `cid` applies in each
/// room (each drops its own repeats).
fn publish_many(exchange: &Exchange) -> Reply {
    let (head, shared) = (&exchange.head, exchange.shared);
    if let Err(refusal) = check_operator(head, shared) {
        return refusal;
    }
    let rooms = query_params(head.query(), "room");
    if rooms.is_empty() || rooms.len() > MAX_ROOMS_PER_PUBLISH {
        return Reply::text(400, "name 1 to 64 rooms with ?room=");
    }
    if !rooms.iter().all(|room| is_room(room)) {
        return Reply::text(404, BAD_ROOM);
    }
    let cid = match client_id(head) {
        Ok(cid) => cid,
        Err(refusal) => return refusal,
    };
    let (message, charge) = match read_message(exchange) {
        Ok(read) => read,
        Err(refusal) => return refusal,
    };
    let mut charge = Some(charge);
    let mut answers = Vec::with_capacity(rooms.len());
    for room in rooms {
        // The first room's copy takes the charge of what was read; each further
        // room keeps a copy of its own, so it is charged again.
        let cost = message.len() + MESSAGE_OVERHEAD_BYTES;
        let Some(charge) = charge
            .take()
            .or_else(|| shared.budget.try_reserve(Category::Messages, cost))
        else {
            return Reply::text(503, "server memory budget exhausted; try again later");
        };
        shared.counters.messages_in.fetch_add(1, Ordering::Relaxed);
        let tag = Tag {
            cid: cid.clone(),
            sender: None,
        };
        match shared
            .hub
            .publish(room.clone(), (message.clone(), charge), tag)
        {
            Ok(published) => answers.push(published_json(Some(&room), &published)),
            Err(why) => return unanswered(why),
        }
    }
    Reply::json(202, format!("{{\"rooms\":[{}]}}", answers.join(",")))
}

/// What a publish produced, as its answer's JSON (with the room's name when the
/// request named several).
fn published_json(room: Option<&str>, published: &Published) -> String {
    let mut json = JsonObject::new();
    if let Some(room) = room {
        json.string("room", room);
    }
    json.number("delivered", published.delivered as u64)
        .number("id", published.id)
        .string("epoch", &envelope::format_epoch(published.epoch))
        .bool("duplicate", published.duplicate)
        .finish()
}

/// The publisher's own id for the message (`?cid=` or `X-Client-Id`), if valid.
fn client_id(head: &Head) -> Result<Option<String>, Reply> {
    let cid =
        query_param(head.query(), "cid").or_else(|| head.header("X-Client-Id").map(str::to_string));
    if cid.as_deref().is_some_and(|c| !envelope::is_client_id(c)) {
        return Err(Reply::text(
            400,
            "client ids are 1-64 characters of A-Z a-z 0-9 _ -",
        ));
    }
    Ok(cid)
}

/// The body of a publish, read within `--request-timeout` and charged to the memory
/// budget as it arrives (503 if it cannot be): the message, text if it is UTF-8, with
/// its charge. The answer to send instead when it cannot be read.
fn read_message(exchange: &Exchange) -> Result<(Message, Reservation), Reply> {
    let (head, shared) = (&exchange.head, exchange.shared);
    let limit = shared.config.max_message_bytes;
    let framing = body::framing(head, limit).map_err(|e| body_error(&e))?;
    let socket = exchange.conn.socket();
    let deadline = Instant::now() + shared.config.request_timeout;
    // A client that asked to wait for our go-ahead before sending a large body
    // (`Expect: 100-continue`, as curl does) gets it now that the length is fine.
    if head
        .header("Expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
        && write_all_by(socket, b"HTTP/1.1 100 Continue\r\n\r\n", deadline).is_err()
    {
        return Err(Reply::text(400, "client went away"));
    }
    let mut reading = shared.budget.force(Category::Reading, 0);
    let leftover = &head.leftover;
    let body = body::read_body(socket, leftover, &framing, limit, deadline, &mut reading)
        .map_err(|e| body_error(&e))?;
    // What was being read is now a message: its charge moves with it.
    let charge = reading.split_into(Category::Messages, body.len() + MESSAGE_OVERHEAD_BYTES);
    let message = match String::from_utf8(body) {
        Ok(text) => Message::text(text),
        Err(e) => Message::binary(e.into_bytes()),
    };
    Ok((message, charge))
}

fn body_error(e: &BodyError) -> Reply {
    match e.status() {
        Some((status, message)) => Reply::text(status, &message),
        // Nobody is left to read it; the status only names the case in the log.
        None => Reply::text(400, "client went away"),
    }
}
