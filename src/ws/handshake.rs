//! The opening handshake (RFC 6455 §4): an HTTP/1.1 `GET` with `Upgrade: websocket`
//! that the server answers with `101 Switching Protocols`.
//!
//! ```text
//! GET /ws/lobby HTTP/1.1                      HTTP/1.1 101 Switching Protocols
//! Host: 127.0.0.1:8081                        Upgrade: websocket
//! Upgrade: websocket                ──▶       Connection: Upgrade
//! Connection: Upgrade                         Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=
//! Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==
//! Sec-WebSocket-Version: 13
//! ```
//!
//! The accept value is `base64(sha1(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))`:
//! it proves to the client that the server really speaks WebSocket (a plain HTTP
//! server or cache would never produce it). The door has already read the request
//! head (`http/head.rs`) rather than letting tungstenite do it, because a
//! client may send its first frame right behind the request; those bytes are handed
//! to the reader instead of being lost.

use std::net::IpAddr;

use tungstenite::handshake::derive_accept_key;

use crate::http::head::Head;
use crate::http::reply::reason_phrase;
use crate::protocol::rights::{Action, Caller, NOT_ALLOWED_HERE};
use crate::protocol::url::{query_flag, query_param, room_in_path};
use crate::room::Resume;
use crate::security::{AccessPolicy, bearer_token};

/// The only protocol version RFC 6455 defines.
pub const WEBSOCKET_VERSION: &str = "13";

/// Where an accepted connection goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/echo`: every message comes straight back.
    Echo,
    /// `/ws/<room>`: broadcast to everyone in the room.
    Room {
        /// The room's name.
        name: String,
        /// `?raw=1`: payloads exactly as published, nothing added.
        raw: bool,
        /// `?since=<id>&epoch=<epoch>`: where to start in the room's history.
        resume: Resume,
    },
}

impl Route {
    /// The room's name (empty for `/echo`).
    pub fn room(&self) -> String {
        match self {
            Route::Echo => String::new(),
            Route::Room { name, .. } => name.clone(),
        }
    }
}

/// A handshake that passed every check.
#[derive(Debug)]
pub struct Accepted {
    /// Where the connection goes.
    pub route: Route,
    /// The `Sec-WebSocket-Accept` value to answer with.
    pub accept_key: String,
    /// Bytes the client sent after the request (its first frames, if it hurried).
    pub leftover: Vec<u8>,
    /// The first address in `X-Forwarded-For`, as a proxy reported the client.
    /// Only to be believed with `--trust-proxy`.
    pub forwarded_for: Option<String>,
    /// Who the token showed the client to be; `None` under `--auth first-message`,
    /// where the token comes later.
    pub caller: Option<Caller>,
    /// `?inspect=1`: the client asked to see its own connection (lesson mode).
    pub inspect: bool,
    /// The client's key, for the inspector's accept computation.
    pub key: String,
}

/// Why a handshake was refused: the HTTP status and a human-readable explanation.
#[derive(Debug, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status code.
    pub status: u16,
    /// Plain-text body (one line).
    pub message: String,
}

impl Rejection {
    /// A refusal with this status and one-line explanation.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Rejection {
            status,
            message: message.into(),
        }
    }
}

/// What the checks need to know about the server.
#[derive(Debug)]
pub struct Checks<'a> {
    /// Origin and token rules.
    pub policy: &'a AccessPolicy,
    /// Address of the client, for the Host check against DNS rebinding (applied to
    /// loopback clients only; see [`AccessPolicy::host_allowed`]).
    pub peer: IpAddr,
    /// `--auth first-message`: the token comes as the first message, not here.
    pub token_in_first_message: bool,
}

/// Checks a complete request head, in the order a client can best act on:
/// method and version, path (404), upgrade headers (426), key (400), Host (403),
/// Origin (403), token (401).
pub fn check(head: &Head, checks: &Checks) -> Result<Accepted, Rejection> {
    let header = |name: &str| head.header(name);
    if head.method != "GET" {
        return Err(Rejection::new(
            405,
            "a WebSocket handshake must be a GET request",
        ));
    }
    if head.minor_version != 1 {
        return Err(Rejection::new(400, "a WebSocket handshake needs HTTP/1.1"));
    }
    let route = route(head.path(), head.query())?;
    let key = check_upgrade(head)?;
    let caller = check_access(head, checks)?;
    if let (Some(caller), Route::Room { name, .. }) = (&caller, &route)
        && !caller.may(name, Action::Join)
    {
        return Err(Rejection::new(403, NOT_ALLOWED_HERE));
    }
    Ok(Accepted {
        route,
        accept_key: derive_accept_key(key.as_bytes()),
        leftover: head.leftover.clone(),
        forwarded_for: crate::security::forwarded_client(header("X-Forwarded-For")),
        caller,
        inspect: crate::protocol::url::query_flag(head.query(), "inspect"),
        key: key.to_string(),
    })
}

