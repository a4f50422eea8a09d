//! WebSocket behaviour of the core server: echo, rooms, heartbeats, close codes,
//! limits and admission checks. Every test starts its own server on ephemeral ports.

mod common;

use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Bytes, Message};

#[test]
fn echo_returns_text_and_binary_unchanged_at_every_length_encoding() {
    let server = start();
    let mut ws = connect(&server, "/echo");
    for len in [0usize, 125, 126, 64 * 1024, 1 << 20] {
        let text = "é".repeat(len / 2) + &"x".repeat(len % 2);
        ws.send(Message::text(text.clone())).unwrap();
        assert_eq!(
            next_data(&mut ws),
            Message::text(text),
            "text of {len} bytes"
        );

        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        ws.send(Message::binary(bytes.clone())).unwrap();
        assert_eq!(
            next_data(&mut ws),
            Message::binary(bytes),
            "binary of {len} bytes"
        );
    }
}

#[test]
fn a_frame_sent_right_behind_the_handshake_is_not_lost() {
    let server = start();
    let mut request = upgrade_request("/echo", "").into_bytes();
    request.extend(frame(true, op::TEXT, b"early"));
    let (mut stream, status, _) = raw_request(server.ws_addr(), &request);
    assert_eq!(status, 101);
    let echoed = read_non_ping(&mut stream).unwrap();
    assert_eq!(
        (echoed.opcode, echoed.payload.as_slice()),
        (op::TEXT, &b"early"[..])
    );
}

#[test]
fn broadcast_reaches_every_member_of_the_room_and_no_one_else() {
    let server = start();
    let mut alice = connect(&server, "/ws/kitchen?raw=1");
    let mut bob = connect(&server, "/ws/kitchen?raw=1");
    let mut carol = connect(&server, "/ws/garden?raw=1");
    // The hub applies joins in order, so once the publish reports two members both
    // have joined; then a message from alice reaches both, sender included.
    wait_for_members(&server, "kitchen", 2);
    wait_for_members(&server, "garden", 1);
    alice.send(Message::text("soup is ready")).unwrap();
    assert_eq!(next_data(&mut alice), Message::text("soup is ready"));
    assert_eq!(next_data(&mut bob), Message::text("soup is ready"));
    alice.send(Message::binary(vec![1, 2, 3])).unwrap();
    assert_eq!(
        next_data(&mut bob),
        Message::binary(vec![1, 2, 3]),
        "binary stays binary"
    );

    // Carol's room gets its own message, and nothing of the kitchen's.
    server.publish("garden", "roses").unwrap();
    assert_eq!(next_data(&mut carol), Message::text("roses"));
}

#[test]
fn a_room_of_200_clients_receives_100_messages_in_order() {
    let server = start();
    let mut clients: Vec<_> = (0..200)
        .map(|_| connect(&server, "/ws/big?raw=1"))
        .collect();
    wait_for_members(&server, "big", 200);
    for i in 0..100 {
        assert_eq!(server.publish("big", format!("message {i}")).unwrap(), 200);
    }
    for client in &mut clients {
        for i in 0..100 {
            assert_eq!(next_data(client), Message::text(format!("message {i}")));
        }
    }
}

#[test]
fn a_slow_consumer_is_closed_with_1008_while_others_keep_receiving() {
    let server = start_with(|c| c.send_queue = 4);
    let mut slow = connect(&server, "/ws/feed?raw=1");
    let mut fast = connect(&server, "/ws/feed?raw=1");
    wait_for_members(&server, "feed", 2);

    // The fast member reads in its own thread and acknowledges each message, so the
    // publisher never gets ahead of it; the slow member reads nothing at all.
    let (ack_tx, ack_rx) = crossbeam_channel::unbounded();
    let reader = thread::spawn(move || {
        let mut received = 0;
        while received < 300 {
            let _ = next_data(&mut fast);
            received += 1;
            ack_tx.send(received).unwrap();
        }
        received
    });
    let payload = vec![7u8; 64 * 1024];
    let mut reached_after_kick = None;
    for i in 0..300 {
        let reached = server
            .publish("feed", Message::binary(payload.clone()))
            .unwrap();
        if reached == 1 && reached_after_kick.is_none() {
            reached_after_kick = Some(i);
        }
        ack_rx
            .recv_timeout(TEST_TIMEOUT)
            .expect("fast member keeps receiving");
    }
    assert_eq!(
        reader.join().unwrap(),
        300,
        "the fast member got every message"
    );
    assert!(
        reached_after_kick.is_some(),
        "the slow member was dropped from the room"
    );

    // When the slow client finally reads, it finds what fitted in its queue and the
    // socket buffers, then the close frame that explains why.
    let (code, reason) = expect_close(&mut slow);
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("slow consumer"), "{reason}");
    assert!(
        get(server.http_addr(), "/stats")
            .text()
            .contains("\"slow_consumer_disconnects\":1")
    );
}

