//! The operator's API (`--admin-token`): what a backend asks of the server besides
//! publishing (`src/http/publish.rs`). Every endpoint here answers only to the
//! operator's token: `401` to anyone else, `403` on a server started without one.
//!
//! | request | answer |
//! |---|---|
//! | `GET /rooms` | every room: members, last id, epoch, history |
//! | `GET /presence/<room>` | who is in the room, with their connection counts |
//! | `DELETE /rooms/<room>` | the room and its history dropped, its members closed (4004) |
//! | `POST /disconnect/<sub>` | every connection of the user closed (4003) |
//!
//! With `--redis` they act on this instance's connections only.

use super::endpoints::{request_token, unanswered};
use super::head::Head;
use super::reply::Reply;
use crate::context::Shared;
use crate::protocol::envelope::format_epoch;
use crate::protocol::json::JsonObject;
use crate::protocol::rights::Caller;
use crate::protocol::url::{BAD_ROOM, is_room_name, room_in_path};

/// Whether the request carries the operator's token.
///
/// # Errors
/// `403` when the server has no operator token, `401` when the request lacks it.
pub fn check_operator(head: &Head, shared: &Shared) -> Result<(), Reply> {
    if !shared.policy.has_operator() {
        return Err(Reply::text(
            403,
            "no operator: start the server with --admin-token",
        ));
    }
    match shared.policy.caller(request_token(head).as_deref()) {
        Some(Caller::Operator) => Ok(()),
        _ => Err(Reply::text(401, "missing or wrong operator token")),
    }
}

/// Answers one request of the operator's API (see the table above).
pub fn answer(head: &Head, shared: &Shared) -> Reply {
    if let Err(refusal) = check_operator(head, shared) {
        return refusal;
    }
    let (method, path) = (head.method.as_str(), head.path());
    let reply = match method {
        "GET" | "HEAD" if path == "/rooms" => rooms(shared),
        "GET" | "HEAD" if path.starts_with("/presence/") => presence(path, shared),
        "DELETE" if path.starts_with("/rooms/") => delete_room(path, shared),
        "POST" if path.starts_with("/disconnect/") => disconnect(path, shared),
        _ => Reply::text(405, "method not allowed"),
    };
    reply.no_store()
}

/// `GET /rooms`: every room with its figures, sorted by name.
fn rooms(shared: &Shared) -> Reply {
    let stats = match shared.hub.stats() {
        Ok(stats) => stats,
        Err(why) => return unanswered(why),
    };
    let rooms: Vec<String> = stats
        .iter()
        .map(|room| {
            JsonObject::new()
                .string("name", &room.name)
                .number("members", room.members as u64)
                .number("last_id", room.last_id)
                .string("epoch", &format_epoch(room.epoch))
                .number("history_messages", room.history_messages as u64)
                .number("history_bytes", room.history_bytes as u64)
                .finish()
        })
        .collect();
    Reply::json(200, format!("{{\"rooms\":[{}]}}", rooms.join(",")))
}

/// `GET /presence/<room>`: who is in it.
fn presence(path: &str, shared: &Shared) -> Reply {
    let Some(room) = room_in_path(path, "/presence/") else {
        return Reply::text(404, BAD_ROOM);
    };
    match shared.hub.presence(room.to_string()) {
        Ok(Some(presence)) => Reply::json(
            200,
            JsonObject::new()
                .string("room", room)
                .number("members", presence.members as u64)
                .raw("users", &presence.users)
                .finish(),
        ),
        Ok(None) => Reply::text(404, "no such room here"),
        Err(why) => unanswered(why),
    }
}

/// `DELETE /rooms/<room>`: the room and its history go; its members are closed.
fn delete_room(path: &str, shared: &Shared) -> Reply {
    let Some(room) = room_in_path(path, "/rooms/") else {
        return Reply::text(404, BAD_ROOM);
    };
    match shared.hub.delete_room(room.to_string()) {
        Ok(Some(closed)) => Reply::json(
            200,
            JsonObject::new()
                .string("room", room)
                .number("closed", closed as u64)
                .finish(),
        ),
        Ok(None) => Reply::text(404, "no such room here"),
        Err(why) => unanswered(why),
    }
}

/// `POST /disconnect/<sub>`: every connection of the user is closed.
fn disconnect(path: &str, shared: &Shared) -> Reply {
    let sub = path.trim_start_matches("/disconnect/");
    if !is_room_name(sub) {
        return Reply::text(404, "user ids are 1-63 characters of A-Z a-z 0-9 _ -");
    }
    match shared.hub.disconnect(sub.to_string()) {
        Ok(closed) => Reply::json(
            200,
            JsonObject::new()
                .string("sub", sub)
                .number("closed", closed as u64)
                .finish(),
        ),
        Err(why) => unanswered(why),
    }
}
