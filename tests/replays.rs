//! Large replays and resume points at the very end of the id range, against a real
//! server (docs/PROTOCOL.md; the issue "Bounded by design", items 3 and 7).
//!
//! - A long poll writes its answer as it produces it, so a client that asks for a
//!   large history and never reads it costs the server a bounded buffer, not the whole
//!   answer escaped in memory (a control character becomes six bytes of JSON).
//! - An SSE stream sends a large replay in bounded chunks and keeps no large buffer
//!   afterwards.
//! - `since=18446744073709551615` (the largest id there is) is the live edge on every
//!   transport: no gap, no replay, and the server does not trip over `since + 1`.
//!
//! The memory tests read the resident memory of this whole process (the server runs in
//! it), so each runs alone in a child process ([`run_alone`]).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::frames::{Frame, epoch_of, join, next_frame};
use common::*;
use threadcast::internals::json;

/// Bytes of one heavy payload: control characters, each escaped to six bytes in JSON.
const PAYLOAD_BYTES: usize = 16 * 1024;
/// Heavy messages in a room: 256 × 16 KiB = 4 MiB of history, about 24 MiB as JSON.
const MESSAGES: u64 = 256;
/// Room for the heavy history: 4 MiB of payloads plus each message's header and
/// bookkeeping (`room::MESSAGE_OVERHEAD_BYTES`).
const HISTORY_BYTES: usize = 5 * 1024 * 1024;
/// How much the server's memory may grow in the memory tests. Before answers were
/// streamed, each unread poll of the heavy room held its escaped answer twice (about
/// 50 MB) and each SSE stream kept a batch buffer of the whole replay (about 25 MB);
/// with bounded buffers all of them together cost about 1 MB.
const MAX_GROWTH_KIB: usize = 20 * 1024;
/// The largest id a client can name: `u64::MAX`.
const LARGEST_ID: &str = "18446744073709551615";
/// One more than the largest id: not a number the server can read at all.
const BEYOND_LARGEST_ID: &str = "18446744073709551616";

// ---------------------------------------------------------------------------------
// The heavy room.
// ---------------------------------------------------------------------------------

/// A server whose rooms can hold the heavy history, and whose polls wait briefly.
fn heavy_server() -> threadcast::ServerHandle {
    start_with(|c| {
        c.history = 1000;
        c.history_bytes = Some(HISTORY_BYTES);
        c.poll_timeout = Duration::from_millis(300);
    })
}

/// Message `i` of the heavy room: its number, then control characters — every one
/// from U+0000 to U+001F except the three with short escapes (`\t`, `\n`, `\r`).
fn heavy_payload(i: u64) -> String {
    let controls: Vec<char> = (0u8..0x20)
        .filter(|b| !matches!(b, b'\t' | b'\n' | b'\r'))
        .map(char::from)
        .collect();
    let mut payload = format!("{i}:");
    let fill = PAYLOAD_BYTES - payload.len();
    payload.extend(controls.iter().cycle().take(fill));
    payload
}

/// Publishes the heavy history into `room`; returns the payloads, oldest first.
fn fill(server: &threadcast::ServerHandle, room: &str) -> Vec<String> {
    fill_with(server, room, MESSAGES)
}

/// Publishes the first `count` heavy messages into `room`; returns their payloads.
fn fill_with(server: &threadcast::ServerHandle, room: &str, count: u64) -> Vec<String> {
    (1..=count)
        .map(|i| {
            let payload = heavy_payload(i);
            server.publish(room, payload.clone()).unwrap();
            payload
        })
        .collect()
}

// ---------------------------------------------------------------------------------
// Reading JSON exactly as the server writes it.
// ---------------------------------------------------------------------------------

