//! The front door under attack: every connection starts with our own bounded reading
//! of its request head, so each of these attacks, which stalled, bloated or crashed the
//! server before the door existed, now gets a clear status (or close code) while
//! normal clients keep being served within a second.
//!
//! 1. A declared body of a terabyte, or of 2^64-1 bytes: 413 without reading it
//!    ([`huge_declared_lengths`]).
//! 2. Head bombs: one endless header line, 100 000 headers, an endless chunk-size
//!    line: 431, 431, 400, with bounded memory ([`head_bombs`]).
//! 3. Bodies trickled a byte at a time: 408 at `--request-timeout` ([`slow_bodies`]).
//! 4. Requests pipelined behind an event stream, and 20 000 pipelined requests on a
//!    socket that never reads: never answered, nobody held up ([`pipelining`]).
//! 5. SIGTERM with hostile clients attached: the binary exits 0 within the drain
//!    deadline, WebSockets get 1001 and event streams `event: close` ([`shutdown`]).
//! 6. A cross-origin `POST /publish`: 403, delivered to nobody ([`origins`]).
//! 7. CORS: preflight and answers for listed origins, never `*` ([`cors`]).
//! 8. `/stats`: the token when one is set, room names only to its holder ([`stats`]).
//! 9. Dotfiles and dot-folders: 404 in every spelling ([`dotfiles`]).
//! 10. HTTP/2 (the preface or the version): a 505 actually sent, then the close
//!     ([`versions`]).
//! 11. `Content-Length` with `Transfer-Encoding` (request smuggling): one 400 and
//!     nothing more on that socket ([`smuggling`]).
//! 12. Many connections from one address: 503 past `--max-connections-per-ip`,
//!     counted, and bounded threads ([`per_address`]).
//! 13. WebSockets that never authenticate (`--auth first-message`): a pool of their
//!     own, 503 past it, honest clients still admitted ([`first_message_pool`]).
//! 14. A client flooding a room: close 1008 past `--max-messages-per-second`
//!     ([`message_rate`]).
//! 15. Tokens never reach the logs, even at trace level ([`secrets`]).
//!
//! A panic that ends only its own connection (the last attack of the list) is not
//! covered: no request a client can send is known to make the server panic, and the
//! source has no test hooks to provoke one.
//!
//! Every test runs a real server on 127.0.0.1:0 and talks to it over real sockets;
//! every loop is bounded in count and time. Tests that count the threads or the
//! memory of the whole process run alone in a child process ([`run_alone`]).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;

/// How soon a normal client must be answered while an attack is under way.
const PROMPT: Duration = Duration::from_secs(1);

/// A normal client gets `/healthz` and the page, each within [`PROMPT`].
fn served_promptly(addr: SocketAddr) {
    for target in ["/healthz", "/"] {
        let started = Instant::now();
        let response = get(addr, target);
        let took = started.elapsed();
        assert_eq!(
            response.status, 200,
            "{target} during the attack: {}",
            response.head
        );
        assert!(took < PROMPT, "{target} took {took:?} during the attack");
    }
}

/// Everything the server sent on one connection, until it closed it.
struct Transcript {
    response: HttpResponse,
    raw: Vec<u8>,
    /// The server closed the connection (EOF) rather than leaving us to time out.
    closed: bool,
    /// From the last byte sent to the end of the transcript.
    took: Duration,
}

impl Transcript {
    /// How many responses the transcript holds (status lines at a line start).
    fn responses(&self) -> usize {
        count_status_lines(&self.raw)
    }
}

/// Status lines in `bytes`: `HTTP/1.x ` at the start or after a line break.
fn count_status_lines(bytes: &[u8]) -> usize {
    (0..bytes.len())
        .filter(|&i| {
            (i == 0 || bytes[i - 1] == b'\n')
                && (bytes[i..].starts_with(b"HTTP/1.1 ") || bytes[i..].starts_with(b"HTTP/1.0 "))
        })
        .count()
}

/// Sends `bytes` on a fresh connection and reads until the server closes it (at most
/// [`TEST_TIMEOUT`]).
fn send(addr: SocketAddr, bytes: impl AsRef<[u8]>) -> Transcript {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    // The server may answer and close before taking everything: a failed write is fine.
    let _ = stream.write_all(bytes.as_ref());
    let started = Instant::now();
    let mut raw = Vec::new();
    let closed = stream.read_to_end(&mut raw).is_ok();
    Transcript {
        response: parse_response(&raw),
        raw,
        closed,
        took: started.elapsed(),
    }
}

/// A number field of a flat JSON object (`"name":123`).
fn json_number(json: &str, name: &str) -> Option<u64> {
    let key = format!("\"{name}\"");
    let rest = json[json.find(&key)? + key.len()..].trim_start();
    let digits: String = rest
        .strip_prefix(':')?
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// `/stats` as JSON text, asserting 200.
fn stats(addr: SocketAddr, target: &str) -> String {
    let response = get(addr, target);
    assert_eq!(response.status, 200, "{}", response.head);
    response.text()
}

/// A writer of our own on a clone of `stream`: `prefix`, then `filler` over and over
/// until `total` bytes are out or the server stops taking them (an error, or a write
/// blocked for 5 s). Never allocates more than 64 KiB however large `total` is. The
/// receiver hears once the prefix is out; the thread returns the bytes written.
fn write_in_background(
    stream: &TcpStream,
    prefix: &[u8],
    filler: &[u8],
    total: usize,
) -> (JoinHandle<usize>, mpsc::Receiver<()>) {
    let mut out = stream.try_clone().expect("clone the socket");
    out.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let prefix = prefix.to_vec();
    let block: Vec<u8> = filler
        .iter()
        .copied()
        .cycle()
        .take((64 * 1024 / filler.len()).max(1) * filler.len())
        .collect();
    let (started_tx, started_rx) = mpsc::channel();
    let writer = thread::spawn(move || {
        if out.write_all(&prefix).is_err() {
            let _ = started_tx.send(());
            return 0;
        }
        let _ = started_tx.send(());
        let mut sent = prefix.len();
        while sent < total {
            let n = block.len().min(total - sent);
            if out.write_all(&block[..n]).is_err() {
                break; // the server answered, closed, and reset the rest
            }
            sent += n;
        }
        sent
    });
    (writer, started_rx)
}

/// Reads from `stream` until `needle` has arrived (at most [`TEST_TIMEOUT`]); returns
/// everything read.
fn read_until(stream: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
    let deadline = Instant::now() + TEST_TIMEOUT;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(needle.len()).any(|w| w == needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{:?} never arrived; got {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(&seen)
        );
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => panic!(
                "closed before {:?}; got {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&seen)
            ),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read failed before {needle:?}: {e}"),
        }
    }
    seen
}

