//! Signed identities (`--jwt-secret`, issue 15): HS256 tokens made by an independent
//! implementation (Python's standard library: hmac, hashlib, base64) are accepted on
//! every transport — WebSocket handshake, first message, SSE, long poll, publish — and
//! every forged, expired or malformed one is refused there with 401 (1008 for the
//! first message), and never written to the log.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::tokens::{ADMIN, SECRET};
use common::*;
use threadcast::{AuthMode, Config};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

/// Tokens minted by Python, keyed by what is special about them. `valid` (alice),
/// `bob` and `reader` (rita, who may join `news-*` and publish to `news-1`) are good
/// for an hour; every other one must be refused.
const GOOD: [&str; 3] = ["valid", "bob", "reader"];

fn python_tokens() -> HashMap<String, String> {
    const SCRIPT: &str = r#"
import base64, hashlib, hmac, json, sys, time
secret = sys.argv[1].encode()
now = int(time.time())
def b64(b): return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
def token(header, claims, key=secret, digest=hashlib.sha256):
    h = b64(json.dumps(header).encode()); p = b64(json.dumps(claims).encode())
    return h + "." + p + "." + b64(hmac.new(key, (h + "." + p).encode(), digest).digest())
alice = {"sub": "alice", "name": "Alice", "exp": now + 3600}
hs = {"alg": "HS256", "typ": "JWT"}
valid = token(hs, alice)
h, p, s = valid.split(".")
bob = b64(json.dumps(dict(alice, sub="bob")).encode())
out = {
  "valid": valid,
  "tampered": h + "." + bob + "." + s,
  "other_key": token(hs, alice, key=b"another-secret-of-at-least-32-bytes!!"),
  "alg_none": b64(json.dumps({"alg": "none"}).encode()) + "." + p + ".",
  "alg_none_signed": token({"alg": "none"}, alice),
  "rs256": token({"alg": "RS256"}, alice),
  "hs384": token({"alg": "HS384"}, alice, digest=hashlib.sha384),
  "lowercase": token({"alg": "hs256"}, alice),
  "expired": token(hs, dict(alice, exp=now - 3600)),
  "not_yet": token(hs, dict(alice, nbf=now + 3600)),
  "no_sub": token(hs, {"exp": now + 3600}),
  "no_exp": token(hs, {"sub": "alice"}),
  "garbage": "not.a.token",
  "oversized": token(hs, dict(alice, pad="x" * 5000)),
  "bob": token(hs, {"sub": "bob", "exp": now + 3600}),
  "reader": token(hs, {"sub": "rita", "exp": now + 3600, "rooms": ["news-*"], "publish": ["news-1"]}),
}
for k, v in out.items(): print(k, v)
"#;
    let output = std::process::Command::new("python3")
        .args(["-c", SCRIPT, SECRET])
        .output()
        .expect("python3 runs (the test command installs it)");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (name, token) = line.split_once(' ').unwrap();
            (name.to_string(), token.to_string())
        })
        .collect()
}

/// `--auth first-message`, with a short deadline for the token.
fn first_message(c: &mut Config) {
    c.auth = AuthMode::FirstMessage;
    c.handshake_timeout = Duration::from_millis(500);
}

fn with_jwt(c: &mut Config) {
    c.jwt_secret = Some(SECRET.into());
    c.poll_timeout = Duration::from_millis(200);
}

/// The status of each transport's answer to `token` in room `lobby`: WebSocket
/// handshake (query and header), SSE, long poll, publish.
fn statuses(server: &threadcast::ServerHandle, token: &str) -> [u16; 5] {
    statuses_in(server, "lobby", token)
}

/// [`statuses`] in `room`.
fn statuses_in(server: &threadcast::ServerHandle, room: &str, token: &str) -> [u16; 5] {
    let addr = server.http_addr();
    let bearer = format!("Bearer {token}");
    let ws_query = raw_request(
        addr,
        upgrade_request(&format!("/ws/{room}?token={token}"), ""),
    )
    .1;
    let ws_header = raw_request(
        addr,
        upgrade_request(
            &format!("/ws/{room}"),
            &format!("Authorization: {bearer}\r\n"),
        ),
    )
    .1;
    let sse = raw_request(
        addr,
        format!("GET /events/{room}?token={token} HTTP/1.1\r\nHost: {addr}\r\n\r\n"),
    )
    .1;
    let with_bearer = [("Authorization", bearer.as_str())];
    let [poll, publish] = [("GET", "poll"), ("POST", "publish")].map(|(method, what)| {
        http(
            addr,
            method,
            &format!("/{what}/{room}"),
            &with_bearer,
            b"hi",
        )
        .status
    });
    [ws_query, ws_header, sse, poll, publish]
}

#[test]
fn a_token_from_another_implementation_is_accepted_on_every_transport() {
    let tokens = python_tokens();
    let server = start_with(with_jwt);
    assert_eq!(
        statuses(&server, &tokens["valid"]),
        [101, 101, 200, 200, 202]
    );
}