/// Walks through a JSON text that must have exactly the expected shape, byte for byte.
struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor { rest: text }
    }

    /// Where the cursor is, for failure messages.
    fn here(&self) -> String {
        self.rest.chars().take(80).collect()
    }

    fn expect(&mut self, literal: &str) {
        assert!(
            self.rest.starts_with(literal),
            "expected {literal:?} at {:?}",
            self.here()
        );
        self.rest = &self.rest[literal.len()..];
    }

    fn number(&mut self) -> u64 {
        let digits = self.rest.bytes().take_while(u8::is_ascii_digit).count();
        assert!(digits > 0, "expected a number at {:?}", self.here());
        let (number, rest) = self.rest.split_at(digits);
        self.rest = rest;
        number.parse().unwrap()
    }

    /// A JSON string literal, decoded: runs of plain text as they are, escapes one
    /// by one.
    fn string(&mut self) -> String {
        self.expect("\"");
        let mut out = String::new();
        loop {
            let plain = self.rest.find(['"', '\\']).expect("unterminated string");
            out.push_str(&self.rest[..plain]);
            self.rest = &self.rest[plain..];
            if self.rest.starts_with('"') {
                self.rest = &self.rest[1..];
                return out;
            }
            let (escape, rest) = self.rest.split_at(2);
            self.rest = rest;
            match escape {
                "\\u" => {
                    let (hex, rest) = self.rest.split_at(4);
                    self.rest = rest;
                    let code = u32::from_str_radix(hex, 16).unwrap();
                    out.push(char::from_u32(code).expect("no surrogates in our escapes"));
                }
                "\\n" => out.push('\n'),
                "\\r" => out.push('\r'),
                "\\t" => out.push('\t'),
                "\\\"" => out.push('"'),
                "\\\\" => out.push('\\'),
                "\\/" => out.push('/'),
                other => panic!("bad escape {other:?}"),
            }
        }
    }

    fn end(&self) {
        assert!(self.rest.is_empty(), "trailing {:?}", self.here());
    }
}

/// One room message as SSE and polls write it (docs/PROTOCOL.md): checks every field
/// but `ts` against the expected id, epoch and payload.
fn expect_message(json: &mut Cursor, id: u64, epoch: &str, payload: &str) {
    json.expect(&format!(
        "{{\"type\":\"message\",\"id\":{id},\"epoch\":\"{epoch}\",\"ts\":"
    ));
    json.number();
    json.expect(",\"data\":");
    let data = json.string();
    assert!(data == payload, "message {id}: the payload differs");
    json.expect("}");
}

/// Checks a poll answer byte for byte against the protocol's shape: no gap, the room's
/// whole history. Returns the epoch.
fn expect_poll_answer(body: &str, payloads: &[String]) -> String {
    let mut json = Cursor::new(body);
    json.expect("{\"epoch\":");
    let epoch = json.string();
    assert_eq!(epoch.len(), 16);
    json.expect(&format!(
        ",\"last_id\":{},\"epoch_changed\":false,\"messages\":[",
        payloads.len()
    ));
    for (i, payload) in payloads.iter().enumerate() {
        if i > 0 {
            json.expect(",");
        }
        expect_message(&mut json, i as u64 + 1, &epoch, payload);
    }
    json.expect("]}");
    json.end();
    epoch
}

// ---------------------------------------------------------------------------------
// Server-Sent Events, read event by event.
// ---------------------------------------------------------------------------------

/// Undoes `Transfer-Encoding: chunked`, noting the largest chunk.
struct Dechunk {
    inner: BufReader<TcpStream>,
    left_in_chunk: usize,
    largest_chunk: usize,
}

impl Read for Dechunk {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left_in_chunk == 0 {
            let mut size = String::new();
            self.inner.read_line(&mut size)?;
            self.left_in_chunk = usize::from_str_radix(size.trim(), 16).expect("chunk size");
            self.largest_chunk = self.largest_chunk.max(self.left_in_chunk);
            if self.left_in_chunk == 0 {
                return Ok(0);
            }
        }
        let wanted = self.left_in_chunk.min(buf.len());
        let n = self.inner.read(&mut buf[..wanted])?;
        self.left_in_chunk -= n;
        if self.left_in_chunk == 0 {
            self.inner.read_exact(&mut [0u8; 2])?; // the chunk's CRLF
        }
        Ok(n)
    }
}

/// One event: its `event:`, `id:` and `data:` lines.
#[derive(Debug, Default)]
struct Event {
    kind: String,
    id: String,
    data: String,
}

/// An open `text/event-stream`.
struct Events {
    reader: BufReader<Dechunk>,
}

impl Events {
    fn open(addr: SocketAddr, target: &str, headers: &str) -> Events {
        let (stream, status, head) = raw_request(
            addr,
            format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n"),
        );
        assert_eq!(status, 200, "{head}");
        assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
        Events {
            reader: BufReader::new(Dechunk {
                inner: BufReader::new(stream),
                left_in_chunk: 0,
                largest_chunk: 0,
            }),
        }
    }

    /// The next event; comments, `retry:` and member counts are skipped.
    fn next(&mut self) -> Event {
        let mut event = Event::default();
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                self.reader.read_line(&mut line).unwrap() > 0,
                "stream ended"
            );
            let line = line.trim_end_matches('\n');
            if line.is_empty() && event.kind == "members" {
                event = Event::default();
            } else if line.is_empty() && !event.kind.is_empty() {
                return event;
            }
            if let Some(value) = line.strip_prefix("event: ") {
                event.kind = value.to_string();
            } else if let Some(value) = line.strip_prefix("id: ") {
                event.id = value.to_string();
            } else if let Some(value) = line.strip_prefix("data: ") {
                event.data = value.to_string();
            }
        }
    }

    /// The largest chunk seen so far.
    fn largest_chunk(&self) -> usize {
        self.reader.get_ref().largest_chunk
    }
}

