//! The HTTP listener (tiny_http): the page and static files, plus the plain-HTTP
//! endpoints `/config.json`, `/healthz`, `/stats`, `POST /publish/<room>`, and the
//! fallback transports `GET /events/<room>` (SSE) and `GET /poll/<room>`.
//!
//! tiny_http accepts connections and parses requests on its own threads; a few worker
//! threads here take finished requests from it with `recv()` and answer them. The
//! long-lived requests (SSE, long poll) each get a thread of their own, counted
//! against `--max-connections` like a WebSocket, so the workers stay free.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;

use tiny_http::{Method, Request};
use tungstenite::Message;

use crate::cluster::{LinkState, LinkStatus};
use crate::config::AuthMode;
use crate::envelope;
use crate::http_listener::HttpListener;
use crate::hub::{Command, HUB_REPLY_TIMEOUT};
use crate::json::JsonObject;
use crate::reply::Reply;
use crate::room::Resume;
use crate::security::{bearer_token, host_without_port};
use crate::server::Shared;
use crate::static_files::{Lookup, StaticFiles};
use crate::url::{query_param, room_in_path, split_target};
use crate::ws::connection::THREAD_STACK_BYTES;
use crate::ws::handshake::resume_from_query;
use crate::{poll, sse};

/// Threads answering HTTP requests. Every answer is quick (a file, a counter, a hand-off
/// to the hub), so a few threads serve many clients.
pub const HTTP_WORKERS: usize = 4;

/// Starts the worker threads. They return when `server.unblock()` wakes them after
/// `Shared::stopping` is set.
pub fn spawn_workers(
    server: Arc<HttpListener>,
    shared: Arc<Shared>,
) -> Vec<thread::JoinHandle<()>> {
    let files = Arc::new(StaticFiles::new(&shared.config.public_dir));
    (0..HTTP_WORKERS)
        .map(|i| {
            let (server, shared, files) =
                (Arc::clone(&server), Arc::clone(&shared), Arc::clone(&files));
            thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || {
                    while let Some(request) = server.recv() {
                        if shared.stopping.load(Ordering::Acquire) {
                            text(503, "server shutting down").send(request);
                            break;
                        }
                        handle(request, &shared, &files);
                    }
                })
                .expect("spawn HTTP worker")
        })
        .collect()
}

fn handle(mut request: Request, shared: &Arc<Shared>, files: &StaticFiles) {
    let url = request.url().to_string();
    let (path, query) = split_target(&url);
    let read_only = matches!(request.method(), Method::Get | Method::Head);
    // DNS rebinding: a page on another site whose name resolves to 127.0.0.1 must not
    // reach the endpoints that read or change state. The page itself stays public.
    let guarded = path == "/stats"
        || ["/publish/", "/events/", "/poll/"]
            .iter()
            .any(|p| path.starts_with(p));
    if guarded {
        if let Some(peer) = request.remote_addr().map(|a| shared.http_client(*a).ip()) {
            if !shared.policy.host_allowed(header(&request, "Host"), peer) {
                log::warn!("refused {path} from {peer}: Host not allowed (see --allow-host)");
                text(403, "Host not allowed; see --allow-host").send(request);
                return;
            }
        }
    }
    if read_only && (path.starts_with("/events/") || path.starts_with("/poll/")) {
        return start_long_lived(request, shared);
    }
    let reply = match path {
        "/healthz" if read_only => health(shared),
        "/config.json" if read_only => json(200, config_json(&request, shared)),
        "/stats" if read_only => stats(shared),
        _ if path.starts_with("/publish/") => {
            if *request.method() == Method::Post {
                publish(&mut request, path, query, shared)
            } else {
                text(405, "use POST to publish")
            }
        }
        _ if read_only => static_file(files, path),
        _ => text(405, "method not allowed"),
    };
    reply.send(request);
}

/// What the page needs to connect: where the WebSocket listener is and whether a token
/// is needed. The WebSocket URL uses the host the browser itself used (from `Host`),
/// so it works on `localhost`, `127.0.0.1` or a LAN address alike.
fn config_json(request: &Request, shared: &Shared) -> String {
    let ws_url = match &shared.config.public_ws_url {
        Some(url) => url.clone(),
        None => {
            let host = header(request, "Host")
                .map(|h| host_without_port(h).to_string())
                .unwrap_or_else(|| shared.ws_addr.ip().to_string());
            let scheme = if shared.config.uses_tls() {
                "wss"
            } else {
                "ws"
            };
            format!("{scheme}://{host}:{}", shared.ws_addr.port())
        }
    };
    JsonObject::new()
        .string("ws_url", &ws_url)
        .bool("token_required", shared.policy.token_required())
        .string(
            "auth",
            match shared.config.auth {
                AuthMode::Handshake => "handshake",
                AuthMode::FirstMessage => "first-message",
            },
        )
        .number("max_message_bytes", shared.config.max_message_bytes as u64)
        .string("default_room", "lobby")
        .finish()
}

