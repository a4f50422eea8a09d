//! Nothing lost across reconnects: ids, history, resume, client message ids, and the
//! SSE and long-poll fallbacks (docs/PROTOCOL.md), against a real server.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use common::frames::{Frame, epoch_of, field, join, next_frame, parse};
use common::*;
use tungstenite::Message;

#[test]
fn room_messages_carry_increasing_ids_and_the_payload_untouched() {
    let server = start();
    let (mut ws, welcome) = join(&server, "ids", "");
    assert_eq!(
        welcome,
        Frame::Welcome {
            epoch: epoch_of(&welcome),
            last_id: 0,
            epoch_changed: false
        }
    );
    ws.send(Message::text("first\nline")).unwrap();
    ws.send(Message::binary(vec![0u8, 10, 255])).unwrap();
    assert_eq!(
        next_frame(&mut ws),
        Frame::Message {
            id: 1,
            payload: b"first\nline".to_vec(),
            text: true
        }
    );
    assert_eq!(
        next_frame(&mut ws),
        Frame::Message {
            id: 2,
            payload: vec![0, 10, 255],
            text: false
        }
    );
}

#[test]
fn a_resent_client_message_id_is_delivered_once_and_acknowledged_as_duplicate() {
    let server = start();
    let (mut sender, _) = join(&server, "outbox", "");
    let (mut other, _) = join(&server, "outbox", "");
    for _ in 0..3 {
        sender.send(Message::text("cid:m-1\nhello")).unwrap();
    }
    sender.send(Message::text("cid:m-2\nworld")).unwrap();

    assert_eq!(
        next_frame(&mut other),
        Frame::Message {
            id: 1,
            payload: b"hello".to_vec(),
            text: true
        }
    );
    assert_eq!(
        next_frame(&mut other),
        Frame::Message {
            id: 2,
            payload: b"world".to_vec(),
            text: true
        }
    );
    // The sender sees its message once, with an ack per send.
    let frames: Vec<Frame> = (0..6).map(|_| next_frame(&mut sender)).collect();
    assert_eq!(
        frames,
        vec![
            Frame::Message {
                id: 1,
                payload: b"hello".to_vec(),
                text: true
            },
            Frame::Ack {
                cid: "m-1".into(),
                id: 1,
                duplicate: false
            },
            Frame::Ack {
                cid: "m-1".into(),
                id: 1,
                duplicate: true
            },
            Frame::Ack {
                cid: "m-1".into(),
                id: 1,
                duplicate: true
            },
            Frame::Message {
                id: 2,
                payload: b"world".to_vec(),
                text: true
            },
            Frame::Ack {
                cid: "m-2".into(),
                id: 2,
                duplicate: false
            },
        ]
    );
    // The same over HTTP: a repeat is reported as a duplicate and reaches no one.
    let first = http(
        server.http_addr(),
        "POST",
        "/publish/outbox?cid=h-1",
        &[],
        b"via http",
    );
    assert!(
        first.text().contains("\"duplicate\":false"),
        "{}",
        first.text()
    );
    let again = http(
        server.http_addr(),
        "POST",
        "/publish/outbox",
        &[("X-Client-Id", "h-1")],
        b"via http",
    );
    assert!(
        again.text().starts_with("{\"delivered\":0,\"id\":3,"),
        "{}",
        again.text()
    );
    assert!(again.text().contains("\"duplicate\":true"));
    assert_eq!(
        next_frame(&mut other),
        Frame::Message {
            id: 3,
            payload: b"via http".to_vec(),
            text: true
        }
    );
    other.send(Message::text("after")).unwrap();
    assert_eq!(
        next_frame(&mut other),
        Frame::Message {
            id: 4,
            payload: b"after".to_vec(),
            text: true
        },
        "no second copy of id 3"
    );
}