#[test]
fn a_ping_gets_a_pong_with_the_same_payload() {
    let server = start();
    for path in ["/echo", "/ws/pingers?raw=1"] {
        let mut stream = raw_connect(server.ws_addr(), path);
        stream
            .write_all(&frame(true, op::PING, b"are you there?"))
            .unwrap();
        let pong = read_non_ping(&mut stream).unwrap();
        assert_eq!(
            (pong.opcode, pong.payload.as_slice()),
            (op::PONG, &b"are you there?"[..]),
            "{path}"
        );
    }
}

#[test]
fn a_ping_between_fragments_is_answered_before_the_message_completes() {
    let server = start();
    let mut stream = raw_connect(server.ws_addr(), "/echo");
    stream
        .write_all(&frame(false, op::TEXT, b"hello "))
        .unwrap();
    stream.write_all(&frame(true, op::PING, b"mid")).unwrap();
    // The message is still incomplete, yet the pong must come now.
    let pong = read_non_ping(&mut stream).unwrap();
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (op::PONG, &b"mid"[..])
    );
    stream
        .write_all(&frame(true, op::CONTINUATION, b"world"))
        .unwrap();
    let text = read_non_ping(&mut stream).unwrap();
    assert_eq!(
        (text.opcode, text.payload.as_slice()),
        (op::TEXT, &b"hello world"[..])
    );
}

#[test]
fn the_server_pings_idle_clients_and_drops_silent_ones_after_the_pong_timeout() {
    let server = start_with(|c| {
        c.ping_interval = Duration::from_millis(100);
        c.pong_timeout = Duration::from_millis(400);
    });
    // A raw client that reads but never answers: it sees pings, then the end.
    let mut silent = raw_connect(server.ws_addr(), "/echo");
    let started = Instant::now();
    let first = read_frame(&mut silent).expect("a ping");
    assert_eq!(first.opcode, op::PING);
    while read_frame(&mut silent).is_some() {}
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "dropped too early"
    );

    // A tungstenite client answers pings as it reads, so it survives many timeouts.
    let mut alive = connect(&server, "/echo");
    let until = Instant::now() + Duration::from_millis(1200);
    alive
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    while Instant::now() < until {
        match alive.read() {
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("a client answering pings was dropped: {e}"),
        }
    }
    alive
        .get_ref()
        .set_read_timeout(Some(TEST_TIMEOUT))
        .unwrap();
    alive.send(Message::text("still here")).unwrap();
    assert_eq!(next_data(&mut alive), Message::text("still here"));
}

#[test]
fn a_client_close_is_answered_with_the_same_code_then_the_tcp_connection_ends() {
    let server = start();
    for (code, reason) in [
        (1000u16, "bye"),
        (1001, ""),
        (3000, "app"),
        (4999, "custom"),
    ] {
        let mut stream = raw_connect(server.ws_addr(), "/echo");
        stream
            .write_all(&frame(true, op::CLOSE, &close_payload(code, reason)))
            .unwrap();
        assert_eq!(expect_raw_close(&mut stream), code);
    }
}

#[test]
fn protocol_errors_close_with_the_matching_code() {
    let server = start_with(|c| c.max_message_bytes = 1024);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "invalid close code",
            frame(true, op::CLOSE, &close_payload(1005, "")),
            1002,
        ),
        ("reserved opcode", frame(true, 0x3, b""), 1002),
        (
            "RSV1 without extension",
            frame_with(true, 0x40, op::TEXT, b"x", true),
            1002,
        ),
        (
            "unmasked client frame",
            frame_with(true, 0, op::TEXT, b"x", false),
            1002,
        ),
        (
            "continuation without start",
            frame(true, op::CONTINUATION, b"x"),
            1002,
        ),
        (
            "invalid UTF-8",
            frame(true, op::TEXT, &[0xce, 0xba, 0xff]),
            1007,
        ),
        (
            "oversize message",
            frame(true, op::BINARY, &[0u8; 2000]),
            1009,
        ),
    ];
    for (name, bytes, expected) in cases {
        let mut stream = raw_connect(server.ws_addr(), "/echo");
        stream.write_all(&bytes).unwrap();
        assert_eq!(expect_raw_close(&mut stream), expected, "{name}");
    }
}