/// `ok`, or — while the Redis link is down — `degraded`: the instance still serves,
/// but its rooms are not shared with the other instances (still 200, so a load
/// balancer does not take every instance out when Redis itself is down; a check that
/// wants to can match the body).
fn health(shared: &Shared) -> Reply {
    match &shared.link {
        Some(link) if link.state() == LinkState::Down => text(
            200,
            "degraded: Redis unreachable, rooms are local to this instance",
        ),
        _ => text(200, "ok"),
    }
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

fn stats(shared: &Shared) -> Reply {
    let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
    if shared.hub.send(Command::Stats(reply_tx)).is_err() {
        return text(503, "server shutting down");
    }
    let Ok(room_stats) = reply_rx.recv_timeout(HUB_REPLY_TIMEOUT) else {
        return text(503, "hub did not answer");
    };
    let mut rooms = JsonObject::new();
    let (mut history_messages, mut history_bytes) = (0, 0);
    for room in &room_stats {
        history_messages += room.history_messages;
        history_bytes += room.history_bytes;
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
        .raw("rooms", &rooms.finish())
        .number("history_messages", history_messages as u64)
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
        .number("uptime_secs", shared.started.elapsed().as_secs());
    if let Some(link) = &shared.link {
        body.raw("redis", &link_json(link));
    }
    let body = body.finish();
    json(200, body)
}

/// The token from `Authorization: Bearer` or `?token=`.
fn request_token(request: &Request, query: &str) -> Option<String> {
    header(request, "Authorization")
        .and_then(bearer_token)
        .map(str::to_string)
        .or_else(|| query_param(query, "token"))
}

/// `GET /events/<room>` and `GET /poll/<room>`: checked here, then handed to a thread
/// of their own (they may stay open for a long time), holding a connection slot.
fn start_long_lived(request: Request, shared: &Arc<Shared>) {
    let url = request.url().to_string();
    let (path, query) = split_target(&url);
    let (prefix, kind) = if path.starts_with("/events/") {
        ("/events/", "sse")
    } else {
        ("/poll/", "poll")
    };
    let refuse = |request: Request, reply: Reply| {
        reply.send(request);
    };
    let Some(room) = room_in_path(path, prefix) else {
        return refuse(
            request,
            text(404, "room names are 1-64 characters of A-Z a-z 0-9 _ -"),
        );
    };
    if !shared
        .policy
        .token_ok(request_token(&request, query).as_deref())
    {
        return refuse(request, text(401, "missing or wrong token"));
    }
    let Some(slot) = shared.limit.try_acquire() else {
        return refuse(
            request,
            text(
                503,
                &format!(
                    "server full: {} connections open",
                    shared.config.max_connections
                ),
            ),
        );
    };
    // The browser's automatic SSE reconnect sends Last-Event-ID (`<epoch>:<id>`) and
    // reuses the original URL, so the header wins over `?since=`.
    let resume = match header(&request, "Last-Event-ID").and_then(envelope::parse_event_id) {
        Some((epoch, id)) => Resume::Since {
            id,
            epoch: Some(epoch),
        },
        None => resume_from_query(query),
    };
    let (room, shared) = (room.to_string(), Arc::clone(shared));
    let spawned = thread::Builder::new()
        .name(kind.into())
        .stack_size(THREAD_STACK_BYTES)
        .spawn(move || {
            if kind == "sse" {
                sse::serve(request, room, resume, shared, slot);
            } else {
                poll::serve(request, room, resume, shared, slot);
            }
        });
    if let Err(e) = spawned {
        // The request went down with the closure; tiny_http answers it with 500.
        log::warn!("cannot start a thread for {kind}: {e}; see README, Capacity");
    }
}

/// `POST /publish/<room>`: the body becomes one message (text if it is valid UTF-8,
/// binary otherwise) for every member of the room.
fn publish(request: &mut Request, path: &str, query: &str, shared: &Shared) -> Reply {
    let Some(room) = room_in_path(path, "/publish/") else {
        return text(404, "room names are 1-64 characters of A-Z a-z 0-9 _ -");
    };
    if !shared
        .policy
        .token_ok(request_token(request, query).as_deref())
    {
        return text(401, "missing or wrong token");
    }
    let cid =
        query_param(query, "cid").or_else(|| header(request, "X-Client-Id").map(str::to_string));
    if cid.as_deref().is_some_and(|c| !envelope::is_client_id(c)) {
        return text(400, "client ids are 1-64 characters of A-Z a-z 0-9 _ -");
    }
    let limit = shared.config.max_message_bytes;
    let mut body = Vec::new();
    if let Err(e) = request
        .as_reader()
        .take(limit as u64 + 1)
        .read_to_end(&mut body)
    {
        return text(400, &format!("could not read the request body: {e}"));
    }
    if body.len() > limit {
        return text(413, &format!("message larger than {limit} bytes"));
    }
    let message = match String::from_utf8(body) {
        Ok(text) => Message::text(text),
        Err(e) => Message::binary(e.into_bytes()),
    };
    shared.counters.messages_in.fetch_add(1, Ordering::Relaxed);
    let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
    let command = Command::Publish {
        room: room.to_string(),
        message,
        cid,
        from: None,
        reply: Some(reply_tx),
    };
    if shared.hub.send(command).is_err() {
        return text(503, "server shutting down");
    }
    match reply_rx.recv_timeout(HUB_REPLY_TIMEOUT) {
        Ok(published) => json(
            202,
            JsonObject::new()
                .number("delivered", published.delivered as u64)
                .number("id", published.id)
                .string("epoch", &envelope::format_epoch(published.epoch))
                .bool("duplicate", published.duplicate)
                .finish(),
        ),
        Err(_) => text(503, "hub did not answer"),
    }
}

fn static_file(files: &StaticFiles, path: &str) -> Reply {
    match files.lookup(path) {
        Lookup::Found(found) => Reply::new(200, found.content_type, found.body, found.len),
        Lookup::NotFound => text(404, "not found"),
        Lookup::BadRequest => text(400, "bad path"),
    }
}

fn header<'a>(request: &'a Request, name: &'static str) -> Option<&'a str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

fn text(status: u16, message: &str) -> Reply {
    Reply::text(status, message)
}

fn json(status: u16, json: String) -> Reply {
    Reply::json(status, json)
}
