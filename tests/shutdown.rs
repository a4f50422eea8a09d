//! Shutdown keeps what was promised: a room member that is behind when the server
//! shuts down still gets every message the hub had queued to it (each one already
//! accepted, and acknowledged to its publisher) before its close 1001 — and a member
//! that never reads cannot hold the shutdown past its drain deadline.

mod common;

use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use threadcast::DRAIN_TIMEOUT;
use threadcast::ServerHandle;
use tungstenite::Message;

/// Messages published while the member is not reading.
const MESSAGES: u32 = 100;
/// Large enough that the messages sit in the member's queue, not all in socket buffers.
const PAYLOAD: usize = 64 * 1024;
/// Room for every message in the member's queue: it is behind, not a slow consumer.
const SEND_QUEUE: usize = 256;
/// Messages published to the SSE stream that is behind.
const SSE_MESSAGES: u32 = 60;
/// What a shutdown may take beyond its deadline here (thread scheduling, joins).
const MARGIN: Duration = Duration::from_secs(1);

/// A server whose queues hold all [`MESSAGES`].
fn server() -> ServerHandle {
    start_with(|c| c.send_queue = SEND_QUEUE)
}

/// Message `i`: its number in the first four bytes, then filler.
fn payload(i: u32) -> Vec<u8> {
    let mut payload = vec![0x5a; PAYLOAD];
    payload[..4].copy_from_slice(&i.to_be_bytes());
    payload
}

/// Publishes [`MESSAGES`] to `room`; each must be queued to its one member (a publish
/// returns once the hub has queued it, so the member is owed every one of them).
fn publish_all(server: &ServerHandle, room: &str) {
    for i in 0..MESSAGES {
        let delivered = server.publish(room, Message::binary(payload(i))).unwrap();
        assert_eq!(delivered, 1, "message {i} was not queued to the member");
    }
}

/// The server's count of messages written to clients so far (`/stats`).
fn messages_written(server: &ServerHandle) -> u64 {
    let stats = get(server.http_addr(), "/stats").text();
    let (_, rest) = stats
        .split_once("\"messages_out\":")
        .unwrap_or_else(|| panic!("no messages_out in {stats}"));
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap()
}

/// Answers the server's close frame with ours (as a client must, RFC 6455 §5.5.1) and
/// reads until the server closes the TCP connection.
fn answer_close(stream: &mut TcpStream, code: u16) {
    use std::io::{Read, Write};
    let reply = frame(true, op::CLOSE, &close_payload(code, ""));
    let _ = stream.write_all(&reply);
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
}

/// Reads data frames until the close frame. Returns the data frames' message numbers
/// and the close code (`None`: the connection ended without a close frame).
fn read_until_close(stream: &mut TcpStream) -> (Vec<u32>, Option<u16>) {
    let mut received = Vec::new();
    while let Some(frame) = read_non_ping(stream) {
        match frame.opcode {
            op::BINARY => {
                assert_eq!(frame.payload.len(), PAYLOAD, "message {}", received.len());
                let number = u32::from_be_bytes(frame.payload[..4].try_into().unwrap());
                received.push(number);
            }
            op::CLOSE => return (received, frame.close_code()),
            other => panic!("unexpected frame with opcode {other}"),
        }
    }
    (received, None)
}