/// Where a handshake for `path` goes: `/echo`, or `/ws/<room>` with its query's
/// `raw`, `since` and `epoch`; 404 for anything else.
fn route(path: &str, query: &str) -> Result<Route, Rejection> {
    if path == "/echo" {
        return Ok(Route::Echo);
    }
    match room_in_path(path, "/ws/") {
        Some(name) => Ok(Route::Room {
            name: name.to_string(),
            raw: query_flag(query, "raw"),
            resume: Resume::from_query(query),
        }),
        None => Err(Rejection::new(
            404,
            format!("no WebSocket endpoint at {path}; try /echo or /ws/<room>"),
        )),
    }
}

/// The headers that make a request an upgrade to WebSocket version 13 (426 without
/// them), and its `Sec-WebSocket-Key` (400 if it is not 16 bytes of base64).
fn check_upgrade(head: &Head) -> Result<&str, Rejection> {
    let header = |name: &str| head.header(name);
    let upgrade = header("Upgrade").is_some_and(|v| has_token(v, "websocket"));
    let connection = header("Connection").is_some_and(|v| has_token(v, "upgrade"));
    if !upgrade || !connection {
        let path = head.path();
        return Err(Rejection::new(
            426,
            format!(
                "{path} is a WebSocket endpoint: send Upgrade: websocket and Connection: Upgrade; \
                 the page is at /"
            ),
        ));
    }
    if header("Sec-WebSocket-Version").map(str::trim) != Some(WEBSOCKET_VERSION) {
        let why = "unsupported Sec-WebSocket-Version; this server speaks version 13";
        return Err(Rejection::new(426, why));
    }
    let key = header("Sec-WebSocket-Key").map(str::trim).unwrap_or("");
    if !is_valid_key(key) {
        let why = "missing or invalid Sec-WebSocket-Key (must be 16 bytes, base64)";
        return Err(Rejection::new(400, why));
    }
    Ok(key)
}

/// Who may connect: the Host (403, against DNS rebinding), the Origin (403), and the
/// token (401; under `--auth first-message` it comes later, as the first message).
/// Returns who the token shows the client to be.
fn check_access(head: &Head, checks: &Checks) -> Result<Option<Caller>, Rejection> {
    let header = |name: &str| head.header(name);
    if !checks.policy.host_allowed(header("Host"), checks.peer) {
        return Err(Rejection::new(
            403,
            "Host not allowed: a loopback server answers only to loopback names (see --allow-host)",
        ));
    }
    if !checks
        .policy
        .origin_allowed(header("Origin"), header("Host"))
    {
        return Err(Rejection::new(403, "Origin not allowed"));
    }
    let token = header("Authorization")
        .and_then(bearer_token)
        .map(str::to_string)
        .or_else(|| query_param(head.query(), "token"));
    if checks.token_in_first_message {
        return Ok(None);
    }
    let Some(caller) = checks.policy.caller(token.as_deref()) else {
        return Err(Rejection::new(401, "missing or wrong token"));
    };
    match checks.policy.with_guest_name(caller, head.query()) {
        Ok(caller) => Ok(Some(caller)),
        Err(why) => Err(Rejection::new(400, why)),
    }
}

/// The `101` answer that completes the handshake; after it, both sides speak frames.
pub fn accept_response(accept_key: &str) -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept_key}\r\n\r\n"
    )
}

/// A refusal: status, a plain-text reason, and the connection closes.
pub fn rejection_response(rejection: &Rejection) -> String {
    let body = format!("{}\n", rejection.message);
    // 426 must say which version we do speak (RFC 6455 §4.4).
    let version = if rejection.status == 426 {
        "Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n"
    } else {
        ""
    };
    format!(
        "HTTP/1.1 {} {}\r\n{version}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n{body}",
        rejection.status,
        reason_phrase(rejection.status),
        body.len(),
    )
}

