//! The operator's API (`--admin-token`, issue 15): every endpoint with and without
//! the operator's token, and what each does to real connections — a message into
//! several rooms, the room list, presence, deleting a room (4004) and disconnecting
//! a user (4003) on every transport.

mod common;

use std::time::Duration;

use common::tokens::{ADMIN, SECRET, mint};
use common::*;
use threadcast::{Config, ServerHandle};
use tungstenite::Message;

/// The shared token, for connections with no identity.
const SHARED: &str = "shared-s3cret";

fn with_operator(c: &mut Config) {
    c.token = Some(SHARED.into());
    c.jwt_secret = Some(SECRET.into());
    c.admin_token = Some(ADMIN.into());
    c.poll_timeout = Duration::from_secs(5);
}

/// A request to `server` with `token` as its bearer token (none if empty).
fn call(
    server: &ServerHandle,
    method: &str,
    target: &str,
    token: &str,
    body: &[u8],
) -> HttpResponse {
    let bearer = format!("Bearer {token}");
    let headers: &[(&str, &str)] = if token.is_empty() {
        &[]
    } else {
        &[("Authorization", &bearer)]
    };
    http(server.http_addr(), method, target, headers, body)
}

const ENDPOINTS: [(&str, &str); 5] = [
    ("POST", "/publish?room=a&room=b"),
    ("GET", "/rooms"),
    ("GET", "/presence/lobby"),
    ("DELETE", "/rooms/lobby"),
    ("POST", "/disconnect/alice"),
];