/// A `GET target` that opens an event stream, followed on the same socket by
/// `pipelined` bytes; the answer's head is read (asserted 200).
fn open_event_stream(addr: SocketAddr, target: &str, pipelined: &str) -> TcpStream {
    let request = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n{pipelined}");
    let (stream, status, head) = raw_request(addr, request);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    stream
}

/// Attack 1: bodies declared far beyond `--max-message-bytes`.
mod huge_declared_lengths {
    use super::*;

    #[test]
    fn a_terabyte_content_length_gets_413_without_being_read_and_the_server_lives_on() {
        let server = start();
        let addr = server.http_addr();
        for target in ["/", "/publish/x", "/healthz"] {
            let transcript = send(
                addr,
                format!(
                    "POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                     Content-Length: 1000000000000\r\n\r\nfirst bytes of a terabyte"
                ),
            );
            let response = &transcript.response;
            assert_eq!(response.status, 413, "POST {target}: {}", response.head);
            assert_eq!(response.header("Connection").as_deref(), Some("close"));
            assert!(transcript.closed, "POST {target}: the socket stays open");
            assert!(
                transcript.took < PROMPT,
                "POST {target}: answered after {:?}",
                transcript.took
            );
            served_promptly(addr);
        }
    }

    #[test]
    fn four_requests_declaring_u64_max_bytes_each_get_413_and_the_port_still_answers() {
        let server = start();
        let addr = server.http_addr();
        let request = "POST /publish/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                       Content-Length: 18446744073709551615\r\n\r\nxyz";
        let clients: Vec<_> = (0..4)
            .map(|_| thread::spawn(move || send(addr, request)))
            .collect();
        for client in clients {
            let transcript = client.join().unwrap();
            assert_eq!(
                transcript.response.status, 413,
                "{}",
                transcript.response.head
            );
            assert!(transcript.closed);
        }
        // Four more, one after the other, now that the first four are done.
        for _ in 0..4 {
            assert_eq!(send(addr, request).response.status, 413);
        }
        served_promptly(addr);
    }
}

/// Attack 2: request heads (and chunk-size lines) that never end.
mod head_bombs {
    use super::*;

    /// One huge header line without CRLF.
    const LINE_PREFIX: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Bomb: ";
    /// Headers, each small, without end.
    const MANY_PREFIX: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    const ONE_HEADER: &[u8] = b"X-H: v\r\n";
    /// A chunked body whose first chunk-size line never ends.
    const CHUNK_PREFIX: &[u8] =
        b"POST /publish/x HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n";

    /// Sends `prefix` then `filler` up to `total` bytes from a thread, reads the
    /// answer's head meanwhile, and returns its status, the bytes the writer got out,
    /// and the highest resident memory of this process seen meanwhile (KiB).
    fn bomb(addr: SocketAddr, prefix: &[u8], filler: &[u8], total: usize) -> (u16, usize, usize) {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
        let (writer, started) = write_in_background(&stream, prefix, filler, total);
        started.recv().unwrap();
        let head = read_head(&mut stream);
        let status = status_of(&head);
        // The writer ends when the server resets the connection, or at its own bound.
        let deadline = Instant::now() + TEST_TIMEOUT;
        let mut peak = rss_kib();
        while !writer.is_finished() && Instant::now() < deadline {
            peak = peak.max(rss_kib());
            thread::sleep(Duration::from_millis(2));
        }
        let sent = writer.join().unwrap();
        (status, sent, peak.max(rss_kib()))
    }

    #[test]
    fn a_megabyte_header_line_without_crlf_gets_431() {
        let server = start();
        let addr = server.http_addr();
        let (status, _, _) = bomb(addr, LINE_PREFIX, b"a", 1 << 20);
        assert_eq!(status, 431);
        served_promptly(addr);
    }

    #[test]
    fn a_hundred_thousand_small_headers_sent_in_one_go_get_431() {
        let server = start();
        let addr = server.http_addr();
        let total = MANY_PREFIX.len() + 100_000 * ONE_HEADER.len();
        let (status, _, _) = bomb(addr, MANY_PREFIX, ONE_HEADER, total);
        assert_eq!(status, 431);
        served_promptly(addr);
    }

    #[test]
    fn a_megabyte_chunk_size_line_gets_400() {
        let server = start();
        let addr = server.http_addr();
        let (status, _, _) = bomb(addr, CHUNK_PREFIX, b"1", 1 << 20);
        assert_eq!(status, 400);
        served_promptly(addr);
    }

    /// Runs [`bounded_memory_inner`] alone in a child process (it measures RSS).
    #[test]
    fn head_bombs_cost_a_bounded_amount_of_memory() {
        run_alone("head_bombs::bounded_memory_inner");
    }

    #[test]
    #[ignore = "run by head_bombs_cost_a_bounded_amount_of_memory"]
    fn bounded_memory_inner() {
        if !alone() {
            return;
        }
        // Each bomb offers 32 MiB; before the door, the server kept all of it (a
        // 256 MiB line cost 256 MB). Now it keeps 8 KiB of a head or 256 bytes of a
        // chunk-size line, and stops reading soon after answering.
        const OFFERED: usize = 32 << 20;
        const MAX_GROWTH_KIB: usize = 8 * 1024;
        let server = start();
        let addr = server.http_addr();
        served_promptly(addr); // warm up: the first file request starts threads
        for (what, prefix, filler, status) in [
            ("header line", LINE_PREFIX, &b"a"[..], 431),
            ("headers", MANY_PREFIX, ONE_HEADER, 431),
            ("chunk-size line", CHUNK_PREFIX, b"1", 400),
        ] {
            let before = rss_kib();
            let started = Instant::now();
            let (got, sent, peak) = bomb(addr, prefix, filler, OFFERED);
            let growth = peak.saturating_sub(before);
            eprintln!(
                "{what}: {got} after {:?}; {sent} bytes got out of {OFFERED}; RSS +{growth} KiB",
                started.elapsed()
            );
            assert_eq!(got, status, "{what}");
            assert!(
                growth < MAX_GROWTH_KIB,
                "{what}: RSS grew by {growth} KiB (limit {MAX_GROWTH_KIB} KiB)"
            );
            served_promptly(addr);
        }
    }
}