#[test]
fn resuming_while_a_publisher_sends_continuously_loses_nothing_and_repeats_nothing() {
    let server = start();
    let room = "stream";
    const TOTAL: u64 = 400;
    let http_addr = server.http_addr();
    let publisher = thread::spawn(move || {
        for i in 1..=TOTAL {
            let response = http(
                http_addr,
                "POST",
                "/publish/stream",
                &[],
                format!("m{i}").as_bytes(),
            );
            assert_eq!(response.status, 202);
        }
    });

    let mut seen = BTreeSet::new();
    let mut last: Option<(u64, String)> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut cycles = 0;
    while seen.len() < TOTAL as usize {
        assert!(
            Instant::now() < deadline,
            "only {} of {TOTAL} after {cycles} cycles",
            seen.len()
        );
        let query = match &last {
            Some((id, epoch)) => format!("?since={id}&epoch={epoch}"),
            None => "?since=0".into(),
        };
        let (mut ws, welcome) = join(&server, room, &query);
        let epoch = epoch_of(&welcome);
        // Read a few messages, then drop the connection abruptly and come back.
        for _ in 0..7 {
            if seen.len() == TOTAL as usize {
                break;
            }
            match next_frame(&mut ws) {
                Frame::Message { id, payload, .. } => {
                    assert_eq!(payload, format!("m{id}").into_bytes());
                    assert!(seen.insert(id), "id {id} delivered twice");
                    if let Some((previous, _)) = &last {
                        assert_eq!(id, previous + 1, "a gap at the seam");
                    }
                    last = Some((id, epoch.clone()));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        cycles += 1;
    }
    publisher.join().unwrap();
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        (1..=TOTAL).collect::<Vec<_>>()
    );
    assert!(cycles > 20, "exercised {cycles} reconnects");
}

#[test]
fn resuming_beyond_the_history_reports_the_gap_then_replays_what_is_left() {
    let server = start_with(|c| c.history = 5);
    for i in 1..=12 {
        server.publish("short", format!("m{i}")).unwrap();
    }
    let (mut ws, welcome) = join(&server, "short", "?since=2");
    assert!(matches!(welcome, Frame::Welcome { last_id: 12, .. }));
    assert_eq!(next_frame(&mut ws), Frame::Gap { from: 3, to: 7 });
    for id in 8..=12 {
        assert_eq!(
            next_frame(&mut ws),
            Frame::Message {
                id,
                payload: format!("m{id}").into_bytes(),
                text: true
            }
        );
    }
}

#[test]
fn after_a_restart_the_new_epoch_is_detected_and_its_history_replayed() {
    let old = start();
    let (_ws, welcome) = join(&old, "epochs", "");
    let old_epoch = epoch_of(&welcome);
    old.publish("epochs", "before restart").unwrap();
    let http_addr = old.http_addr();
    drop(_ws);
    old.shutdown();

    // The same address again, as a restarted server would have.
    let new = start_with(|c| c.http_addr = http_addr);
    new.publish("epochs", "after restart").unwrap();
    let (mut ws, welcome) = join(&new, "epochs", &format!("?since=1&epoch={old_epoch}"));
    match welcome {
        Frame::Welcome {
            epoch,
            epoch_changed,
            last_id,
        } => {
            assert_ne!(epoch, old_epoch);
            assert!(epoch_changed);
            assert_eq!(last_id, 1);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        next_frame(&mut ws),
        Frame::Message {
            id: 1,
            payload: b"after restart".to_vec(),
            text: true
        }
    );
}

#[test]
fn a_slow_consumer_reconnects_with_its_last_id_and_gets_everything_it_missed() {
    let server = start_with(|c| {
        c.send_queue = 4;
        c.history_bytes = Some(256 << 20); // keep everything this test publishes
    });
    let (mut slow, welcome) = join(&server, "firehose", "");
    let epoch = epoch_of(&welcome);
    let payload = "x".repeat(32 * 1024);
    // Publish until the slow member (which reads nothing) is dropped.
    let mut published = 0;
    while published < 500 {
        published += 1;
        if server.publish("firehose", payload.clone()).unwrap() == 0 {
            break;
        }
    }
    assert!(published < 500, "the slow consumer was never dropped");
    let mut last_id = 0;
    loop {
        match slow.read() {
            Ok(Message::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), 1008);
                break;
            }
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                if let Frame::Message { id, .. } = parse(message) {
                    last_id = id;
                }
            }
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    }
    assert!(last_id < published, "it did miss something");
    let (mut again, _) = join(
        &server,
        "firehose",
        &format!("?since={last_id}&epoch={epoch}"),
    );
    for id in last_id + 1..=published {
        assert!(
            matches!(next_frame(&mut again), Frame::Message { id: got, .. } if got == id),
            "expected {id}"
        );
    }
}

#[test]
fn the_history_byte_cap_is_enforced_and_shown_in_stats() {
    let server = start_with(|c| {
        c.history = 1000;
        c.history_bytes = Some(100 * 1024);
        c.token = Some("op".into()); // room names appear in /stats only with the token
    });
    for _ in 0..200 {
        server.publish("big", vec![7u8; 1024]).unwrap();
    }
    let stats = get(server.http_addr(), "/stats?token=op").text();
    let room = &stats[stats.find("\"big\":").unwrap()..];
    let bytes: usize = field(room, "history_bytes").parse().unwrap();
    let kept: usize = field(room, "history_messages").parse().unwrap();
    assert!(bytes <= 100 * 1024, "{bytes} bytes kept");
    assert!((50..200).contains(&kept), "{kept} messages kept");
    let (mut ws, _) = join(&server, "big", "?since=0&token=op");
    assert_eq!(
        next_frame(&mut ws),
        Frame::Gap {
            from: 1,
            to: 200 - kept as u64
        }
    );
}

// ---------------------------------------------------------------------------------
// Server-Sent Events.
// ---------------------------------------------------------------------------------

/// An SSE stream read with a plain socket: events as (event type, id, data).
struct EventStream {
    reader: BufReader<Dechunk>,
}

/// Reads the body of a `Transfer-Encoding: chunked` response.
struct Dechunk {
    inner: BufReader<TcpStream>,
    left_in_chunk: usize,
    done: bool,
}

impl Read for Dechunk {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.left_in_chunk == 0 {
            let mut size = String::new();
            self.inner.read_line(&mut size)?;
            self.left_in_chunk = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            if self.left_in_chunk == 0 {
                self.done = true;
                return Ok(0);
            }
        }
        let n = self
            .inner
            .by_ref()
            .take(self.left_in_chunk.min(buf.len()) as u64)
            .read(buf)?;
        self.left_in_chunk -= n;
        if self.left_in_chunk == 0 {
            let mut crlf = [0u8; 2];
            self.inner.read_exact(&mut crlf)?;
        }
        Ok(n)
    }
}