/// Reads the welcome from `events`; returns the epoch.
fn expect_welcome(events: &mut Events) -> String {
    let welcome = events.next();
    assert_eq!(welcome.kind, "welcome", "{welcome:?}");
    let epoch_at = welcome.data.find("\"epoch\":").unwrap() + "\"epoch\":".len();
    Cursor::new(&welcome.data[epoch_at..]).string()
}

/// Reads the welcome and the heavy replay from `events`, checking each message.
fn expect_heavy_replay(events: &mut Events, payloads: &[String]) -> String {
    let epoch = expect_welcome(events);
    for (i, payload) in payloads.iter().enumerate() {
        let id = i as u64 + 1;
        let event = events.next();
        assert_eq!(
            (event.kind.as_str(), event.id.as_str()),
            ("message", format!("{epoch}:{id}").as_str())
        );
        let mut json = Cursor::new(&event.data);
        expect_message(&mut json, id, &epoch, payload);
        json.end();
    }
    epoch
}

/// Reads the welcome and a replay of `count` messages from `events`, checking their
/// ids and sizes only (the payloads are checked byte for byte elsewhere).
fn expect_replay_of(events: &mut Events, count: u64) {
    let epoch = expect_welcome(events);
    for id in 1..=count {
        let event = events.next();
        assert_eq!(
            (event.kind.as_str(), event.id.as_str()),
            ("message", format!("{epoch}:{id}").as_str())
        );
        assert!(event.data.len() > PAYLOAD_BYTES * json::MAX_ESCAPE_FACTOR * 9 / 10);
    }
}

// ---------------------------------------------------------------------------------
// Long polling: the answer is streamed, and looks exactly as before.
// ---------------------------------------------------------------------------------

#[test]
fn a_long_poll_of_a_large_history_streams_the_same_json_over_http_1_1_and_1_0() {
    let server = heavy_server();
    let payloads = fill(&server, "heavy");
    let addr = server.http_addr();

    let chunked = get(addr, "/poll/heavy?since=0");
    assert_eq!(chunked.status, 200, "{}", chunked.head);
    assert_eq!(
        chunked.header("Transfer-Encoding").as_deref(),
        Some("chunked")
    );
    assert_eq!(chunked.header("Content-Length"), None);
    assert_eq!(
        chunked.header("Content-Type").as_deref(),
        Some("application/json")
    );
    assert_eq!(chunked.header("Cache-Control").as_deref(), Some("no-store"));
    let body = chunked.text();
    expect_poll_answer(&body, &payloads);

    // HTTP/1.0 knows no chunks: the body ends where the connection does.
    let (mut stream, status, head) = raw_request(
        addr,
        format!("GET /poll/heavy?since=0 HTTP/1.0\r\nHost: {addr}\r\n\r\n"),
    );
    assert_eq!(status, 200, "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    let mut plain = Vec::new();
    stream.read_to_end(&mut plain).unwrap();
    assert!(plain == body.as_bytes(), "HTTP/1.0 and 1.1 bodies differ");
}

#[test]
fn a_short_poll_answer_still_says_its_length_and_head_says_it_without_the_body() {
    let server = heavy_server();
    server.publish("light", "one \u{1} message").unwrap();
    let addr = server.http_addr();
    let answer = get(addr, "/poll/light?since=0");
    let length = answer.body.len().to_string();
    assert_eq!(answer.header("Content-Length"), Some(length));
    assert_eq!(answer.header("Transfer-Encoding"), None);
    expect_poll_answer(&answer.text(), &["one \u{1} message".to_string()]);

    // HEAD: the length of the answer GET would get, even one too long to say its
    // length up front (here 16 messages, 1.5 MB of JSON), and no body.
    let payloads = fill_with(&server, "medium", 16);
    let full = get(addr, "/poll/medium?since=0");
    assert_eq!(full.header("Transfer-Encoding").as_deref(), Some("chunked"));
    expect_poll_answer(&full.text(), &payloads);
    let head = http(addr, "HEAD", "/poll/medium?since=0", &[], b"");
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("Content-Length"),
        Some(full.body.len().to_string())
    );
    assert!(head.body.is_empty());
}