/// Attack 3: bodies trickled a byte at a time.
mod slow_bodies {
    use super::*;

    const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
    /// One byte this often: the 100 declared bytes would take 5 s.
    const PACE: Duration = Duration::from_millis(50);

    /// Sends a publish head declaring 100 bytes, then one byte per [`PACE`] until the
    /// server answers. Returns the status and the time from the head to the answer.
    fn trickle(addr: SocketAddr, ready: mpsc::Sender<()>) -> (u16, Duration) {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream
            .write_all(
                b"POST /publish/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n",
            )
            .unwrap();
        let started = Instant::now();
        ready.send(()).unwrap();
        stream.set_read_timeout(Some(PACE)).unwrap();
        let mut response = Vec::new();
        let mut buf = [0u8; 1024];
        for _ in 0..100 {
            if stream.write_all(b"a").is_err() {
                break;
            }
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    response.extend_from_slice(&buf[..n]);
                    break;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
        let took = started.elapsed();
        stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
        let _ = stream.read_to_end(&mut response);
        (parse_response(&response).status, took)
    }

    #[test]
    fn four_clients_trickling_a_publish_body_each_get_408_at_the_request_timeout() {
        let server = start_with(|c| c.request_timeout = REQUEST_TIMEOUT);
        let addr = server.http_addr();
        let (ready_tx, ready_rx) = mpsc::channel();
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let ready = ready_tx.clone();
                thread::spawn(move || trickle(addr, ready))
            })
            .collect();
        for _ in 0..4 {
            ready_rx
                .recv_timeout(TEST_TIMEOUT)
                .expect("a trickler started");
        }
        // All four are trickling: everyone else is still served at once.
        served_promptly(addr);
        served_promptly(addr);
        for client in clients {
            let (status, took) = client.join().unwrap();
            assert_eq!(status, 408);
            assert!(
                took >= REQUEST_TIMEOUT - Duration::from_millis(100),
                "408 already after {took:?}"
            );
            assert!(took < REQUEST_TIMEOUT + PROMPT, "408 only after {took:?}");
        }
        served_promptly(addr);
    }
}

/// Attack 4: requests pipelined behind the first on one socket.
mod pipelining {
    use super::*;

    const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

    #[test]
    fn requests_pipelined_behind_an_event_stream_are_never_answered() {
        let server = start();
        let addr = server.http_addr();
        // Four streams (the old server had four workers), four requests behind each.
        let mut streams: Vec<TcpStream> = (0..4)
            .map(|_| open_event_stream(addr, "/events/x", &HEALTHZ.repeat(4)))
            .collect();
        wait_for_members(&server, "x", 4);
        served_promptly(addr);
        // The streams flow...
        server.publish("x", "after the pipeline").unwrap();
        let mut transcripts: Vec<Vec<u8>> = streams
            .iter_mut()
            .map(|s| read_until(s, b"after the pipeline"))
            .collect();
        // ...and end at shutdown; read each to its end while the server drains.
        let stopping = thread::spawn(move || server.shutdown());
        for (stream, transcript) in streams.iter_mut().zip(&mut transcripts) {
            stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
            stream
                .read_to_end(transcript)
                .expect("the stream ends with the server");
            let text = String::from_utf8_lossy(transcript);
            assert!(text.contains("event: close"), "{text}");
            assert_eq!(
                count_status_lines(transcript),
                0,
                "a pipelined request was answered: {text}"
            );
        }
        drop(streams);
        assert!(stopping.join().unwrap(), "every stream drained in time");
    }

    #[test]
    fn a_socket_pipelining_twenty_thousand_requests_without_reading_holds_up_nobody() {
        let server = start();
        let addr = server.http_addr();
        let mut stream = TcpStream::connect(addr).expect("connect");
        let total = 20_000 * HEALTHZ.len();
        let (writer, started) = write_in_background(&stream, b"", HEALTHZ.as_bytes(), total);
        started.recv().unwrap();
        served_promptly(addr);
        served_promptly(addr);
        // The server answers the first request and closes: the socket ends (EOF, or a
        // reset for the bytes it left unread) instead of staying open for the rest.
        stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
        let started = Instant::now();
        let mut got = Vec::new();
        let end = stream.read_to_end(&mut got);
        assert!(
            !matches!(&end, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "the pipelining socket is still open after {:?}",
            started.elapsed()
        );
        // Whatever reached us is one answer at most (the rest may have been reset
        // away): never one per pipelined request.
        assert!(
            count_status_lines(&got) <= 1,
            "{}",
            String::from_utf8_lossy(&got)
        );
        writer.join().unwrap();
        served_promptly(addr);
    }
}

/// Attack 5: SIGTERM while hostile clients hold connections.
mod shutdown {
    use super::*;
    use tungstenite::protocol::frame::coding::CloseCode;

    /// Waits for the child to exit, at most `limit`; returns its status and when.
    fn wait_for_exit(
        child: &mut std::process::Child,
        limit: Duration,
    ) -> (Option<std::process::ExitStatus>, Duration) {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = child.try_wait().unwrap() {
                return (Some(status), started.elapsed());
            }
            thread::sleep(Duration::from_millis(5));
        }
        (None, started.elapsed())
    }