#[test]
fn only_the_operator_may_call_the_api() {
    let server = start_with(with_operator);
    let alice = mint(r#"{"sub":"alice"}"#, 3600);
    for (method, target) in ENDPOINTS {
        for token in ["", "wrong", alice.as_str()] {
            let status = call(&server, method, target, token, b"x").status;
            assert_eq!(status, 401, "{method} {target} with {token:?}");
        }
    }
    // A server with no operator has no operator API.
    let open = start();
    for (method, target) in ENDPOINTS {
        assert_eq!(
            call(&open, method, target, ADMIN, b"x").status,
            403,
            "{method} {target}"
        );
    }
}

#[test]
fn one_message_into_several_rooms_and_the_room_list() {
    let server = start_with(with_operator);
    let alice = mint(r#"{"sub":"alice"}"#, 3600);
    let mut lobby = connect(&server, &format!("/ws/lobby?raw=1&token={SHARED}"));
    let mut mine = connect(&server, &format!("/ws/@alice?raw=1&token={alice}"));
    wait_for_members(&server, "@alice", 1);
    wait_for_members(&server, "lobby", 1);
    let answer = call(
        &server,
        "POST",
        "/publish?room=lobby&room=%40alice&cid=n-1",
        ADMIN,
        b"notice",
    );
    assert_eq!(answer.status, 202);
    let text = answer.text();
    assert!(
        text.starts_with(r#"{"rooms":[{"room":"lobby","delivered":1,"id":1,"#),
        "{text}"
    );
    assert!(
        text.contains(r#"{"room":"@alice","delivered":1,"id":1,"#),
        "{text}"
    );
    for ws in [&mut lobby, &mut mine] {
        assert_eq!(next_data(ws), Message::text("notice"));
    }
    // The same cid again: each room drops its repeat.
    let again = call(
        &server,
        "POST",
        "/publish?room=lobby&room=%40alice&cid=n-1",
        ADMIN,
        b"notice",
    );
    assert_eq!(again.text().matches(r#""duplicate":true"#).count(), 2);

    let too_many: String = (0..65).map(|i| format!("room=r{i}&")).collect();
    assert_eq!(
        call(
            &server,
            "POST",
            &format!("/publish?{too_many}"),
            ADMIN,
            b"x"
        )
        .status,
        400
    );
    assert_eq!(call(&server, "POST", "/publish", ADMIN, b"x").status, 400);
    assert_eq!(
        call(&server, "POST", "/publish?room=bad%20name", ADMIN, b"x").status,
        404
    );

    let rooms = call(&server, "GET", "/rooms", ADMIN, b"").text();
    assert!(
        rooms.starts_with(r#"{"rooms":[{"name":"@alice","members":1,"last_id":1,"#),
        "{rooms}"
    );
    assert!(
        rooms.contains(r#"{"name":"lobby","members":1,"last_id":1,"#),
        "{rooms}"
    );
}

#[test]
fn presence_lists_a_room_s_people() {
    let server = start_with(with_operator);
    let alice = mint(r#"{"sub":"alice","name":"Alice"}"#, 3600);
    let _tabs = [
        connect(&server, &format!("/ws/lobby?token={alice}")),
        connect(&server, &format!("/ws/lobby?raw=1&token={alice}")),
        connect(&server, &format!("/ws/lobby?raw=1&token={SHARED}")),
    ];
    wait_for_members(&server, "lobby", 3);
    let answer = call(&server, "GET", "/presence/lobby", ADMIN, b"");
    assert_eq!(
        answer.text(),
        r#"{"room":"lobby","members":3,"users":[{"sub":"alice","name":"Alice","connections":2}]}"#
    );
    assert_eq!(
        call(&server, "GET", "/presence/nowhere", ADMIN, b"").status,
        404
    );
}

#[test]
fn deleting_a_room_drops_its_history_and_closes_its_members_with_4004() {
    let server = start_with(with_operator);
    let addr = server.http_addr();
    server.publish("lobby", "old news").unwrap();
    let (mut ws, welcome) = frames::join(&server, "lobby", &format!("?token={SHARED}"));
    let old_epoch = frames::epoch_of(&welcome);
    let mut sse = open_stream(addr, &format!("/events/lobby?token={SHARED}"));
    read_until(&mut sse, "event: welcome");
    let answer = call(&server, "DELETE", "/rooms/lobby", ADMIN, b"");
    assert_eq!(answer.text(), r#"{"room":"lobby","closed":2}"#);
    let (code, reason) = expect_close(&mut ws);
    assert_eq!(
        (u16::from(code), reason.as_str()),
        (4004, "room deleted by the operator")
    );
    read_until(
        &mut sse,
        r#"event: close
data: {"type":"close","code":4004,"reason":"room deleted by the operator"}"#,
    );
    // Whoever comes back finds a new, empty room.
    let (_ws, welcome) = frames::join(&server, "lobby", &format!("?since=0&token={SHARED}"));
    assert!(
        matches!(welcome, frames::Frame::Welcome { last_id: 0, .. }),
        "{welcome:?}"
    );
    assert_ne!(frames::epoch_of(&welcome), old_epoch);
    assert_eq!(
        call(&server, "DELETE", "/rooms/nowhere", ADMIN, b"").status,
        404
    );
}

#[test]
fn disconnecting_a_user_closes_all_their_connections_with_4003() {
    let server = start_with(with_operator);
    let addr = server.http_addr();
    let alice = mint(r#"{"sub":"alice"}"#, 3600);
    let bob = mint(r#"{"sub":"bob"}"#, 3600);
    let mut tabs = [
        connect(&server, &format!("/ws/lobby?token={alice}")),
        connect(&server, &format!("/ws/@alice?token={alice}")),
        connect(&server, &format!("/echo?token={alice}")),
    ];
    let mut sse = open_stream(addr, &format!("/events/lobby?token={alice}"));
    read_until(&mut sse, "event: welcome");
    let poll = std::thread::spawn({
        let alice = alice.clone();
        move || http(addr, "GET", &format!("/poll/news?token={alice}"), &[], b"").text()
    });
    let mut bob_ws = connect(&server, &format!("/ws/lobby?token={bob}"));
    wait_for_members(&server, "lobby", 3);
    wait_for_members(&server, "news", 1);

    let answer = call(&server, "POST", "/disconnect/alice", ADMIN, b"").text();
    assert_eq!(answer, r#"{"sub":"alice","closed":5}"#);
    for tab in &mut tabs {
        let (code, reason) = expect_close(tab);
        assert_eq!(
            (u16::from(code), reason.as_str()),
            (4003, "disconnected by the operator")
        );
        let _ = tab.flush(); // our close reply: the server's reader ends
    }
    read_until(&mut sse, r#""code":4003"#);
    let polled = poll.join().unwrap();
    assert!(
        polled.contains(r#""closed":{"type":"close","code":4003,"#),
        "{polled}"
    );
    // Bob stays, and hears that alice left.
    let leave = r#"{"type":"leave","user":{"sub":"alice"}}"#;
    loop {
        let text = next_data(&mut bob_ws).into_text().unwrap().to_string();
        if text == leave {
            break;
        }
        assert!(!text.starts_with(r#"{"type":"message""#), "{text}");
    }
    assert_eq!(
        call(&server, "POST", "/disconnect/nobody", ADMIN, b"").text(),
        r#"{"sub":"nobody","closed":0}"#
    );
}

#[test]
fn a_flood_of_new_rooms_cannot_push_out_a_user_s_pending_messages() {
    let server = start_with(|c| {
        with_operator(c);
        c.max_idle_rooms = 4;
    });
    let pushed = call(
        &server,
        "POST",
        "/publish/@alice",
        ADMIN,
        b"your order shipped",
    );
    assert_eq!(pushed.status, 202);
    // An attacker with the shared token invents rooms, far past the idle-room limit.
    for i in 0..40 {
        let target = format!("/publish/flood-{i}?token={SHARED}");
        assert_eq!(call(&server, "POST", &target, "", b"x").status, 202);
    }
    let rooms = call(&server, "GET", "/rooms", ADMIN, b"").text();
    assert_eq!(rooms.matches(r#""name":"flood-"#).count(), 4, "{rooms}");
    // Alice comes online later and finds her message.
    let alice = mint(r#"{"sub":"alice"}"#, 3600);
    let (mut ws, _) = frames::join(&server, "@alice", &format!("?since=0&token={alice}"));
    let frames::Frame::Message { payload, .. } = frames::next_frame(&mut ws) else {
        panic!("the pending message")
    };
    assert_eq!(payload, b"your order shipped");
}