#[test]
fn an_oversize_message_is_refused_with_1009_through_tungstenite_too() {
    let server = start_with(|c| c.max_message_bytes = 1000);
    let mut ws = connect(&server, "/ws/big?raw=1");
    ws.send(Message::binary(Bytes::from(vec![0u8; 1001])))
        .unwrap();
    assert_eq!(expect_close(&mut ws).0, CloseCode::Size);
}

#[test]
fn handshakes_from_another_site_are_refused_with_403() {
    let server = start_with(|c| c.allowed_origins = vec!["https://trusted.example".into()]);
    let addr = server.ws_addr();
    let evil = upgrade_request("/echo", "Origin: https://evil.example\r\n");
    assert_eq!(raw_request(addr, &evil).1, 403);
    // The page served from the same host (other port) passes, and so does a listed origin.
    let same_host = upgrade_request("/echo", "Origin: http://127.0.0.1:8080\r\n");
    assert_eq!(raw_request(addr, &same_host).1, 101);
    let trusted = upgrade_request("/echo", "Origin: https://trusted.example\r\n");
    assert_eq!(raw_request(addr, &trusted).1, 101);
}

#[test]
fn a_token_is_required_when_set_and_accepted_by_header_or_query() {
    let server = start_with(|c| c.token = Some("s3cret".into()));
    let addr = server.ws_addr();
    assert_eq!(raw_request(addr, upgrade_request("/ws/a", "")).1, 401);
    assert_eq!(
        raw_request(addr, upgrade_request("/ws/a?token=wrong", "")).1,
        401
    );
    assert_eq!(
        raw_request(addr, upgrade_request("/ws/a?token=s3cret", "")).1,
        101
    );
    assert_eq!(
        raw_request(
            addr,
            upgrade_request("/ws/a", "Authorization: Bearer s3cret\r\n")
        )
        .1,
        101
    );
}

#[test]
fn handshakes_beyond_max_connections_get_503_until_one_closes() {
    let server = start_with(|c| c.max_connections = 2);
    let mut a = connect(&server, "/echo");
    let _b = connect(&server, "/echo");
    assert_eq!(
        raw_request(server.ws_addr(), upgrade_request("/echo", "")).1,
        503
    );
    a.close(None).unwrap();
    while a.read().is_ok() {} // wait for the close handshake to finish
    let deadline = Instant::now() + TEST_TIMEOUT;
    while server.connections() > 1 {
        assert!(
            Instant::now() < deadline,
            "the closed connection never freed its slot"
        );
        thread::yield_now();
    }
    assert_eq!(
        raw_request(server.ws_addr(), upgrade_request("/echo", "")).1,
        101
    );
}

#[test]
fn wrong_paths_get_404_and_plain_http_gets_426_pointing_to_the_page() {
    let server = start();
    let addr = server.ws_addr();
    assert_eq!(raw_request(addr, upgrade_request("/nowhere", "")).1, 404);
    assert_eq!(raw_request(addr, upgrade_request("/ws/has.dot", "")).1, 404);
    assert_eq!(
        raw_request(
            addr,
            upgrade_request(&format!("/ws/{}", "a".repeat(65)), "")
        )
        .1,
        404
    );

    let plain = get(addr, "/echo");
    assert_eq!(plain.status, 426);
    assert_eq!(plain.header("Sec-WebSocket-Version").as_deref(), Some("13"));
    assert!(
        plain.text().contains("the page is at /"),
        "{}",
        plain.text()
    );

    let old = upgrade_request("/echo", "").replace("Version: 13", "Version: 8");
    let (_, status, head) = raw_request(addr, &old);
    assert_eq!(status, 426);
    assert!(head.contains("Sec-WebSocket-Version: 13"));
}