    #[test]
    fn sigterm_with_hostile_clients_attached_exits_0_within_the_drain_deadline() {
        let mut command = binary_command();
        command.args([
            "--no-demo-feed",
            "--public",
            public_dir().to_str().unwrap(),
            // Long deadlines: nothing ends on its own before the signal.
            "--handshake-timeout",
            "60s",
            "--request-timeout",
            "60s",
        ]);
        let mut server = Binary::start(command);
        server.drain_logs();
        let addr = server.http;

        // An event stream, read on its own thread until it ends.
        let mut sse = open_event_stream(addr, "/events/lobby", "");
        let sse_reader = thread::spawn(move || {
            let mut rest = Vec::new();
            let _ = sse.read_to_end(&mut rest);
            String::from_utf8_lossy(&rest).into_owned()
        });
        // A WebSocket in the same room, waiting for its close frame.
        let mut ws = connect_addr(addr, "/ws/lobby");
        let ws_reader = thread::spawn(move || expect_close(&mut ws).0);
        // Half a head, and a body trickled to its second byte of 100.
        let mut half_head = TcpStream::connect(addr).unwrap();
        half_head
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")
            .unwrap();
        let mut slow_body = TcpStream::connect(addr).unwrap();
        slow_body
            .write_all(
                b"POST /publish/lobby HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nab",
            )
            .unwrap();
        // An event stream with requests pipelined behind it, never reading.
        let pipeliner = TcpStream::connect(addr).unwrap();
        let first = b"GET /events/lobby HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        let healthz = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        let (pipelining, started) =
            write_in_background(&pipeliner, first, healthz, 20_000 * healthz.len());
        started.recv().unwrap();
        // The accept loop takes connections in order: this answer means every hostile
        // socket above has been accepted and has its thread.
        served_promptly(addr);

        server.signal("TERM");
        let limit = threadcast::DRAIN_TIMEOUT + Duration::from_secs(2);
        let (status, took) = wait_for_exit(&mut server.child, limit);
        if status.is_none() {
            let _ = server.child.kill();
            let _ = server.child.wait();
        }
        eprintln!("exited with {status:?} {took:?} after SIGTERM");
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(0),
            "no clean exit within {limit:?} of SIGTERM (waited {took:?})"
        );
        assert_eq!(ws_reader.join().unwrap(), CloseCode::Away);
        let events = sse_reader.join().unwrap();
        assert!(events.contains("event: close"), "{events}");
        drop((half_head, slow_body, pipeliner));
        let _ = pipelining.join();
    }
}

/// Attack 6: a page on another site publishing into a room.
mod origins {
    use super::*;

    #[test]
    fn a_cross_origin_publish_gets_403_and_reaches_nobody_while_a_same_host_one_gets_202() {
        let server = start();
        let addr = server.http_addr();
        let mut member = connect(&server, "/ws/x?raw=1");
        wait_for_members(&server, "x", 1);
        let evil = [("Origin", "https://evil.example")];
        let refused = http(addr, "POST", "/publish/x", &evil, b"from evil");
        assert_eq!(refused.status, 403, "{}", refused.head);
        let same_host = format!("http://{addr}");
        let accepted = http(
            addr,
            "POST",
            "/publish/x",
            &[("Origin", same_host.as_str())],
            b"from the page",
        );
        assert_eq!(accepted.status, 202, "{}", accepted.head);
        // The refused message would have arrived first.
        assert_eq!(next_data(&mut member), Message::text("from the page"));
        served_promptly(addr);
    }

    #[test]
    fn another_sites_origin_is_refused_on_every_endpoint_that_reads_or_changes_state() {
        let server = start_with(|c| c.poll_timeout = Duration::from_millis(100));
        let addr = server.http_addr();
        for target in ["/events/x", "/poll/x", "/stats"] {
            let response = http(
                addr,
                "GET",
                target,
                &[("Origin", "https://evil.example")],
                b"",
            );
            assert_eq!(response.status, 403, "{target}: {}", response.head);
            assert_eq!(response.header("Access-Control-Allow-Origin"), None);
        }
        // Without Origin (not a browser) they answer.
        assert_eq!(get(addr, "/poll/x").status, 200);
        assert_eq!(get(addr, "/stats").status, 200);
    }
}

/// Attack 7 (and its legitimate use): CORS for the origins `--allow-origin` lists.
mod cors {
    use super::*;

    const APP: &str = "https://app.example";

    fn preflight(addr: SocketAddr, origin: &str) -> HttpResponse {
        http(
            addr,
            "OPTIONS",
            "/publish/x",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", "authorization"),
            ],
            b"",
        )
    }

    fn assert_no_credentials_and_no_star(response: &HttpResponse) {
        assert_eq!(response.header("Access-Control-Allow-Credentials"), None);
        assert_ne!(
            response.header("Access-Control-Allow-Origin").as_deref(),
            Some("*")
        );
    }

    #[test]
    fn a_listed_origin_gets_a_204_preflight_and_cors_headers_and_others_get_403() {
        let server = start_with(|c| {
            c.allowed_origins = vec![APP.into()];
            c.poll_timeout = Duration::from_millis(100);
        });
        let addr = server.http_addr();

        let answer = preflight(addr, APP);
        assert_eq!(answer.status, 204, "{}", answer.head);
        assert_eq!(
            answer.header("Access-Control-Allow-Origin").as_deref(),
            Some(APP)
        );
        assert_eq!(answer.header("Vary").as_deref(), Some("Origin"));
        let methods = answer
            .header("Access-Control-Allow-Methods")
            .unwrap_or_default();
        assert!(methods.contains("POST"), "{methods}");
        let headers = answer
            .header("Access-Control-Allow-Headers")
            .unwrap_or_default();
        assert!(
            headers.to_ascii_lowercase().contains("authorization"),
            "{headers}"
        );
        assert_no_credentials_and_no_star(&answer);

        let poll = http(addr, "GET", "/poll/x", &[("Origin", APP)], b"");
        assert_eq!(poll.status, 200, "{}", poll.head);
        assert_eq!(
            poll.header("Access-Control-Allow-Origin").as_deref(),
            Some(APP)
        );
        assert_eq!(poll.header("Vary").as_deref(), Some("Origin"));
        assert_no_credentials_and_no_star(&poll);

        let publish = http(addr, "POST", "/publish/x", &[("Origin", APP)], b"hi");
        assert_eq!(publish.status, 202, "{}", publish.head);
        assert_eq!(
            publish.header("Access-Control-Allow-Origin").as_deref(),
            Some(APP)
        );

        let (stream, status, head) = raw_request(
            addr,
            format!("GET /events/x HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: {APP}\r\n\r\n"),
        );
        assert_eq!(status, 200, "{head}");
        assert!(
            head.contains(&format!("Access-Control-Allow-Origin: {APP}\r\n")),
            "{head}"
        );
        assert!(head.contains("Vary: Origin\r\n"), "{head}");
        drop(stream);

        let other = preflight(addr, "https://other.example");
        assert_eq!(other.status, 403, "{}", other.head);
        assert_eq!(other.header("Access-Control-Allow-Origin"), None);
    }

    #[test]
    fn with_any_origin_allowed_the_origin_is_echoed_never_a_star_and_never_credentials() {
        let server = start_with(|c| {
            c.allowed_origins = vec!["*".into()];
            c.poll_timeout = Duration::from_millis(100);
        });
        let addr = server.http_addr();
        let origin = "https://anyone.example";
        let answer = preflight(addr, origin);
        assert_eq!(answer.status, 204, "{}", answer.head);
        assert_eq!(
            answer.header("Access-Control-Allow-Origin").as_deref(),
            Some(origin)
        );
        assert_no_credentials_and_no_star(&answer);
        let poll = http(addr, "GET", "/poll/x", &[("Origin", origin)], b"");
        assert_eq!(poll.status, 200, "{}", poll.head);
        assert_eq!(
            poll.header("Access-Control-Allow-Origin").as_deref(),
            Some(origin)
        );
        assert_no_credentials_and_no_star(&poll);
    }
}

