//! The small HTTP endpoints: `/healthz`, `/config.json`, `/stats`, and the checks
//! of who may do what that the others share ([`check_rights`]).

use std::sync::atomic::Ordering;

use super::head::Head;
use super::reply::Reply;
use crate::config::AuthMode;
use crate::context::Shared;
use crate::hub::cluster::{LinkState, LinkStatus};
use crate::hub::{RoomStats, Unanswered};
use crate::protocol::json::JsonObject;
use crate::protocol::rights::{Action, Caller, NOT_ALLOWED_HERE};
use crate::protocol::url::query_param;
use crate::security::bearer_token;
use crate::store::StoreFigures;

/// The token from `Authorization: Bearer` or `?token=`.
pub fn request_token(head: &Head) -> Option<String> {
    head.header("Authorization")
        .and_then(bearer_token)
        .map(str::to_string)
        .or_else(|| query_param(head.query(), "token"))
}

/// Whether the request's token lets its holder do `action` in `room`, and who it is.
///
/// # Errors
/// 401 when the token lets nobody in; 403 when it lets someone in, but not here.
pub fn check_rights(
    head: &Head,
    shared: &Shared,
    room: &str,
    action: Action,
) -> Result<Caller, Reply> {
    let Some(caller) = shared.policy.caller(request_token(head).as_deref()) else {
        return Err(Reply::text(401, "missing or wrong token"));
    };
    if !caller.may(room, action) {
        return Err(Reply::text(403, NOT_ALLOWED_HERE));
    }
    shared
        .policy
        .with_guest_name(caller, head.query())
        .map_err(|why| Reply::text(400, why))
}

/// What the page needs to connect: its WebSocket URL (the same host and port the
/// browser used for the page, since one port serves both) and whether a token is
/// needed.
pub fn config_json(head: &Head, shared: &Shared) -> Reply {
    let ws_url = match &shared.config.public_ws_url {
        Some(url) => url.clone(),
        None => {
            let host = head
                .header("Host")
                .map(str::to_string)
                .unwrap_or_else(|| shared.http_addr.to_string());
            let scheme = if shared.config.uses_tls() {
                "wss"
            } else {
                "ws"
            };
            format!("{scheme}://{host}")
        }
    };
    let body = JsonObject::new()
        .string("ws_url", &ws_url)
        .bool("token_required", shared.policy.token_required())
        .string(
            "auth",
            match shared.config.auth {
                AuthMode::Handshake => "handshake",
                AuthMode::FirstMessage => "first-message",
            },
        )
        // Who names people: signed tokens (`signed`), or guests themselves (`guest`,
        // `?name=`, shown unverified).
        .string(
            "identity",
            if shared.policy.signs_identities() {
                "signed"
            } else {
                "guest"
            },
        )
        .number("max_message_bytes", shared.config.max_message_bytes as u64)
        .string("default_room", "lobby")
        .finish();
    Reply::json(200, body).no_store()
}

/// `ok`, or — while the Redis link is down — `degraded`: the instance still serves,
/// but its rooms are not shared with the other instances (still 200, so a load
/// balancer does not take every instance out when Redis itself is down; a check that
/// wants to can match the body).
pub fn health(shared: &Shared) -> Reply {
    match &shared.link {
        Some(link) if link.state() == LinkState::Down => Reply::text(
            200,
            "degraded: Redis unreachable, rooms are local to this instance",
        ),
        _ => Reply::text(200, "ok"),
    }
    .no_store()
}

/// The Redis link's figures for `/stats`.
fn link_json(link: &LinkStatus) -> String {
    JsonObject::new()
        .string(
            "state",
            match link.state() {
                LinkState::Up => "up",
                LinkState::Down => "down",
            },
        )
        .number("queued", link.queued.load(Ordering::Relaxed))
        .number("dropped", link.dropped.load(Ordering::Relaxed))
        .number("connects", link.connects.load(Ordering::Relaxed))
        .string("last_error", &link.error())
        .finish()
}