#[test]
fn forged_expired_and_malformed_tokens_are_refused_on_every_transport() {
    let tokens = python_tokens();
    let server = start_with(with_jwt);
    for (name, token) in tokens
        .iter()
        .filter(|(name, _)| !GOOD.contains(&name.as_str()))
    {
        assert_eq!(statuses(&server, token), [401; 5], "{name}");
    }
    assert_eq!(statuses(&server, ""), [401; 5], "no token at all");
}

#[test]
fn the_shared_token_keeps_working_beside_signed_ones() {
    let tokens = python_tokens();
    let server = start_with(|c| {
        with_jwt(c);
        c.token = Some("shared-s3cret".into());
    });
    assert_eq!(
        statuses(&server, "shared-s3cret"),
        [101, 101, 200, 200, 202]
    );
    assert_eq!(
        statuses(&server, &tokens["valid"]),
        [101, 101, 200, 200, 202]
    );
    assert_eq!(statuses(&server, &tokens["expired"]), [401; 5]);
}

#[test]
fn a_signed_token_works_as_the_first_message() {
    let tokens = python_tokens();
    let server = start_with(|c| {
        with_jwt(c);
        first_message(c);
    });
    let mut ws = connect(&server, "/ws/vault?raw=1");
    ws.send(Message::text(tokens["valid"].clone())).unwrap();
    wait_for_members(&server, "vault", 1);
    let mut forged = connect(&server, "/ws/vault?raw=1");
    forged
        .send(Message::text(tokens["tampered"].clone()))
        .unwrap();
    assert_eq!(expect_close(&mut forged).0, CloseCode::Policy);
    assert_eq!(server.members("vault"), 1);
}