#[test]
fn room_names_ignore_the_query_string_and_raw_mode_is_accepted() {
    let server = start();
    let mut raw = connect(&server, "/ws/lobby?raw=1");
    let mut plain = connect(&server, "/ws/lobby?x=1");
    wait_for_members(&server, "lobby", 2);
    plain.send(Message::text("hi")).unwrap();
    assert_eq!(next_data(&mut raw), Message::text("hi"));
    // The enveloped member gets the same payload behind its header line.
    loop {
        let text = next_data(&mut plain).into_text().unwrap();
        if let Some((header, payload)) = text.split_once('\n') {
            assert!(header.contains("\"type\":\"message\""), "{header}");
            assert_eq!(payload, "hi");
            break;
        }
    }
}

#[test]
fn shutdown_sends_1001_to_every_client() {
    let server = start();
    let mut clients: Vec<_> = (0..5)
        .map(|i| connect(&server, if i % 2 == 0 { "/echo" } else { "/ws/x" }))
        .collect();
    wait_for_members(&server, "x", 2);
    let stopper = thread::spawn(move || server.shutdown());
    for client in &mut clients {
        let (code, reason) = expect_close(client);
        assert_eq!(code, CloseCode::Away);
        assert!(reason.contains("shutting down"));
    }
    // Clients completing the close handshake let shutdown drain in time.
    drop(clients);
    assert!(
        stopper.join().unwrap(),
        "every connection finished within the drain timeout"
    );
}

mod first_message_auth {
    use super::*;
    use threadcast::AuthMode;

    fn server() -> threadcast::ServerHandle {
        start_with(|c| {
            c.token = Some("s3cret".into());
            c.auth = AuthMode::FirstMessage;
            c.handshake_timeout = Duration::from_millis(500);
        })
    }

    #[test]
    fn the_right_token_as_first_message_admits_the_client() {
        let server = server();
        let mut ws = connect(&server, "/ws/vault?raw=1");
        ws.send(Message::text("s3cret")).unwrap();
        wait_for_members(&server, "vault", 1);
        ws.send(Message::text("inside")).unwrap();
        assert_eq!(next_data(&mut ws), Message::text("inside"));
    }

    #[test]
    fn before_the_token_the_client_receives_nothing_and_joins_nothing() {
        let server = server();
        let mut waiting = connect(&server, "/ws/vault?raw=1");
        let mut member = connect(&server, "/ws/vault?raw=1");
        member.send(Message::text("s3cret")).unwrap();
        wait_for_members(&server, "vault", 1);
        server.publish("vault", "secret news").unwrap();
        assert_eq!(next_data(&mut member), Message::text("secret news"));
        // The unauthenticated client was never a member: its first frame is the close.
        let (code, reason) = expect_close(&mut waiting);
        assert_eq!(code, CloseCode::Policy);
        assert!(reason.contains("deadline"), "{reason}");
    }

    #[test]
    fn a_wrong_token_or_another_first_message_closes_with_1008() {
        let server = server();
        let mut wrong = connect(&server, "/echo");
        wrong.send(Message::text("guess")).unwrap();
        assert_eq!(expect_close(&mut wrong).0, CloseCode::Policy);
        let mut binary = connect(&server, "/echo");
        binary.send(Message::binary(b"s3cret".to_vec())).unwrap();
        assert_eq!(expect_close(&mut binary).0, CloseCode::Policy);
        assert_eq!(server.members("vault"), 0);
    }

    #[test]
    fn the_page_learns_the_mode_from_config_json() {
        let server = server();
        let config = get(server.http_addr(), "/config.json").text();
        assert!(config.contains("\"auth\":\"first-message\""), "{config}");
        assert!(config.contains("\"token_required\":true"), "{config}");
    }
}

#[test]
fn an_extra_ws_listener_serves_websockets_only_and_the_main_port_still_serves_both() {
    let server = start_with(|c| c.ws_addr = Some("127.0.0.1:0".parse().unwrap()));
    assert_ne!(server.ws_addr(), server.http_addr());
    for addr in [server.ws_addr(), server.http_addr()] {
        let mut ws = connect_addr(addr, "/echo");
        ws.send(Message::text("hi")).unwrap();
        assert_eq!(next_data(&mut ws), Message::text("hi"));
    }
    let page = get(server.ws_addr(), "/");
    assert_eq!(page.status, 426, "no page on the WebSocket-only port");
    assert_eq!(page.header("Upgrade").as_deref(), Some("websocket"));
    assert_eq!(get(server.http_addr(), "/").status, 200);
}