/// `/stats`: the server's figures. With `--token` set, the token is required (401
/// without it), and with `--admin-token` the operator's. Room names appear only to
/// the operator, or (without `--admin-token`) to the holder of the shared token —
/// never to a signed token's user, since the names tell who is online.
pub fn stats(head: &Head, shared: &Shared) -> Reply {
    let (room_stats, caller) = match operator_figures(head, shared) {
        Ok(answer) => answer,
        Err(refusal) => return refusal,
    };
    let show_rooms = match caller {
        Caller::Operator => true,
        Caller::Anonymous => shared.policy.token_required(),
        Caller::User(_) | Caller::Guest(_) => false,
    };
    let mut rooms = JsonObject::new();
    let (mut history_messages, mut history_bytes, mut members) = (0, 0, 0);
    for room in &room_stats {
        history_messages += room.history_messages;
        history_bytes += room.history_bytes;
        members += room.members;
        let figures = JsonObject::new()
            .number("members", room.members as u64)
            .number("history_messages", room.history_messages as u64)
            .number("history_bytes", room.history_bytes as u64)
            .finish();
        rooms.raw(&room.name, &figures);
    }
    let counters = &shared.counters;
    let mut body = JsonObject::new();
    body.number("connections", shared.limit.open() as u64)
        .number("sse_streams", counters.sse_streams.get())
        .number("polls_waiting", counters.polls_waiting.get())
        .number("room_count", room_stats.len() as u64)
        .number("members", members as u64);
    if show_rooms {
        body.raw("rooms", &rooms.finish());
    }
    body.number("history_messages", history_messages as u64)
        .number("history_bytes", history_bytes as u64)
        .number("messages_in", counters.messages_in.load(Ordering::Relaxed))
        .number(
            "messages_out",
            counters.messages_out.load(Ordering::Relaxed),
        )
        .number(
            "slow_consumer_disconnects",
            counters.slow_consumers.load(Ordering::Relaxed),
        )
        .number(
            "rate_limited_disconnects",
            counters.rate_limited.load(Ordering::Relaxed),
        )
        .number("refused_per_ip", shared.per_ip.refused())
        .number("requests_cut_off", shared.in_progress.evicted())
        .number("uptime_secs", shared.started.elapsed().as_secs());
    optional_parts(head, shared, &mut body);
    Reply::json(200, body.finish()).no_store()
}

/// The parts of `/stats` only some servers have: the Redis link, the store, and
/// (`?connections=1`) every WebSocket connection with its threads and traffic.
fn optional_parts(head: &Head, shared: &Shared, body: &mut JsonObject) {
    if let Some(link) = &shared.link {
        body.raw("redis", &link_json(link));
    }
    if let Some(store) = &shared.store {
        body.raw("store", &store_json(store));
    }
    if crate::protocol::url::query_flag(head.query(), "connections") {
        body.raw("connection_list", &shared.connections.json());
    }
}

/// The store's figures (`--data-dir`): its size, its commits and fsyncs, and how
/// long commits take.
fn store_json(store: &StoreFigures) -> String {
    let read = |figure: &std::sync::atomic::AtomicU64| figure.load(Ordering::Relaxed);
    let commits = read(&store.commits);
    JsonObject::new()
        .number("file_bytes", read(&store.file_bytes))
        .number("commits", commits)
        .number("fsyncs", read(&store.fsyncs))
        .number(
            "commit_micros_avg",
            read(&store.commit_micros) / commits.max(1),
        )
        .number("commit_micros_max", read(&store.max_commit_micros))
        .number("failures", read(&store.failures))
        .finish()
}

/// The rooms' figures for an operator endpoint (`/stats`, `/metrics`), and who asks:
/// the token is checked first when one is set, and with `--admin-token` only the
/// operator may ask.
///
/// # Errors
/// 401 without the right token; 503 when the hub is stopping or does not answer.
pub fn operator_figures(head: &Head, shared: &Shared) -> Result<(Vec<RoomStats>, Caller), Reply> {
    let caller = shared.policy.caller(request_token(head).as_deref());
    let caller = match caller {
        Some(caller) if caller == Caller::Operator || !shared.policy.has_operator() => caller,
        _ => return Err(Reply::text(401, "missing or wrong token")),
    };
    let rooms = shared.hub.stats().map_err(unanswered)?;
    Ok((rooms, caller))
}

/// The 503 for a hub that gave no answer.
pub(super) fn unanswered(why: Unanswered) -> Reply {
    match why {
        Unanswered::Stopped => Reply::text(503, "server shutting down"),
        Unanswered::TimedOut => Reply::text(503, "hub did not answer"),
        Unanswered::NotDone => Reply::text(
            503,
            "not done: the server could not store it (see its log); nothing was published",
        ),
    }
}
