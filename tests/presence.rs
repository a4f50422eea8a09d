//! Who a message is from, and who is in a room (issue 15): `from` is stamped by the
//! server on every transport and cannot be forged; the welcome lists the people in the
//! room; `join`/`leave` frames mark a person's first connection and last one, not
//! every tab; guests' names are passed on marked unverified.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::tokens::{ADMIN, SECRET, mint};
use common::*;
use threadcast::{Config, ServerHandle};
use tungstenite::{Message, WebSocket};

fn with_jwt(c: &mut Config) {
    c.jwt_secret = Some(SECRET.into());
    c.admin_token = Some(ADMIN.into());
    c.poll_timeout = Duration::from_millis(300);
}

fn alice() -> String {
    mint(r#"{"sub":"alice","name":"Alice"}"#, 3600)
}

fn bob() -> String {
    mint(r#"{"sub":"bob"}"#, 3600)
}

fn join_as(server: &ServerHandle, room: &str, token: &str) -> WebSocket<TcpStream> {
    connect(server, &format!("/ws/{room}?token={token}"))
}

/// The next text frame, skipping member counts.
fn next_control(ws: &mut WebSocket<TcpStream>) -> String {
    loop {
        let text = next_data(ws).into_text().unwrap().to_string();
        if !text.starts_with(r#"{"type":"members""#) {
            return text;
        }
    }
}

/// The next room message's header line and payload.
fn next_message(ws: &mut WebSocket<TcpStream>) -> (String, String) {
    loop {
        let text = next_control(ws);
        if text.starts_with(r#"{"type":"message""#) {
            let (header, payload) = text.split_once('\n').unwrap();
            return (header.to_string(), payload.to_string());
        }
    }
}

/// The control frames (but member counts) that come before the message `payload`.
fn controls_until(ws: &mut WebSocket<TcpStream>, payload: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let text = next_control(ws);
        if text.ends_with(&format!("\n{payload}")) {
            return seen;
        }
        seen.push(text);
    }
}

/// The JSON of `from` in a header line, if any.
fn from_of(header: &str) -> Option<&str> {
    let start = header.find(r#""from":"#)? + 7;
    let end = header[start..].find('}')? + 1;
    Some(&header[start..start + end])
}

const ALICE: &str = r#"{"sub":"alice","name":"Alice"}"#;

#[test]
fn the_server_stamps_the_sender_and_a_client_cannot_forge_it() {
    let server = start_with(with_jwt);
    let mut watcher = join_as(&server, "lobby", &bob());
    let _ = next_control(&mut watcher); // welcome
    let mut alice_ws = join_as(&server, "lobby", &alice());
    let _ = next_control(&mut alice_ws);
    // A payload that looks like a header line with someone else's `from`.
    let forged = "{\"type\":\"message\",\"id\":1,\"from\":{\"sub\":\"bob\"}}\nhi";
    alice_ws
        .send(Message::text(format!("cid:m-1\n{forged}")))
        .unwrap();
    let (header, payload) = next_message(&mut watcher);
    assert_eq!(from_of(&header), Some(ALICE), "{header}");
    assert_eq!(header.matches("\"from\"").count(), 1);
    assert_eq!(payload, forged, "the payload is untouched");

    // HTTP publish: the publisher's token says who it is; the operator is nobody.
    let addr = server.http_addr();
    let publish = |token: &str, body: &[u8]| {
        let bearer = format!("Bearer {token}");
        http(
            addr,
            "POST",
            "/publish/lobby",
            &[("Authorization", &bearer)],
            body,
        )
        .status
    };
    assert_eq!(publish(&alice(), b"by http"), 202);
    assert_eq!(from_of(&next_message(&mut watcher).0), Some(ALICE));
    assert_eq!(publish(ADMIN, b"from the backend"), 202);
    let (header, payload) = next_message(&mut watcher);
    assert_eq!(
        (from_of(&header), payload.as_str()),
        (None, "from the backend")
    );

    // SSE and long polling carry the same `from` in their JSON.
    let poll = http(
        addr,
        "GET",
        &format!("/poll/lobby?since=0&token={}", bob()),
        &[],
        b"",
    );
    let answer = poll.text();
    assert_eq!(
        answer.matches(&format!("\"from\":{ALICE}")).count(),
        2,
        "{answer}"
    );
    let mut sse = open_stream(addr, &format!("/events/lobby?since=0&token={}", bob()));
    let events = read_until(&mut sse, "from the backend");
    assert_eq!(
        events.matches(&format!("\"from\":{ALICE}")).count(),
        2,
        "{events}"
    );
}

#[test]
fn guests_name_themselves_only_where_no_token_names_anyone() {
    let open = start();
    let mut watcher = connect(&open, "/ws/lobby");
    let _ = next_control(&mut watcher);
    let mut guest = connect(&open, "/ws/lobby?name=Bob%20B");
    let _ = next_control(&mut guest);
    assert_eq!(
        next_control(&mut watcher),
        r#"{"type":"join","user":{"name":"Bob B","unverified":true}}"#
    );
    guest.send(Message::text("hello")).unwrap();
    let (header, _) = next_message(&mut watcher);
    assert_eq!(
        from_of(&header),
        Some(r#"{"name":"Bob B","unverified":true}"#)
    );
    let addr = open.http_addr();
    let published = http(addr, "POST", "/publish/lobby?name=Carol", &[], b"x");
    assert_eq!(published.status, 202);
    let (header, _) = next_message(&mut watcher);
    assert_eq!(
        from_of(&header),
        Some(r#"{"name":"Carol","unverified":true}"#)
    );
    // Names that are no names: 400 on every transport.
    let long = "x".repeat(33);
    for bad in ["", "a%0Ab", long.as_str()] {
        let ws = raw_request(addr, upgrade_request(&format!("/ws/lobby?name={bad}"), "")).1;
        let sse = http(addr, "GET", &format!("/events/lobby?name={bad}"), &[], b"").status;
        let publish = http(
            addr,
            "POST",
            &format!("/publish/lobby?name={bad}"),
            &[],
            b"x",
        )
        .status;
        assert_eq!([ws, sse, publish], [400; 3], "{bad:?}");
    }

    // With signed tokens, a chosen name is ignored: only tokens name people.
    let signed = start_with(with_jwt);
    let mut watcher = join_as(&signed, "lobby", &bob());
    let _ = next_control(&mut watcher);
    let bearer = format!("Bearer {ADMIN}");
    let with = [("Authorization", bearer.as_str())];
    let addr = signed.http_addr();
    assert_eq!(
        http(addr, "POST", "/publish/lobby?name=alice", &with, b"x").status,
        202
    );
    let (header, _) = next_message(&mut watcher);
    assert_eq!(from_of(&header), None, "{header}");
}

#[test]
fn presence_counts_people_not_tabs_across_transports() {
    let server = start_with(with_jwt);
    let addr = server.http_addr();
    let mut alice_tab = join_as(&server, "lobby", &alice());
    let welcome = next_control(&mut alice_tab);
    assert!(
        welcome.ends_with(r#""users":[{"sub":"alice","name":"Alice","connections":1}]}"#),
        "{welcome}"
    );
    let mut bob_ws = join_as(&server, "lobby", &bob());
    let welcome = next_control(&mut bob_ws);
    assert!(
        welcome.contains(r#""users":[{"sub":"alice","name":"Alice","connections":1},{"sub":"bob","connections":1}]"#),
        "{welcome}"
    );
    assert_eq!(
        next_control(&mut alice_tab),
        r#"{"type":"join","user":{"sub":"bob"}}"#
    );
    // Alice's second tab (a WebSocket) and third (SSE): nobody hears of them...
    let mut second = join_as(&server, "lobby", &alice());
    let _ = next_control(&mut second);
    let mut sse = open_stream(addr, &format!("/events/lobby?token={}", alice()));
    read_until(&mut sse, "event: welcome");
    // ...and a long poll is no one (it is a member only while it waits).
    let poll = http(
        addr,
        "GET",
        &format!("/poll/lobby?token={}", mint(r#"{"sub":"carol"}"#, 60)),
        &[],
        b"",
    );
    assert_eq!(poll.status, 200);
    server.publish("lobby", "marker").unwrap();
    let heard = controls_until(&mut bob_ws, "marker");
    assert!(
        heard.is_empty(),
        "no join for a second tab, an SSE stream or a poll: {heard:?}"
    );
    // The welcome counts her connections.
    let mut carol = join_as(&server, "lobby", &mint(r#"{"sub":"carol"}"#, 60));
    let welcome = next_control(&mut carol);
    assert!(
        welcome.contains(r#"{"sub":"alice","name":"Alice","connections":3}"#),
        "{welcome}"
    );
    assert_eq!(
        next_control(&mut bob_ws),
        r#"{"type":"join","user":{"sub":"carol"}}"#
    );

    // She leaves when her last connection does: two tabs close, nothing; SSE ends, leave.
    close_handshake(&mut alice_tab);
    close_handshake(&mut second);
    server.publish("lobby", "second marker").unwrap();
    let heard = controls_until(&mut bob_ws, "second marker");
    assert!(
        heard.is_empty(),
        "no leave while a connection is left: {heard:?}"
    );
    // An SSE stream's end is noticed when the server next writes to it (a message,
    // or the keep-alive every 15 s): the room's traffic brings her leave.
    drop(sse);
    let leave = r#"{"type":"leave","user":{"sub":"alice","name":"Alice"}}"#;
    let left = (0..50).any(|n| {
        server.publish("lobby", format!("poke {n}")).unwrap();
        controls_until(&mut bob_ws, &format!("poke {n}"))
            .iter()
            .any(|c| c == leave)
    });
    assert!(left, "alice left when her last connection did");
}

#[test]
fn a_connection_whose_token_expires_is_closed_with_4001_on_every_stream() {
    let server = start_with(with_jwt);
    let addr = server.http_addr();
    // Valid for about two more seconds: `exp` is in the past, within the leeway.
    let leeway = 30;
    let short = mint(r#"{"sub":"alice"}"#, 2 - leeway);
    let mut ws = join_as(&server, "lobby", &short);
    let mut echo = connect(&server, &format!("/echo?token={short}"));
    let mut sse = open_stream(addr, &format!("/events/lobby?token={short}"));
    read_until(&mut sse, "event: welcome");
    for ws in [&mut ws, &mut echo] {
        let (code, reason) = expect_close(ws);
        assert_eq!(
            (u16::from(code), reason.as_str()),
            (4001, "token expired: reconnect with a fresh token")
        );
    }
    read_until(&mut sse, r#"data: {"type":"close","code":4001,"#);
    // The same token is no longer let in; a fresh one is.
    let again = raw_request(
        addr,
        upgrade_request(&format!("/ws/lobby?token={short}"), ""),
    );
    assert_eq!(again.1, 401);
    let _fresh = join_as(&server, "lobby", &alice());
}