/// Attack 8: reading `/stats` (and the names of the rooms) without the token.
mod stats {
    use super::*;

    const ROOM: &str = "hidden-room";

    #[test]
    fn with_a_token_set_stats_needs_it_and_only_its_holder_sees_room_names() {
        let server = start_with(|c| c.token = Some("s3cret".into()));
        let addr = server.http_addr();
        server.publish(ROOM, "kept in history").unwrap();
        let anonymous = get(addr, "/stats");
        assert_eq!(anonymous.status, 401, "{}", anonymous.head);
        assert!(!anonymous.text().contains(ROOM));
        assert_eq!(get(addr, "/stats?token=wrong").status, 401);
        for authorized in [
            get(addr, "/stats?token=s3cret"),
            http(
                addr,
                "GET",
                "/stats",
                &[("Authorization", "Bearer s3cret")],
                b"",
            ),
        ] {
            assert_eq!(authorized.status, 200, "{}", authorized.head);
            let json = authorized.text();
            assert!(json.contains("\"rooms\""), "{json}");
            assert!(json.contains(ROOM), "{json}");
        }
    }

    #[test]
    fn without_a_token_stats_are_open_but_name_no_room() {
        let server = start();
        server.publish(ROOM, "kept in history").unwrap();
        let json = stats(server.http_addr(), "/stats");
        assert!(!json.contains("\"rooms\""), "{json}");
        assert!(!json.contains(ROOM), "{json}");
        assert!(json_number(&json, "room_count").unwrap() >= 1, "{json}");
    }
}

/// Attack 9: reading dotfiles (`.env`, `.git/`) from the public folder.
mod dotfiles {
    use super::*;

    #[test]
    fn dotfiles_and_dot_folders_are_not_found_in_any_spelling() {
        let public = temp_dir("front-door-dotfiles");
        std::fs::create_dir_all(public.join(".git")).unwrap();
        std::fs::create_dir_all(public.join(".hidden")).unwrap();
        std::fs::write(public.join(".env"), b"SECRET=dotenv").unwrap();
        std::fs::write(public.join(".git/config"), b"[core] secret").unwrap();
        std::fs::write(public.join(".hidden/x.txt"), b"hidden secret").unwrap();
        std::fs::write(public.join("ok.txt"), b"fine").unwrap();
        let server = start_with(|c| c.public_dir = public.clone());
        let addr = server.http_addr();
        for target in [
            "/.env",
            "/.git/config",
            "/.git/",
            "/.hidden/x.txt",
            "/%2eenv",
            "/%2Eenv",
            "/%2egit/config",
            "/.hidden/../.env",
            "/ok.txt/../.env",
        ] {
            let response = get(addr, target);
            assert!(
                matches!(response.status, 400 | 404),
                "{target} gave {}",
                response.head
            );
            assert!(!response.text().contains("secret"), "{target} leaked");
            assert!(!response.text().contains("SECRET"), "{target} leaked");
        }
        for target in ["/.env", "/.git/config", "/.hidden/x.txt", "/%2eenv"] {
            assert_eq!(get(addr, target).status, 404, "{target}");
        }
        let ok = get(addr, "/ok.txt");
        assert_eq!((ok.status, ok.text().as_str()), (200, "fine"));
    }
}

/// Attack 10: HTTP/2 (and other versions) on the HTTP/1.1 port.
mod versions {
    use super::*;

    #[test]
    fn the_http2_preface_and_http2_requests_get_a_505_and_the_socket_is_closed() {
        let server = start();
        let addr = server.http_addr();
        for request in [
            &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n",
            b"GET / HTTP/3.0\r\nHost: 127.0.0.1\r\n\r\n",
        ] {
            let transcript = send(addr, request);
            let shown = String::from_utf8_lossy(request);
            assert_eq!(
                transcript.response.status, 505,
                "{shown}: {}",
                transcript.response.head
            );
            assert!(transcript.closed, "{shown}: the socket stays open");
            assert!(transcript.took < PROMPT, "{shown}: {:?}", transcript.took);
            assert_eq!(transcript.responses(), 1);
        }
        served_promptly(addr);
    }
}

/// Attack 11: request smuggling with two framings that disagree.
mod smuggling {
    use super::*;