// ---------------------------------------------------------------------------------
// Server-Sent Events: a large replay in bounded chunks.
// ---------------------------------------------------------------------------------

#[test]
fn an_sse_stream_replays_a_large_history_in_bounded_chunks_then_goes_live() {
    let server = heavy_server();
    let payloads = fill(&server, "heavy");
    let mut events = Events::open(server.http_addr(), "/events/heavy?since=0", "");
    let epoch = expect_heavy_replay(&mut events, &payloads);
    assert!(
        events.largest_chunk() <= threadcast::internals::BODY_BOUND,
        "a chunk of {} bytes",
        events.largest_chunk()
    );
    server.publish("heavy", "live").unwrap();
    let live = events.next();
    assert_eq!(live.id, format!("{epoch}:{}", MESSAGES + 1));
    let mut json = Cursor::new(&live.data);
    expect_message(&mut json, MESSAGES + 1, &epoch, "live");
}

// ---------------------------------------------------------------------------------
// The largest id: the live edge, on every transport.
// ---------------------------------------------------------------------------------

/// A server with a small room `edge` of three messages; returns it and the epoch.
fn edge_room() -> (threadcast::ServerHandle, String) {
    let server = heavy_server();
    for text in ["a", "b", "c"] {
        server.publish("edge", text).unwrap();
    }
    let answer = get(server.http_addr(), "/poll/edge?since=0").text();
    let epoch = expect_poll_answer(&answer, &["a".into(), "b".into(), "c".into()]);
    (server, epoch)
}

#[test]
fn a_websocket_resuming_from_the_largest_id_is_at_the_live_edge() {
    let (server, epoch) = edge_room();
    let queries = [
        format!("?since={LARGEST_ID}"),
        format!("?since={LARGEST_ID}&epoch={epoch}"),
        format!("?since={BEYOND_LARGEST_ID}"),
    ];
    for (last_id, query) in (3u64..).zip(queries) {
        let (mut ws, welcome) = join(&server, "edge", &query);
        assert_eq!(
            welcome,
            Frame::Welcome {
                epoch: epoch.clone(),
                last_id,
                epoch_changed: false
            },
            "{query}"
        );
        server.publish("edge", query.as_str()).unwrap();
        // No gap and no replay come first: the next frame is the live message.
        assert_eq!(
            next_frame(&mut ws),
            Frame::Message {
                id: last_id + 1,
                payload: query.clone().into_bytes(),
                text: true
            },
            "{query}: expected the live message"
        );
    }
    // From another epoch the largest id means nothing: the whole history follows.
    let (mut ws, welcome) = join(
        &server,
        "edge",
        &format!("?since={LARGEST_ID}&epoch=0000000000000001"),
    );
    assert!(
        matches!(
            welcome,
            Frame::Welcome {
                epoch_changed: true,
                ..
            }
        ),
        "{welcome:?}"
    );
    assert_eq!(epoch_of(&welcome), epoch);
    assert_eq!(
        next_frame(&mut ws),
        Frame::Message {
            id: 1,
            payload: b"a".to_vec(),
            text: true
        }
    );
}

#[test]
fn an_sse_stream_resuming_from_the_largest_id_is_at_the_live_edge() {
    let (server, epoch) = edge_room();
    let addr = server.http_addr();
    let ways = [
        (
            "/events/edge".to_string(),
            format!("Last-Event-ID: {epoch}:{LARGEST_ID}\r\n"),
        ),
        (format!("/events/edge?since={LARGEST_ID}"), String::new()),
        (
            format!("/events/edge?since={BEYOND_LARGEST_ID}"),
            String::new(),
        ),
    ];
    for (next_id, (target, headers)) in (4u64..).zip(ways) {
        let mut events = Events::open(addr, &target, &headers);
        let welcome = events.next();
        assert_eq!(welcome.kind, "welcome");
        assert!(
            welcome
                .data
                .contains(&format!("\"last_id\":{},\"", next_id - 1))
                && welcome.data.contains("\"epoch_changed\":false"),
            "{target}: {}",
            welcome.data
        );
        server.publish("edge", "live").unwrap();
        let live = events.next();
        assert_eq!(
            (live.kind.as_str(), live.id),
            ("message", format!("{epoch}:{next_id}")),
            "{target} {headers}: no gap, no replay before the live message"
        );
    }
}