#[derive(Debug)]
struct Event {
    kind: String,
    id: Option<String>,
    data: String,
}

impl EventStream {
    fn open(addr: SocketAddr, target: &str, headers: &str) -> EventStream {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
        write!(
            stream,
            "GET {target} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{headers}\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream);
        let mut chunked = false;
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        let mut content_type = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.to_ascii_lowercase().starts_with("content-type:") {
                content_type = line.clone();
            }
            chunked |= line.eq_ignore_ascii_case("transfer-encoding: chunked\r\n");
            if line == "\r\n" {
                break;
            }
        }
        assert!(content_type.contains("text/event-stream"), "{content_type}");
        assert!(
            chunked,
            "the stream is chunked so it can end on a kept-alive connection"
        );
        EventStream {
            reader: BufReader::new(Dechunk {
                inner: reader,
                left_in_chunk: 0,
                done: false,
            }),
        }
    }

    /// The next event (comments and `retry:` skipped).
    fn next(&mut self) -> Event {
        let mut event = Event {
            kind: "message".into(),
            id: None,
            data: String::new(),
        };
        let mut any = false;
        loop {
            let mut line = String::new();
            assert!(
                self.reader.read_line(&mut line).unwrap() > 0,
                "stream ended"
            );
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if any {
                    return event;
                }
                continue;
            }
            if line.starts_with(':') || line.starts_with("retry:") {
                continue;
            }
            any = true;
            let (name, value) = line.split_once(": ").unwrap_or((line, ""));
            match name {
                "event" => event.kind = value.into(),
                "id" => event.id = Some(value.into()),
                "data" => event.data.push_str(value),
                _ => {}
            }
        }
    }

    fn next_message(&mut self) -> Event {
        loop {
            let event = self.next();
            if event.kind == "message" || event.kind == "binary" {
                return event;
            }
        }
    }
}