    #[test]
    fn content_length_with_transfer_encoding_gets_one_400_and_nothing_else() {
        let server = start();
        let addr = server.http_addr();
        let mut member = connect(&server, "/ws/x?raw=1");
        wait_for_members(&server, "x", 1);
        let smuggled = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        for (target, framing) in [
            (
                "/publish/x",
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
            ),
            (
                "/publish/x",
                "Transfer-Encoding: chunked\r\nContent-Length: 44\r\n",
            ),
            ("/", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
        ] {
            let transcript = send(
                addr,
                format!(
                    "POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{framing}\r\n0\r\n\r\n{smuggled}"
                ),
            );
            let text = String::from_utf8_lossy(&transcript.raw);
            assert_eq!(transcript.response.status, 400, "{target}: {text}");
            assert_eq!(
                transcript.responses(),
                1,
                "a second request was answered: {text}"
            );
            assert!(transcript.closed);
        }
        // Nothing reached the room: the next message is this one.
        server.publish("x", "after the attempts").unwrap();
        assert_eq!(next_data(&mut member), Message::text("after the attempts"));
        served_promptly(addr);
    }
}

/// Attack 12: one address opening connection after connection.
mod per_address {
    use super::*;

    const LIMIT: usize = 8;

    /// A connection that sends nothing and reads what the server says first.
    fn refused_at_once(addr: SocketAddr) -> Transcript {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
        let started = Instant::now();
        let mut raw = Vec::new();
        let closed = stream.read_to_end(&mut raw).is_ok();
        Transcript {
            response: parse_response(&raw),
            raw,
            closed,
            took: started.elapsed(),
        }
    }

    /// An upgrade to `/echo` that may be refused: the socket on 101, else the status
    /// (0 when the refusal was reset away before we read it).
    fn try_upgrade(addr: SocketAddr) -> Result<TcpStream, u16> {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
        // A refused socket may already be closed: a failed write is fine.
        let _ = stream.write_all(upgrade_request("/echo", "").as_bytes());
        let head = read_head(&mut stream);
        match status_of(&head) {
            101 => Ok(stream),
            status => Err(status),
        }
    }

    #[test]
    fn past_the_per_address_limit_connections_get_503_and_are_counted() {
        let server = start_with(|c| c.max_connections_per_ip = LIMIT);
        let addr = server.http_addr();
        let mut open: Vec<_> = (0..LIMIT).map(|_| connect(&server, "/echo")).collect();
        let mut refusals = 0;

        let ninth = refused_at_once(addr);
        refusals += 1;
        assert_eq!(ninth.response.status, 503, "{}", ninth.response.head);
        assert!(ninth.closed && ninth.took < PROMPT, "{:?}", ninth.took);
        assert!(ninth.response.text().contains("--max-connections-per-ip"));

        // Closing one lets a new one in (as soon as the server has let go of it).
        let mut leaving = open.pop().unwrap();
        close_handshake(&mut leaving);
        let mut newcomer = None;
        wait_until("a place frees up for a new connection", || {
            match try_upgrade(addr) {
                Ok(stream) => newcomer = Some(stream),
                Err(status) => {
                    assert!(matches!(status, 0 | 503), "{status}");
                    refusals += 1;
                }
            }
            newcomer.is_some()
        });

        // /stats counts exactly the refusals we saw (it needs a free place itself).
        let mut leaving = open.pop().unwrap();
        close_handshake(&mut leaving);
        let mut json = None;
        wait_until("a place frees up for /stats", || {
            let transcript = send(addr, "GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
            match transcript.response.status {
                200 => json = Some(transcript.response.text()),
                status => {
                    assert!(matches!(status, 0 | 503), "{status}");
                    refusals += 1;
                }
            }
            json.is_some()
        });
        let json = json.unwrap();
        assert_eq!(
            json_number(&json, "refused_per_ip"),
            Some(refusals),
            "{json}"
        );
        drop((open, newcomer));
    }

    /// Runs [`bounded_threads_inner`] alone in a child process (it counts threads).
    #[test]
    fn idle_sockets_from_one_address_hold_no_more_threads_than_its_limit() {
        run_alone("per_address::bounded_threads_inner");
    }

    #[test]
    #[ignore = "run by idle_sockets_from_one_address_hold_no_more_threads_than_its_limit"]
    fn bounded_threads_inner() {
        if !alone() {
            return;
        }
        let server = start_with(|c| {
            c.max_connections_per_ip = LIMIT;
            c.handshake_timeout = Duration::from_secs(30);
        });
        let addr = server.http_addr();
        served_promptly(addr);
        wait_until("the warm-up requests end", || server.connections() == 0);
        let before = thread_count();
        let idle: Vec<TcpStream> = (0..200)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect();
        // The first LIMIT accepted are held, the rest refused at once. Which ones is up
        // to the accept queue's order, so sort them out by what each received.
        let mut answers = vec![Vec::new(); idle.len()];
        let mut refused = vec![false; idle.len()];
        for stream in &idle {
            stream.set_nonblocking(true).unwrap();
        }
        wait_until("every socket past the limit is refused", || {
            for (i, mut stream) in idle.iter().enumerate() {
                let mut buf = [0u8; 512];
                while !refused[i] {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) if !answers[i].is_empty() => refused[i] = true,
                        Ok(0) => panic!("socket {i} closed without an answer"),
                        Ok(n) => answers[i].extend_from_slice(&buf[..n]),
                        Err(_) => break, // nothing (more) yet
                    }
                }
            }
            refused.iter().filter(|r| **r).count() >= idle.len() - LIMIT
        });
        for (i, answer) in answers.iter().enumerate() {
            if refused[i] {
                assert_eq!(parse_response(answer).status, 503, "socket {i}");
            } else {
                assert!(answer.is_empty(), "socket {i} got an answer to nothing");
            }
        }
        assert_eq!(refused.iter().filter(|r| !**r).count(), LIMIT);
        let during = thread_count();
        eprintln!("threads: {before} before, {during} with 200 idle sockets");
        assert!(
            during <= before + LIMIT + 2,
            "{during} threads with 200 idle sockets, {before} before"
        );
        drop(idle);
        wait_until("the idle sockets' threads end", || thread_count() <= before);
    }
}

/// Attack 13: WebSockets that never show their token (`--auth first-message`).
mod first_message_pool {
    use super::*;
    use threadcast::AuthMode;

    const TOKEN: &str = "first-message-token";
    const MAX_CONNECTIONS: usize = 64;