#[test]
fn a_long_poll_from_the_largest_id_waits_at_the_live_edge() {
    let (server, epoch) = edge_room();
    let addr = server.http_addr();
    for target in [
        format!("/poll/edge?since={LARGEST_ID}"),
        format!("/poll/edge?since={LARGEST_ID}&epoch={epoch}"),
        format!("/poll/edge?since={BEYOND_LARGEST_ID}"),
    ] {
        let answer = get(addr, &target);
        assert_eq!(answer.status, 200);
        assert_eq!(
            answer.text(),
            format!(
                "{{\"epoch\":\"{epoch}\",\"last_id\":3,\"epoch_changed\":false,\"messages\":[]}}"
            ),
            "{target}"
        );
    }
}

// ---------------------------------------------------------------------------------
// Memory: bounded whatever the replay (each test alone in a child process).
// ---------------------------------------------------------------------------------

mod memory {
    use super::*;

    /// Long polls of the heavy room whose clients never read their answers.
    const UNREAD_POLLS: usize = 10;
    /// SSE streams that replay the heavy room and then stay open, idle.
    const STREAMS: usize = 4;

    /// The highest resident memory seen in `window`, in KiB.
    fn peak_rss_kib(window: Duration) -> usize {
        let end = Instant::now() + window;
        let mut peak = rss_kib();
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
            peak = peak.max(rss_kib());
        }
        peak
    }

    /// Runs [`unread_polls_inner`] alone in a child process (it reads the RSS).
    #[test]
    fn unread_long_polls_of_a_large_history_hold_bounded_memory() {
        run_alone("memory::unread_polls_inner");
    }

    #[test]
    #[ignore = "run by unread_long_polls_of_a_large_history_hold_bounded_memory"]
    fn unread_polls_inner() {
        if !alone() {
            return;
        }
        let server = start_with(|c| {
            c.history = 1000;
            c.history_bytes = Some(HISTORY_BYTES);
            c.poll_timeout = Duration::from_millis(300);
            c.max_connections_per_ip = 4096;
        });
        fill(&server, "heavy");
        let addr = server.http_addr();
        // One poll (of the last message: chunked too) read to its end first, so
        // lazily built state is not counted.
        let warm_up = get(addr, &format!("/poll/heavy?since={}", MESSAGES - 1));
        assert_eq!(warm_up.status, 200);
        drop(warm_up);
        let before = rss_kib();

        // Each answer's head arrives once the server has begun writing its body: from
        // then on the client reads nothing, so the server's writes block.
        let request = format!("GET /poll/heavy?since=0 HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        let polls: Vec<TcpStream> = (0..UNREAD_POLLS)
            .map(|_| {
                let (stream, status, head) = raw_request(addr, &request);
                assert_eq!(status, 200, "{head}");
                stream
            })
            .collect();
        let peak = peak_rss_kib(Duration::from_millis(700));
        let growth = peak.saturating_sub(before);
        eprintln!(
            "RSS growth with {UNREAD_POLLS} unread polls of a {} KiB history: {growth} KiB \
             ({before} KiB before, peak {peak} KiB)",
            MESSAGES as usize * PAYLOAD_BYTES / 1024
        );
        assert!(
            growth < MAX_GROWTH_KIB,
            "{UNREAD_POLLS} unread polls grew the server by {growth} KiB"
        );
        drop(polls);
    }

    /// Runs [`sse_streams_inner`] alone in a child process (it reads the RSS).
    #[test]
    fn sse_streams_after_a_large_replay_hold_bounded_memory() {
        run_alone("memory::sse_streams_inner");
    }

    #[test]
    #[ignore = "run by sse_streams_after_a_large_replay_hold_bounded_memory"]
    fn sse_streams_inner() {
        if !alone() {
            return;
        }
        let server = heavy_server();
        fill(&server, "heavy");
        let addr = server.http_addr();
        let before = rss_kib();
        let streams: Vec<Events> = (0..STREAMS)
            .map(|_| {
                let mut events = Events::open(addr, "/events/heavy?since=0", "");
                expect_replay_of(&mut events, MESSAGES);
                events
            })
            .collect();
        // Every stream has sent its replay and waits, idle, for the next message.
        let after = peak_rss_kib(Duration::from_millis(300));
        let growth = after.saturating_sub(before);
        eprintln!(
            "RSS growth with {STREAMS} SSE streams after replaying a {} KiB history: \
             {growth} KiB ({before} KiB before, {after} KiB after)",
            MESSAGES as usize * PAYLOAD_BYTES / 1024
        );
        assert!(
            growth < MAX_GROWTH_KIB,
            "{STREAMS} idle SSE streams grew the server by {growth} KiB"
        );
        // And they are still live.
        server.publish("heavy", "live").unwrap();
        for mut events in streams {
            assert_eq!(events.next().kind, "message");
        }
    }
}