#[test]
fn a_member_behind_at_shutdown_gets_every_queued_message_and_then_1001() {
    let server = server();
    let addr = server.ws_addr();
    let mut member = raw_connect(addr, "/ws/owed?raw=1");
    // The witness is an idle connection outside any room: its 1001 shows that the hub
    // has asked everyone to close (room members first, then connections in no room).
    let mut witness = raw_connect(addr, "/echo");
    wait_for_members(&server, "owed", 1);

    publish_all(&server, "owed");
    let written = messages_written(&server);
    assert!(
        written < u64::from(MESSAGES),
        "all {MESSAGES} messages reached the socket before shutdown: nothing to test"
    );
    eprintln!("at shutdown: {written} of {MESSAGES} messages written, the rest queued");

    let stopper = thread::spawn(move || {
        let started = Instant::now();
        let drained = server.shutdown();
        (drained, started.elapsed())
    });
    // An idle connection still gets its 1001 at once.
    assert_eq!(expect_raw_close(&mut witness), 1001);
    answer_close(&mut witness, 1001);

    // Only now does the member start reading.
    let (received, code) = read_until_close(&mut member);
    eprintln!(
        "the member received {} of {MESSAGES} messages before close {code:?}",
        received.len()
    );
    let expected: Vec<u32> = (0..MESSAGES).collect();
    assert_eq!(received, expected, "every queued message, in order");
    assert_eq!(code, Some(1001), "then close 1001 (going away)");
    answer_close(&mut member, 1001);

    let (drained, took) = stopper.join().unwrap();
    eprintln!("shutdown took {took:?} (drained: {drained})");
    assert!(
        drained,
        "every connection finished within the drain deadline"
    );
    assert!(took < DRAIN_TIMEOUT + MARGIN, "shutdown took {took:?}");
}

#[test]
fn a_member_that_never_reads_does_not_hold_shutdown_past_the_deadline() {
    let server = server();
    let _member = raw_connect(server.ws_addr(), "/ws/deaf?raw=1");
    wait_for_members(&server, "deaf", 1);
    publish_all(&server, "deaf");
    assert!(
        messages_written(&server) < u64::from(MESSAGES),
        "all {MESSAGES} messages reached the socket before shutdown: nothing to test"
    );

    let started = Instant::now();
    let drained = server.shutdown();
    let took = started.elapsed();
    eprintln!("shutdown took {took:?} (drained: {drained})");
    assert!(took < DRAIN_TIMEOUT + MARGIN, "shutdown took {took:?}");
    // The server gives up on the member by the deadline and closes its connection
    // itself, rather than leaving its threads blocked on a peer that does not read.
    assert!(
        drained,
        "the member's connection ended within the drain deadline"
    );
}

/// The body of a chunked HTTP answer, read to the end and with its chunk framing
/// taken off (`<hex size>\r\n<bytes>\r\n` … `0\r\n\r\n`).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let Some(end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return body; // cut short: what arrived
        };
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..end]).unwrap(), 16).unwrap();
        raw = &raw[end + 2..];
        if size == 0 || raw.len() < size {
            body.extend_from_slice(&raw[..size.min(raw.len())]);
            return body;
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

#[test]
fn an_sse_stream_behind_at_shutdown_gets_every_queued_event_and_then_close() {
    use std::io::{Read, Write};
    let server = server();
    let addr = server.http_addr();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    stream
        .write_all(b"GET /events/owed-sse HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut witness = raw_connect(addr, "/echo");
    wait_for_members(&server, "owed-sse", 1);

    // Plain text, which the stream writes without base64 (cheap even in a debug build
    // on a busy machine, so the drain deadline is about the guarantee, not the CPU).
    for i in 0..SSE_MESSAGES {
        let text = format!("{i:04}{}", "a".repeat(PAYLOAD));
        assert_eq!(server.publish("owed-sse", text).unwrap(), 1, "message {i}");
    }
    assert!(
        messages_written(&server) < u64::from(SSE_MESSAGES),
        "every event reached the socket before shutdown: nothing to test"
    );
    let stopper = thread::spawn(move || server.shutdown());
    assert_eq!(expect_raw_close(&mut witness), 1001);
    answer_close(&mut witness, 1001);

    // Only now does the client read: the head, then the whole chunked body.
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let body = String::from_utf8(dechunk(&raw)).unwrap();
    let events: Vec<&str> = body
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("event: ")))
        .collect();
    let delivered = events.iter().filter(|e| **e == "message").count();
    assert_eq!(
        delivered, SSE_MESSAGES as usize,
        "every queued message ({events:?})"
    );
    assert_eq!(events.last(), Some(&"close"), "then the close event");
    assert!(stopper.join().unwrap(), "every connection finished in time");
}