#[test]
fn refused_tokens_are_logged_by_reason_and_never_written_out() {
    let tokens = python_tokens();
    let mut command = binary_command();
    command
        .args([
            "--log-level",
            "trace",
            "--no-demo-feed",
            "--poll-timeout",
            "200ms",
        ])
        .env("THREADCAST_JWT_SECRET", SECRET);
    let mut server = Binary::start(command);
    for token in tokens.values() {
        let target = format!("/ws/lobby?token={token}");
        // The answer's head is read: the server has checked the token by then.
        raw_request(server.http, upgrade_request(&target, ""));
        // The HTTP transports, with the token in the query and in the header.
        let addr = server.http;
        let sse = format!("GET /events/lobby?token={token} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        raw_request(addr, sse);
        let bearer = format!("Bearer {token}");
        for (method, what) in [("GET", "poll"), ("POST", "publish")] {
            http(
                addr,
                method,
                &format!("/{what}/lobby?token={token}"),
                &[],
                b"x",
            );
            let with = [("Authorization", bearer.as_str())];
            http(addr, method, &format!("/{what}/lobby"), &with, b"x");
        }
    }
    server.child.kill().unwrap();
    let _ = server.child.wait();
    let logs: Vec<String> = server.logs.by_ref().collect();
    assert!(
        logs.iter()
            .any(|l| l.contains("refused a signed token: token expired")),
        "the reason is logged"
    );
    for (name, token) in &tokens {
        // Every piece long enough to identify the token (the header piece is the same
        // in many tokens and says nothing secret).
        for piece in token.split('.').skip(1).filter(|p| p.len() >= 8) {
            assert!(
                logs.iter().all(|l| !l.contains(piece)),
                "{name}: a piece of the token is in the log"
            );
        }
    }
}

fn with_rights(c: &mut Config) {
    with_jwt(c);
    c.admin_token = Some(ADMIN.into());
    c.token = Some("shared-s3cret".into());
}

/// The next text message's text, skipping control frames of the enveloped protocol
/// (`welcome`, `members`, `join`, `leave`).
fn next_text(ws: &mut tungstenite::WebSocket<std::net::TcpStream>) -> String {
    const SKIPPED: [&str; 4] = ["welcome", "members", "join", "leave"];
    loop {
        let text = next_data(ws).into_text().unwrap().to_string();
        if !SKIPPED
            .map(|t| format!(r#"{{"type":"{t}""#))
            .iter()
            .any(|p| text.starts_with(p))
        {
            return text;
        }
    }
}

#[test]
fn a_personal_room_admits_only_its_owner_on_every_transport() {
    let tokens = python_tokens();
    let server = start_with(with_rights);
    assert_eq!(
        statuses_in(&server, "@alice", &tokens["valid"]),
        [101, 101, 200, 200, 202]
    );
    assert_eq!(
        statuses_in(&server, "@alice", &tokens["bob"]),
        [403; 5],
        "bob"
    );
    assert_eq!(
        statuses_in(&server, "@alice", "shared-s3cret"),
        [403; 5],
        "no identity"
    );
    assert_eq!(
        statuses_in(&server, "@alice", &tokens["reader"]),
        [403; 5],
        "patterns"
    );
    // Not even history: a resume from the start is refused like a live join.
    let addr = server.http_addr();
    let bearer = format!("Bearer {}", tokens["bob"]);
    let since = http(
        addr,
        "GET",
        "/poll/@alice?since=0",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(since.status, 403);
    let ws_since = upgrade_request(&format!("/ws/@alice?since=0&token={}", tokens["bob"]), "");
    assert_eq!(raw_request(addr, ws_since).1, 403);
}

#[test]
fn the_operator_pushes_into_a_personal_room_and_every_tab_and_a_resume_get_it() {
    let tokens = python_tokens();
    let server = start_with(with_rights);
    let path = format!("/ws/@alice?raw=1&token={}", tokens["valid"]);
    let mut tabs = [connect(&server, &path), connect(&server, &path)];
    wait_for_members(&server, "@alice", 2);
    let push = |token: &str| {
        let bearer = format!("Bearer {token}");
        let with = [("Authorization", bearer.as_str())];
        http(
            server.http_addr(),
            "POST",
            "/publish/@alice",
            &with,
            b"your order shipped",
        )
        .status
    };
    assert_eq!(
        push("shared-s3cret"),
        403,
        "the shared token is not the operator"
    );
    assert_eq!(push(&tokens["bob"]), 403);
    assert_eq!(push(ADMIN), 202);
    for tab in &mut tabs {
        assert_eq!(next_data(tab), Message::text("your order shipped"));
    }
    // A tab that comes back later reads it from the room's history (enveloped: raw
    // clients get no catch-up).
    let resume = format!("/ws/@alice?since=0&token={}", tokens["valid"]);
    let mut later = connect(&server, &resume);
    let replayed = next_text(&mut later);
    assert!(replayed.ends_with("\nyour order shipped"), "{replayed}");
}

#[test]
fn a_token_s_patterns_limit_what_it_may_join_and_publish() {
    let tokens = python_tokens();
    let server = start_with(with_rights);
    let rita = &tokens["reader"];
    assert_eq!(statuses_in(&server, "lobby", rita), [403; 5]);
    assert_eq!(
        statuses_in(&server, "news-1", rita),
        [101, 101, 200, 200, 202]
    );
    let [ws, _, sse, poll, publish] = statuses_in(&server, "news-2", rita);
    assert_eq!(
        [ws, sse, poll, publish],
        [101, 200, 200, 403],
        "read, not write"
    );

    // Over a WebSocket a refused publish gets an error frame and goes nowhere; the
    // connection stays.
    let mut observer = connect(&server, &format!("/ws/news-2?token={}", tokens["valid"]));
    let mut reader = connect(&server, &format!("/ws/news-2?token={rita}"));
    wait_for_members(&server, "news-2", 2);
    reader.send(Message::text("not mine to say")).unwrap();
    let refusal = next_text(&mut reader);
    assert!(
        refusal.starts_with(r#"{"type":"error","reason":"not allowed"#),
        "{refusal}"
    );
    observer.send(Message::text("alice speaks")).unwrap();
    for ws in [&mut observer, &mut reader] {
        let text = next_text(ws);
        assert!(
            text.ends_with("\nalice speaks"),
            "the first message is alice's: {text}"
        );
    }
}

#[test]
fn under_first_message_auth_a_personal_room_still_admits_only_its_owner() {
    let tokens = python_tokens();
    let server = start_with(|c| {
        with_rights(c);
        first_message(c);
    });
    let mut bob = connect(&server, "/ws/@alice?raw=1");
    bob.send(Message::text(tokens["bob"].clone())).unwrap();
    let (code, reason) = expect_close(&mut bob);
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.starts_with("not allowed in this room"), "{reason}");
    let mut alice = connect(&server, "/ws/@alice?raw=1");
    alice.send(Message::text(tokens["valid"].clone())).unwrap();
    wait_for_members(&server, "@alice", 1);
}

#[test]
fn stats_lists_room_names_to_the_operator_only() {
    let tokens = python_tokens();
    let server = start_with(with_rights);
    let alice = format!("/ws/@alice?raw=1&token={}", tokens["valid"]);
    let _tab = connect(&server, &alice);
    wait_for_members(&server, "@alice", 1);
    let stats = |token: &str| get(server.http_addr(), &format!("/stats?token={token}"));
    // With --admin-token set, /stats and /metrics are the operator's.
    for token in ["", "shared-s3cret", tokens["valid"].as_str()] {
        assert_eq!(stats(token).status, 401, "{token:?}");
        let metrics = get(server.http_addr(), &format!("/metrics?token={token}"));
        assert_eq!(metrics.status, 401);
    }
    let operator = stats(ADMIN);
    assert_eq!(operator.status, 200);
    assert!(
        operator.text().contains("\"@alice\""),
        "{}",
        operator.text()
    );

    // Without one, a signed token's user may read the figures but not the names:
    // they would tell who is online.
    let open = start_with(with_jwt);
    let _tab = connect(&open, &alice);
    wait_for_members(&open, "@alice", 1);
    let user = get(open.http_addr(), &format!("/stats?token={}", tokens["bob"]));
    assert_eq!(user.status, 200);
    assert!(!user.text().contains("@alice"), "{}", user.text());
}