    #[test]
    fn unauthenticated_sockets_have_a_pool_of_their_own_and_honest_clients_still_get_in() {
        let server = start_with(|c| {
            c.auth = AuthMode::FirstMessage;
            c.token = Some(TOKEN.into());
            c.max_connections = MAX_CONNECTIONS;
            // The idle sockets must outlast the test, not be closed for want of a token.
            c.handshake_timeout = Duration::from_secs(30);
        });
        let addr = server.http_addr();
        let pool = threadcast::internals::unauthenticated_pool(MAX_CONNECTIONS);
        assert_eq!(pool, 16);

        // The attacker fills all but one place of the pool.
        let mut idle: Vec<TcpStream> = (0..pool - 1)
            .map(|_| raw_connect(addr, "/ws/pool"))
            .collect();
        // An honest client takes the last place, shows its token, and is in.
        let mut honest = connect(&server, "/ws/pool?raw=1");
        honest.send(Message::text(TOKEN)).unwrap();
        wait_for_members(&server, "pool", 1);
        // Its place in the pool is free again: the attacker can take it...
        idle.push(raw_connect(addr, "/ws/pool"));
        // ...but no more.
        let (_, status, head) = raw_request(addr, upgrade_request("/ws/pool", ""));
        assert_eq!(status, 503, "{head}");
        // The honest client is served from the main pool all along (the refused one
        // gives its place back once its answer is out).
        wait_until("the refused handshake gives its place back", || {
            server.connections() == pool + 1
        });
        server.publish("pool", "for members only").unwrap();
        assert_eq!(next_data(&mut honest), Message::text("for members only"));
        served_promptly(addr);

        // One attacker leaves: another honest client gets in and is served.
        let leaving = idle.pop().unwrap();
        drop(leaving);
        let mut second = None;
        wait_until("a place in the pool frees up", || {
            let stream = TcpStream::connect(addr).unwrap();
            stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
            let url = format!("ws://{addr}/ws/pool?raw=1");
            match tungstenite::client(url.as_str(), stream) {
                Ok((ws, _)) => second = Some(ws),
                Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
                    assert_eq!(r.status(), 503);
                }
                Err(e) => panic!("{e}"),
            }
            second.is_some()
        });
        let mut second = second.unwrap();
        second.send(Message::text(TOKEN)).unwrap();
        wait_for_members(&server, "pool", 2);
        server.publish("pool", "welcome too").unwrap();
        assert_eq!(next_data(&mut second), Message::text("welcome too"));
        drop(idle);
    }

    /// A socket that leaves (no close frame) before showing its token must give back
    /// its place among `--max-connections` at once. (It once did not: the `Join`
    /// command, which owns the writer's queue sender, outlived a failed
    /// authentication, so the writer waited until a ping failed, 20 s and more, and 64
    /// connect-and-leave cycles locked an honest client out of a
    /// `--max-connections 64` server.)
    #[test]
    fn sockets_that_leave_before_authenticating_give_their_places_back_at_once() {
        let server = start_with(|c| {
            c.auth = AuthMode::FirstMessage;
            c.token = Some(TOKEN.into());
            c.max_connections = MAX_CONNECTIONS;
            c.handshake_timeout = Duration::from_secs(30);
        });
        let addr = server.http_addr();
        for i in 0..MAX_CONNECTIONS {
            let (stream, status, head) = raw_request(addr, upgrade_request("/ws/pool", ""));
            assert_eq!(status, 101, "attempt {i}: {head}");
            drop(stream);
            let deadline = Instant::now() + Duration::from_secs(2);
            while server.connections() > 0 {
                assert!(
                    Instant::now() < deadline,
                    "attempt {i}: a client that left still holds its place after 2 s"
                );
                thread::sleep(Duration::from_millis(1));
            }
        }
        let mut honest = connect(&server, "/ws/pool?raw=1");
        honest.send(Message::text(TOKEN)).unwrap();
        wait_for_members(&server, "pool", 1);
    }

    /// Shutdown reaches sockets still waiting to show their token: they get 1001 like
    /// everyone else, and the drain does not wait for their deadline.
    #[test]
    fn a_shutdown_closes_sockets_still_waiting_for_their_token_with_1001() {
        let server = start_with(|c| {
            c.auth = AuthMode::FirstMessage;
            c.token = Some(TOKEN.into());
            c.handshake_timeout = Duration::from_secs(30);
        });
        let mut waiting = connect(&server, "/ws/pool");
        wait_until("the socket waits for its token", || {
            server.connections() == 1
        });
        let started = Instant::now();
        let stopper = thread::spawn(move || server.shutdown());
        let (code, _) = expect_close(&mut waiting);
        assert_eq!(u16::from(code), 1001);
        let _ = waiting.close(None);
        while waiting.read().is_ok() {}
        assert!(stopper.join().unwrap(), "every connection closed in time");
        assert!(
            started.elapsed() < threadcast::DRAIN_TIMEOUT,
            "the drain waited {:?}",
            started.elapsed()
        );
    }
}

/// Attack 14: a client flooding a room with messages.
mod message_rate {
    use super::*;

    const RATE: u32 = 10;

    fn rate_limited(addr: SocketAddr) -> u64 {
        json_number(&stats(addr, "/stats"), "rate_limited_disconnects").unwrap()
    }

    #[test]
    fn a_client_flooding_a_room_is_closed_with_1008_and_counted() {
        let server = start_with(|c| c.max_messages_per_second = RATE);
        let addr = server.http_addr();
        let mut flood = raw_connect(addr, "/ws/flooded?raw=1");
        let burst: Vec<u8> = (0..100)
            .flat_map(|i| frame(true, op::TEXT, format!("flood {i}").as_bytes()))
            .collect();
        flood.write_all(&burst).unwrap();
        // Its own messages come back (it is a member) until the close frame.
        let mut close = None;
        for _ in 0..200 {
            match read_non_ping(&mut flood) {
                Some(f) if f.opcode == op::CLOSE => {
                    close = Some(f);
                    break;
                }
                Some(_) => continue,
                None => break,
            }
        }
        let close = close.expect("a close frame");
        assert_eq!(close.close_code(), Some(1008));
        let reason = String::from_utf8_lossy(&close.payload[2..]).into_owned();
        assert!(reason.contains("messages per second"), "{reason}");
        assert_eq!(rate_limited(addr), 1);
        served_promptly(addr);
    }