/// Whether a comma-separated header value contains `token` (case-insensitive), as in
/// `Connection: keep-alive, Upgrade` (what Firefox sends).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A key is 16 random bytes in base64: 22 characters plus `==`.
fn is_valid_key(key: &str) -> bool {
    key.len() == 24
        && key.ends_with("==")
        && key[..22]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn run(request: &str) -> Result<Accepted, Rejection> {
        run_with(request, &AccessPolicy::default())
    }

    fn run_with(request: &str, policy: &AccessPolicy) -> Result<Accepted, Rejection> {
        let head = match Head::parse(request.as_bytes()) {
            Ok(Some(head)) => head,
            Ok(None) => panic!("incomplete request in a test"),
            Err((status, message)) => return Err(Rejection { status, message }),
        };
        check(
            &head,
            &Checks {
                policy,
                peer: LOOPBACK,
                token_in_first_message: false,
            },
        )
    }

    fn upgrade(path: &str, extra: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8081\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    #[test]
    fn the_rfc_example_key_gives_the_rfc_accept_value() {
        let accepted = run(&upgrade("/echo", "")).unwrap();
        assert_eq!(accepted.accept_key, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(accepted.route, Route::Echo);
    }

    #[test]
    fn rooms_and_raw_mode_are_routed() {
        assert_eq!(
            run(&upgrade("/ws/ops", "")).unwrap().route,
            Route::Room {
                name: "ops".into(),
                raw: false,
                resume: Resume::Live
            }
        );
        assert_eq!(
            run(&upgrade("/ws/ops?raw=1", "")).unwrap().route,
            Route::Room {
                name: "ops".into(),
                raw: true,
                resume: Resume::Live
            }
        );
    }

    #[test]
    fn bytes_after_the_request_are_kept() {
        let mut request = upgrade("/echo", "");
        request.push_str("\u{81}\u{0}");
        assert_eq!(run(&request).unwrap().leftover, "\u{81}\u{0}".as_bytes());
    }

    #[test]
    fn each_refusal_has_its_status() {
        assert_eq!(run(&upgrade("/nope", "")).unwrap_err().status, 404);
        assert_eq!(run(&upgrade("/ws/bad.name", "")).unwrap_err().status, 404);
        assert_eq!(
            run("GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap_err()
                .status,
            426
        );
        assert_eq!(
            run(&upgrade("/echo", "").replace("Version: 13", "Version: 8"))
                .unwrap_err()
                .status,
            426
        );
        assert_eq!(
            run(&upgrade("/echo", "").replace(KEY, "short"))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            run(&upgrade("/echo", "").replace("GET", "POST"))
                .unwrap_err()
                .status,
            405
        );
        assert_eq!(
            run(&upgrade("/echo", "").replace("HTTP/1.1", "HTTP/1.0"))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            run(&upgrade("/echo", "Origin: https://evil.example\r\n"))
                .unwrap_err()
                .status,
            403
        );
    }

    #[test]
    fn the_token_may_come_as_bearer_header_or_query() {
        let policy = AccessPolicy::new(&crate::Config {
            token: Some("t0k".into()),
            ..Default::default()
        });
        assert_eq!(
            run_with(&upgrade("/echo", ""), &policy).unwrap_err().status,
            401
        );
        assert_eq!(
            run_with(&upgrade("/echo?token=nope", ""), &policy)
                .unwrap_err()
                .status,
            401
        );
        assert!(run_with(&upgrade("/echo?token=t0k", ""), &policy).is_ok());
        assert!(run_with(&upgrade("/echo", "Authorization: Bearer t0k\r\n"), &policy).is_ok());
    }

    #[test]
    fn a_loopback_client_must_name_a_loopback_host() {
        let evil = upgrade("/echo", "").replace("Host: 127.0.0.1:8081", "Host: evil.example:8081");
        // Same host in Origin and Host: the Origin check alone would let it through.
        let rebound = evil.replace("\r\n\r\n", "\r\nOrigin: http://evil.example:8080\r\n\r\n");
        assert_eq!(run(&evil).unwrap_err().status, 403);
        assert_eq!(run(&rebound).unwrap_err().status, 403);
        let localhost =
            upgrade("/echo", "").replace("Host: 127.0.0.1:8081", "Host: localhost:8081");
        assert!(run(&localhost).is_ok());
        let policy = AccessPolicy::default().allow_hosts(["evil.example"]);
        assert!(run_with(&rebound, &policy).is_ok());
    }

    #[test]
    fn a_426_names_the_version_we_speak() {
        let text = rejection_response(&Rejection::new(426, "x"));
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
    }
}