#[test]
fn sse_streams_room_messages_as_events_with_ids() {
    let server = start();
    let mut events = EventStream::open(server.http_addr(), "/events/news", "");
    let welcome = events.next();
    assert_eq!(welcome.kind, "welcome");
    let epoch = field(&welcome.data, "epoch");
    server.publish("news", "line one\nline \"two\"").unwrap();
    server
        .publish("news", Message::binary(vec![0u8, 1, 2, 255]))
        .unwrap();

    let text = events.next_message();
    assert_eq!(text.id.as_deref(), Some(format!("{epoch}:1").as_str()));
    assert!(
        text.data.contains(r#""data":"line one\nline \"two\"""#),
        "{}",
        text.data
    );
    let binary = events.next_message();
    assert_eq!(binary.kind, "binary");
    assert!(
        binary.data.contains(r#""data":"AAEC/w==""#),
        "{}",
        binary.data
    );
}

#[test]
fn sse_resumes_from_last_event_id() {
    let server = start();
    for i in 1..=5 {
        server.publish("feed", format!("m{i}")).unwrap();
    }
    let mut first = EventStream::open(server.http_addr(), "/events/feed?since=0", "");
    let mut last_id = None;
    for i in 1..=3 {
        let event = first.next_message();
        assert!(event.data.contains(&format!("\"data\":\"m{i}\"")));
        last_id = event.id;
    }
    drop(first);
    server.publish("feed", "m6").unwrap();
    // The browser reconnects with the original URL plus Last-Event-ID: the header wins.
    let header = format!("Last-Event-ID: {}\r\n", last_id.unwrap());
    let mut again = EventStream::open(server.http_addr(), "/events/feed?since=0", &header);
    for i in 4..=6 {
        assert!(
            again
                .next_message()
                .data
                .contains(&format!("\"data\":\"m{i}\"")),
            "expected m{i}"
        );
    }
}

#[test]
fn sse_ends_with_a_close_event_at_shutdown() {
    let server = start();
    let mut events = EventStream::open(server.http_addr(), "/events/quiet", "");
    assert_eq!(events.next().kind, "welcome");
    let stopper = thread::spawn(move || server.shutdown());
    let mut event = events.next();
    while event.kind == "members" {
        event = events.next();
    }
    assert_eq!(event.kind, "close");
    let mut rest = String::new();
    events
        .reader
        .read_to_string(&mut rest)
        .expect("the response ends with its last chunk");
    assert_eq!(rest, "", "nothing after the close event");
    assert!(stopper.join().unwrap());
}

// ---------------------------------------------------------------------------------
// Long polling.
// ---------------------------------------------------------------------------------

#[test]
fn a_long_poll_loop_receives_every_message_exactly_once() {
    let server = start_with(|c| c.poll_timeout = Duration::from_millis(300));
    let http_addr = server.http_addr();
    const TOTAL: usize = 60;
    let publisher = thread::spawn(move || {
        for i in 1..=TOTAL {
            http(
                http_addr,
                "POST",
                "/publish/polled",
                &[],
                format!("m{i}").as_bytes(),
            );
            if i % 10 == 0 {
                thread::yield_now();
            }
        }
    });
    let mut since = 0;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < TOTAL {
        assert!(Instant::now() < deadline);
        let answer = get(http_addr, &format!("/poll/polled?since={since}")).text();
        let mut rest = answer.as_str();
        while let Some(at) = rest.find("\"type\":\"message\"") {
            rest = &rest[at..];
            let id: u64 = field(rest, "id").parse().unwrap();
            got.push(field(rest, "data"));
            since = id;
            rest = &rest[1..];
        }
    }
    publisher.join().unwrap();
    assert_eq!(
        got,
        (1..=TOTAL).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
}

#[test]
fn a_long_poll_waits_for_the_next_message_or_times_out_empty() {
    let server = start_with(|c| c.poll_timeout = Duration::from_millis(200));
    let empty = get(server.http_addr(), "/poll/calm?since=0").text();
    assert!(empty.contains("\"messages\":[]"), "{empty}");

    let http_addr = server.http_addr();
    let waiter = thread::spawn(move || get(http_addr, "/poll/calm").text());
    // Publish until the waiting poll has taken a message (it joins shortly after it arrives).
    let deadline = Instant::now() + TEST_TIMEOUT;
    while !waiter.is_finished() {
        assert!(Instant::now() < deadline);
        server.publish("calm", "wake up").unwrap();
        thread::yield_now();
    }
    let answer = waiter.join().unwrap();
    assert!(answer.contains("\"data\":\"wake up\""), "{answer}");
}

#[test]
fn publish_reaches_websocket_sse_and_poll_clients_alike() {
    let server = start_with(|c| c.poll_timeout = Duration::from_secs(10));
    let (mut ws, _) = join(&server, "all", "");
    let mut events = EventStream::open(server.http_addr(), "/events/all", "");
    assert_eq!(events.next().kind, "welcome");
    let http_addr = server.http_addr();
    let poller = thread::spawn(move || get(http_addr, "/poll/all?since=0").text());
    wait_for_members(&server, "all", 3);
    let response = http(
        server.http_addr(),
        "POST",
        "/publish/all",
        &[],
        b"to everyone",
    );
    assert_eq!(response.status, 202);

    assert_eq!(
        next_frame(&mut ws),
        Frame::Message {
            id: 1,
            payload: b"to everyone".to_vec(),
            text: true
        }
    );
    assert!(
        events
            .next_message()
            .data
            .contains("\"data\":\"to everyone\"")
    );
    assert!(poller.join().unwrap().contains("\"data\":\"to everyone\""));
    let stats = get(server.http_addr(), "/stats").text();
    assert!(stats.contains("\"sse_streams\":1"), "{stats}");
}

#[test]
fn long_lived_http_requests_count_against_max_connections() {
    let server = start_with(|c| c.max_connections = 1);
    let _events = EventStream::open(server.http_addr(), "/events/x", "");
    assert_eq!(get(server.http_addr(), "/poll/x").status, 503);
    assert_eq!(
        raw_request(server.ws_addr(), upgrade_request("/echo", "")).1,
        503
    );
}

// ---------------------------------------------------------------------------------
// Feeds.
// ---------------------------------------------------------------------------------

#[test]
fn a_feed_command_is_broadcast_line_by_line_and_restarted_when_it_exits() {
    let server = start_with(|c| {
        c.feeds = vec![threadcast::Feed {
            room: "clock".into(),
            source: threadcast::FeedSource::Command("echo tick; echo tock".into()),
        }];
    });
    // The command exits after two lines; the restarted command prints them again.
    let mut ws = connect(&server, "/ws/clock?raw=1");
    let lines: Vec<String> = (0..4)
        .map(|_| next_data(&mut ws).into_text().unwrap().to_string())
        .collect();
    let ticks = lines.iter().filter(|l| *l == "tick").count();
    assert!(
        ticks >= 1 && lines.iter().all(|l| l == "tick" || l == "tock"),
        "{lines:?}"
    );
    let (_, welcome) = join(&server, "clock", "?since=0");
    match welcome {
        Frame::Welcome { last_id, .. } => assert!(last_id >= 4, "the command ran more than once"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_demo_feed_ticks_into_its_room() {
    let server = start();
    let mut ws = connect(&server, "/ws/ticker?raw=1");
    let line = next_data(&mut ws).into_text().unwrap();
    assert!(
        line.contains("UTC") && line.contains("connections"),
        "{line}"
    );
}

#[test]
fn a_feed_from_stdin_shows_each_line_in_the_room() {
    let mut command = binary_command();
    command
        .args(["--no-demo-feed", "--feed", "logs=-"])
        .stdin(Stdio::piped());
    let mut server = Binary::start(command);
    server.drain_logs();
    let ws_addr = server.ws;
    let mut ws = connect_addr(ws_addr, "/ws/logs?raw=1");
    let mut stdin = server.child.stdin.take().unwrap();
    // The client may join after the first line: write until one arrives, then check order.
    let deadline = Instant::now() + TEST_TIMEOUT;
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut n = 0;
    let first = loop {
        assert!(Instant::now() < deadline);
        n += 1;
        writeln!(stdin, "log line {n}").unwrap();
        match ws.read() {
            Ok(Message::Text(t)) => break t.to_string(),
            _ => continue,
        }
    };
    ws.get_ref().set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    let first_n: usize = first.trim_start_matches("log line ").parse().unwrap();
    writeln!(stdin, "the end").unwrap();
    for expected in first_n + 1..=n {
        assert_eq!(
            next_data(&mut ws),
            Message::text(format!("log line {expected}"))
        );
    }
    assert_eq!(next_data(&mut ws), Message::text("the end"));
    drop(stdin);
    server.signal("TERM");
    assert_eq!(server.child.wait().unwrap().code(), Some(0));
}