    #[test]
    fn a_client_within_its_rate_is_never_closed_and_echo_is_not_limited() {
        let server = start_with(|c| c.max_messages_per_second = RATE);
        let addr = server.http_addr();
        let mut polite = connect(&server, "/ws/polite?raw=1");
        wait_for_members(&server, "polite", 1);
        // The whole burst allowance at once, then five a second for a second: only
        // the refill lets these last five through.
        for i in 0..2 * RATE {
            polite.send(Message::text(format!("burst {i}"))).unwrap();
        }
        for i in 0..5 {
            thread::sleep(Duration::from_millis(200)); // the rate itself, not a wait
            polite.send(Message::text(format!("steady {i}"))).unwrap();
        }
        server.publish("polite", "still open").unwrap();
        // Its 25 messages come back (it is a member), and ours; a close frame instead
        // would fail `next_data`. The last of its own may trail ours.
        let heard: Vec<Message> = (0..2 * RATE + 6).map(|_| next_data(&mut polite)).collect();
        assert!(heard.contains(&Message::text("still open")));
        assert!(heard.contains(&Message::text("steady 4")));
        assert_eq!(rate_limited(addr), 0);

        let mut echo = connect(&server, "/echo");
        for i in 0..100 {
            echo.send(Message::text(format!("echo {i}"))).unwrap();
        }
        for i in 0..100 {
            assert_eq!(next_data(&mut echo), Message::text(format!("echo {i}")));
        }
        assert_eq!(rate_limited(addr), 0);
    }
}

/// Attack 15 (on the operator): the token must never reach a log, at any level.
mod secrets {
    use super::*;
    use std::io::BufRead;
    use std::sync::{Arc, Mutex};

    const SECRET: &str = "SECRETXYZ";

    /// Runs the binary with `RUST_LOG=rust_log`, uses the token every way a client
    /// can, shuts it down, and returns everything it wrote on stdout and stderr.
    fn everything_logged(rust_log: &str) -> Vec<String> {
        let mut command = binary_command();
        command
            .args([
                "--token",
                SECRET,
                "--auth",
                "first-message",
                "--no-demo-feed",
            ])
            .args(["--public", public_dir().to_str().unwrap()])
            .args(["--poll-timeout", "100ms"])
            .env("RUST_LOG", rust_log)
            .stdout(std::process::Stdio::piped());
        let mut child = command.spawn().expect("spawn threadcast");
        // Every line from the first one on, both streams.
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let readers = [
            thread::spawn({
                let lines = Arc::clone(&lines);
                move || {
                    for line in std::io::BufReader::new(stderr)
                        .lines()
                        .map_while(Result::ok)
                    {
                        if let Some(at) = line.find("listening http=") {
                            let addr = line[at + "listening http=".len()..]
                                .split_whitespace()
                                .next()
                                .and_then(|a| a.parse::<SocketAddr>().ok());
                            let _ = addr_tx.send(addr);
                        }
                        lines.lock().unwrap().push(line);
                    }
                }
            }),
            thread::spawn({
                let lines = Arc::clone(&lines);
                move || {
                    for line in std::io::BufReader::new(stdout)
                        .lines()
                        .map_while(Result::ok)
                    {
                        lines.lock().unwrap().push(line);
                    }
                }
            }),
        ];
        let addr = addr_rx
            .recv_timeout(TEST_TIMEOUT)
            .expect("a listening line")
            .expect("an address");

        // A WebSocket showing the token as its first message, then talking.
        let mut ws = connect_addr(addr, "/ws/vault?raw=1");
        ws.send(Message::text(SECRET)).unwrap();
        ws.send(Message::text("hello")).unwrap();
        // Its own message comes back: it is in the room.
        assert_eq!(next_data(&mut ws), Message::text("hello"));
        // A wrong token is refused and logged, without what was sent.
        let mut wrong = connect_addr(addr, "/ws/vault");
        wrong
            .send(Message::text(format!("{SECRET}-but-wrong")))
            .unwrap();
        let _ = expect_close(&mut wrong);
        drop(wrong);
        let bearer = format!("Bearer {SECRET}");
        let published = http(
            addr,
            "POST",
            "/publish/vault",
            &[("Authorization", bearer.as_str())],
            b"published",
        );
        assert_eq!(published.status, 202, "{}", published.head);
        assert_eq!(next_data(&mut ws), Message::text("published"));
        let events = open_event_stream(addr, &format!("/events/vault?token={SECRET}"), "");
        assert_eq!(
            get(addr, &format!("/poll/vault?token={SECRET}&since=0")).status,
            200
        );
        assert_eq!(get(addr, &format!("/stats?token={SECRET}")).status, 200);
        assert_eq!(get(addr, "/stats?token=wrong").status, 401);

        let status = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        // Its close reply goes out as the socket closes: the server need not wait.
        let _ = expect_close(&mut ws);
        drop((ws, events));
        assert_eq!(child.wait().unwrap().code(), Some(0));
        for reader in readers {
            reader.join().unwrap();
        }
        Arc::try_unwrap(lines).unwrap().into_inner().unwrap()
    }

    fn assert_no_secret(rust_log: &str) {
        let lines = everything_logged(rust_log);
        assert!(
            lines.iter().any(|l| l.contains("DEBUG")),
            "RUST_LOG={rust_log} did not turn on verbose logging: {lines:#?}"
        );
        let leaks: Vec<&String> = lines.iter().filter(|l| l.contains(SECRET)).collect();
        assert!(
            leaks.is_empty(),
            "RUST_LOG={rust_log} leaked the token: {leaks:#?}"
        );
    }

    #[test]
    fn the_token_appears_in_no_log_line_at_trace_level() {
        assert_no_secret("trace");
    }

    #[test]
    fn the_token_appears_in_no_log_line_even_with_tungstenite_asked_for_trace() {
        assert_no_secret("trace,tungstenite=trace");
    }
}
