//! Attacks on the memory budget (`--memory-limit`): hostile clients over real loopback
//! sockets against the real binary, in a process of its own, whose resident memory
//! (VmRSS in `/proc/<pid>/status`) is sampled throughout. Whatever the clients do, the
//! server must stay within its budget plus a fixed overhead, refuse what it cannot
//! afford the documented way (`503` for requests, close 1008 for slow consumers, 1009
//! for messages that are too large, 1008 or 1013 for a WebSocket publisher it cannot
//! take a message from), and go on serving a normal client in another room.
//!
//! `MEMORY_ATTACK_BIN=/path/to/threadcast` runs the same attacks against another
//! binary (one from before the budget existed): without `--memory-limit` and without
//! the memory assertion, for the "before" figures. Either way every attack prints
//! `attack <name>: peak RSS <N> MiB`:
//!
//! ```sh
//! MEMORY_ATTACK_BIN=/tmp/old/threadcast cargo test --test memory -- --nocapture --test-threads=1
//! ```
//!
//! Each attack is bounded in clients, bytes and time, so even an unbounded server
//! grows by a few GB at most.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::frames;
use common::*;

/// The budget every attack runs under (`--memory-limit`).
const LIMIT_FLAG: &str = "256MiB";
const LIMIT_BYTES: u64 = 256 << 20;
/// The most connections any attack here opens (partial frames: 400, and the normal
/// client's).
const MOST_CONNECTIONS: usize = 410;
/// What the server may use besides its budget with that many connections open
/// (README, "Capacity and memory": `budget::fixed_overhead`).
const FIXED_OVERHEAD_BYTES: u64 = threadcast::internals::fixed_overhead(MOST_CONNECTIONS) as u64;

/// 1 MiB, the largest message the default `--max-message-bytes` lets through: the
/// attacks send messages of (about) this size.
const MIB: usize = 1 << 20;

/// Environment variable naming another binary to attack (no budget, no assertion).
const BIN_ENV: &str = "MEMORY_ATTACK_BIN";

/// How often the sampler reads the server's resident memory.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// The room of the normal client that must be served throughout every attack.
const NORMAL_ROOM: &str = "normal";

// ---------------------------------------------------------------------------------
// The server under attack and its resident memory.
// ---------------------------------------------------------------------------------

/// The binary to attack when it is not this build's.
fn other_binary() -> Option<String> {
    std::env::var(BIN_ENV).ok().filter(|s| !s.is_empty())
}

/// The server's resident memory in bytes (VmRSS), or `None` once it is gone.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// A running server under attack, its RSS sampled every [`SAMPLE_EVERY`] from start to
/// [`Attacked::finish`]. Dropping it (a failed test) prints the peak and kills it.
struct Attacked {
    name: &'static str,
    server: Binary,
    limited: bool,
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    sampler: Option<thread::JoinHandle<()>>,
    reported: bool,
}

impl Attacked {
    /// Starts the binary with `extra` flags (and `--memory-limit`, unless another
    /// binary is attacked) and starts sampling its memory.
    fn start(name: &'static str, extra: &[&str]) -> Attacked {
        let (mut command, limited) = match other_binary() {
            None => {
                let mut command = binary_command();
                command.args(["--memory-limit", LIMIT_FLAG]);
                (command, true)
            }
            Some(path) => {
                let mut command = std::process::Command::new(path);
                command
                    .args(["--http", "127.0.0.1:0"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped());
                (command, false)
            }
        };
        command.args(extra);
        let mut server = Binary::start(command);
        server.drain_logs();
        let pid = server.child.id();
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_bytes(pid).unwrap_or(0)));
        let sampler = {
            let (stop, peak) = (stop.clone(), peak.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match rss_bytes(pid) {
                        Some(rss) => peak.fetch_max(rss, Ordering::Relaxed),
                        None => return,
                    };
                    thread::sleep(SAMPLE_EVERY);
                }
            })
        };
        Attacked {
            name,
            server,
            limited,
            stop,
            peak,
            sampler: Some(sampler),
            reported: false,
        }
    }

    fn http(&self) -> SocketAddr {
        self.server.http
    }

    /// Stops sampling and prints the peak (once).
    fn report(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(sampler) = self.sampler.take() {
            let _ = sampler.join();
        }
        if let Some(rss) = rss_bytes(self.server.child.id()) {
            self.peak.fetch_max(rss, Ordering::Relaxed);
        }
        let peak = self.peak.load(Ordering::Relaxed);
        if !self.reported {
            self.reported = true;
            println!(
                "attack {}: peak RSS {} MiB",
                self.name,
                (peak + (1 << 19)) >> 20
            );
        }
        peak
    }

    /// Ends the attack: prints the peak, asserts the bound (with the budget), and stops
    /// the server with SIGTERM (killing it if it has not exited 10 s later).
    fn finish(mut self) {
        let peak = self.report();
        if self.limited {
            assert!(
                peak <= LIMIT_BYTES + FIXED_OVERHEAD_BYTES,
                "attack {}: peak RSS {} KiB is over the budget {} KiB + the fixed overhead {} KiB",
                self.name,
                peak >> 10,
                LIMIT_BYTES >> 10,
                FIXED_OVERHEAD_BYTES >> 10
            );
        }
        self.server.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.server.child.try_wait().unwrap().is_none() {
            if Instant::now() >= deadline {
                let _ = self.server.child.kill();
                let _ = self.server.child.wait();
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Attacked {
    fn drop(&mut self) {
        self.report();
        if let Ok(None) = self.server.child.try_wait() {
            let _ = self.server.child.kill();
            let _ = self.server.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------
// Plain HTTP that never panics: an attack's refusals are data, not failures.
// ---------------------------------------------------------------------------------

/// Status of the response head on `stream` (0 when none came).
fn response_status(stream: &mut TcpStream) -> u16 {
    status_of(&read_head(stream))
}

/// `GET target` with `Connection: close`; the status, or 0 when no answer came.
fn get_status(addr: SocketAddr, target: &str) -> u16 {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return 0;
    };
    stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    response_status(&mut stream)
}

/// `GET target`: the whole body (empty when the request failed).
fn get_body(addr: SocketAddr, target: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return String::new();
    };
    stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    let request = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw).text()
}

/// `POST /publish/<room>` with `body`; the status, or 0 when no answer came. The body
/// is written by a thread of its own while this one reads, so an early answer (a 503
/// before the body is read) is seen even if the server stops reading.
fn publish(addr: SocketAddr, room: &str, body: &[u8]) -> u16 {
    let Ok(stream) = TcpStream::connect(addr) else {
        return 0;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let Ok(mut reader) = stream.try_clone() else {
        return 0;
    };
    let head = format!(
        "POST /publish/{room} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    thread::scope(|s| {
        s.spawn(|| {
            let mut writer = &stream;
            let _ = writer
                .write_all(head.as_bytes())
                .and_then(|()| writer.write_all(body));
        });
        let status = response_status(&mut reader);
        // Unblocks the writer if the server answered without reading the whole body.
        let _ = stream.shutdown(std::net::Shutdown::Both);
        status
    })
}

/// The `"key":N` number in a flat JSON answer such as `/stats`.
fn json_number(json: &str, key: &str) -> Option<u64> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    json[start..].split([',', '}']).next()?.trim().parse().ok()
}

/// Waits (bounded) until `/stats` counts `n` room members: a WebSocket joins its room
/// just after its handshake, so a raw member has no other sign that it is in.
fn wait_for_stats_members(addr: SocketAddr, n: u64) {
    let deadline = Instant::now() + TEST_TIMEOUT;
    loop {
        let members = json_number(&get_body(addr, "/stats"), "members");
        if members == Some(n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/stats never counted {n} members (last: {members:?})"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------
// Raw WebSocket clients: writes with a deadline, reads that skip payloads.
// ---------------------------------------------------------------------------------

/// A WebSocket upgraded by hand at `path` (status 101 asserted).
fn ws_connect(addr: SocketAddr, path: &str) -> TcpStream {
    raw_connect(addr, path)
}

/// A masked binary frame carrying `len` bytes.
fn binary_frame(len: usize) -> Vec<u8> {
    frame_with(true, 0, op::BINARY, &vec![0x5a; len], true)
}

/// Raises this process's soft limit on open files to the hard limit, for attacks that
/// hold hundreds of sockets (tests of this file may run at the same time).
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid pointer to an rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) == 0
            && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit);
        }
    }
}

/// How a write with a deadline ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// Everything written.
    All,
    /// The deadline came first: the server stopped reading (back-pressure).
    Held,
    /// The connection broke (the server closed it).
    Broken,
}

/// Writes `bytes` to `stream` unless `deadline` comes first or the connection breaks.
fn write_until(stream: &TcpStream, bytes: &[u8], deadline: Instant) -> Sent {
    stream
        .set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut written = 0;
    while written < bytes.len() {
        match (&*stream).write(&bytes[written..]) {
            Ok(0) => return Sent::Broken,
            Ok(n) => written += n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                if Instant::now() >= deadline {
                    return Sent::Held;
                }
            }
            Err(_) => return Sent::Broken,
        }
    }
    Sent::All
}

/// How a client's connection ended, as far as it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// The server's close frame, with its code.
    Closed(u16),
    /// A close frame without a code.
    ClosedWithoutCode,
    /// The connection ended without a close frame.
    Eof,
    /// A read error such as a reset.
    Broken(std::io::ErrorKind),
    /// Still open when the client stopped reading.
    Open,
}

/// One frame from the server, payload skipped unless it is a close frame.
enum Event {
    Data { len: u64 },
    Close(Option<u16>),
    Other,
}

/// Reads server frames through a fixed 64 KiB buffer, skipping payloads, so a client
/// can read many MiB without keeping them. Before `slow_until` it reads at most 4 KiB
/// every 20 ms; at `deadline` it stops (the connection is then [`Ending::Open`]).
struct FrameReader<'a> {
    stream: &'a TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    slow_until: Option<Instant>,
    deadline: Instant,
}

impl<'a> FrameReader<'a> {
    fn new(stream: &'a TcpStream, deadline: Instant) -> Self {
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        FrameReader {
            stream,
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            slow_until: None,
            deadline,
        }
    }

    /// Reads some more bytes into the buffer.
    fn fill(&mut self) -> Result<(), Ending> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        loop {
            let now = Instant::now();
            if now >= self.deadline {
                return Err(Ending::Open);
            }
            let slow = self.slow_until.is_some_and(|until| now < until);
            let room = self.buf.len() - self.end;
            let room = if slow { room.min(4096) } else { room };
            match (&*self.stream).read(&mut self.buf[self.end..self.end + room]) {
                Ok(0) => return Err(Ending::Eof),
                Ok(n) => {
                    self.end += n;
                    if slow {
                        thread::sleep(Duration::from_millis(20));
                    }
                    return Ok(());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(Ending::Broken(e.kind())),
            }
        }
    }

    /// The next `n` (at most 64 KiB) bytes, not consumed.
    fn peek(&mut self, n: usize) -> Result<&[u8], Ending> {
        while self.end - self.start < n {
            self.fill()?;
        }
        Ok(&self.buf[self.start..self.start + n])
    }

    fn skip(&mut self, mut n: u64) -> Result<(), Ending> {
        loop {
            let here = n.min((self.end - self.start) as u64);
            self.start += here as usize;
            n -= here;
            if n == 0 {
                return Ok(());
            }
            self.fill()?;
        }
    }

    fn next(&mut self) -> Result<Event, Ending> {
        let head = self.peek(2)?;
        let (opcode, masked, short) = (head[0] & 0x0f, head[1] & 0x80 != 0, head[1] & 0x7f);
        let (head_len, len) = match short {
            126 => {
                let b = self.peek(4)?;
                (4, u64::from(u16::from_be_bytes([b[2], b[3]])))
            }
            127 => {
                let b = self.peek(10)?;
                (10, u64::from_be_bytes(b[2..10].try_into().unwrap()))
            }
            n => (2, u64::from(n)),
        };
        self.skip(head_len)?;
        if masked {
            self.skip(4)?;
        }
        match opcode {
            op::CLOSE if len <= 125 => {
                let payload = self.peek(len as usize)?;
                let code =
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                self.skip(len)?;
                Ok(Event::Close(code))
            }
            op::TEXT | op::BINARY | op::CONTINUATION => {
                self.skip(len)?;
                Ok(Event::Data { len })
            }
            _ => {
                self.skip(len)?;
                Ok(Event::Other)
            }
        }
    }

    /// Reads until the server's close frame, the end of the connection or the
    /// deadline; `on_data` sees each data frame's length.
    fn until_end(&mut self, mut on_data: impl FnMut(u64)) -> Ending {
        loop {
            match self.next() {
                Ok(Event::Data { len }) => on_data(len),
                Ok(Event::Other) => {}
                Ok(Event::Close(Some(code))) => return Ending::Closed(code),
                Ok(Event::Close(None)) => return Ending::ClosedWithoutCode,
                Err(ending) => return ending,
            }
        }
    }
}

/// Reads what the server sent `stream` until its close frame, the end of the
/// connection, or `deadline`.
fn drain(stream: &TcpStream, deadline: Instant) -> Ending {
    FrameReader::new(stream, deadline).until_end(|_| {})
}

/// Asserts that every ending is still open or a close with one of `codes`.
fn assert_endings(attack: &str, who: &str, endings: &[Ending], codes: &[u16]) {
    let bad: Vec<_> = endings
        .iter()
        .filter(|e| {
            !matches!(e, Ending::Open) && !matches!(e, Ending::Closed(c) if codes.contains(c))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{attack}: {who} must stay open (back-pressure) or be closed with {codes:?}; got {bad:?} \
         (all: {endings:?})"
    );
}

/// `(open, closed with a code)` counts, for the log.
fn tally(endings: &[Ending]) -> String {
    let open = endings.iter().filter(|e| **e == Ending::Open).count();
    let mut closed: Vec<u16> = endings
        .iter()
        .filter_map(|e| match e {
            Ending::Closed(c) => Some(*c),
            _ => None,
        })
        .collect();
    closed.sort_unstable();
    let mut text = format!("{open} open");
    let mut i = 0;
    while i < closed.len() {
        let n = closed[i..].iter().take_while(|c| **c == closed[i]).count();
        text.push_str(&format!(", {n} closed {}", closed[i]));
        i += n;
    }
    let other = endings.len() - open - closed.len();
    if other > 0 {
        text.push_str(&format!(", {other} other"));
    }
    text
}

// ---------------------------------------------------------------------------------
// The normal client: a member of another room, served all along.
// ---------------------------------------------------------------------------------

/// What the normal client saw during an attack.
#[derive(Debug, Default)]
struct NormalReport {
    rounds: usize,
    delivered: usize,
    /// Publishes refused with 503 (allowed while the budget is short).
    refused: usize,
    /// `/healthz` answers other than 200.
    unhealthy: Vec<u16>,
    /// Publish answers other than 202 and 503.
    bad_publishes: Vec<u16>,
    /// Messages accepted (202) that never reached the member, and why.
    lost: Vec<(String, String)>,
}

/// Reads the member's frames until the room message `payload`; why not, if it did not
/// come (a close frame, an error, the read timeout).
fn receive(member: &mut tungstenite::WebSocket<TcpStream>, payload: &str) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let message = match member.read() {
            Ok(m @ (tungstenite::Message::Text(_) | tungstenite::Message::Binary(_))) => m,
            Ok(tungstenite::Message::Close(frame)) => {
                return Err(format!("the member was closed: {frame:?}"));
            }
            Ok(_) => continue,
            Err(e) => return Err(format!("{e} after {:?}", started.elapsed())),
        };
        if let frames::Frame::Message { payload: p, .. } = frames::parse(message) {
            if p == payload.as_bytes() {
                return Ok(());
            }
        }
    }
}

/// A member of [`NORMAL_ROOM`] and a thread that, until stopped, checks `/healthz`,
/// publishes a short message and waits for the member to receive it, ten times a
/// second.
struct Normal {
    http: SocketAddr,
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<(NormalReport, tungstenite::WebSocket<TcpStream>)>,
}

impl Normal {
    fn start(server: &Attacked) -> Normal {
        let (http, ws) = (server.server.http, server.server.ws);
        let (mut member, _welcome) = frames::join_addr(ws, NORMAL_ROOM, "");
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let stop = stop.clone();
            thread::spawn(move || {
                let mut report = NormalReport::default();
                while !stop.load(Ordering::Relaxed) {
                    report.rounds += 1;
                    let health = get_status(http, "/healthz");
                    if health != 200 {
                        report.unhealthy.push(health);
                    }
                    let payload = format!("normal {}", report.rounds);
                    match publish(http, NORMAL_ROOM, payload.as_bytes()) {
                        202 => match receive(&mut member, &payload) {
                            Ok(()) => report.delivered += 1,
                            Err(why) => report.lost.push((payload, why)),
                        },
                        503 => report.refused += 1,
                        other => report.bad_publishes.push(other),
                    }
                    thread::sleep(Duration::from_millis(100));
                }
                (report, member)
            })
        };
        Normal { http, stop, handle }
    }

    /// Stops the rounds, asserts they went well, then asserts that the normal client is
    /// served after the attack: `/healthz` answers 200 and a publish into its room is
    /// accepted (after 503s for at most [`TEST_TIMEOUT`]) and delivered.
    fn check(self, attack: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let (report, mut member) = self.handle.join().expect("the normal client panicked");
        println!(
            "attack {attack}: normal client: {} rounds, {} delivered, {} refused with 503",
            report.rounds, report.delivered, report.refused
        );
        assert!(
            report.unhealthy.is_empty()
                && report.bad_publishes.is_empty()
                && report.lost.is_empty(),
            "{attack}: the normal client was not served during the attack: {report:?}"
        );
        assert_eq!(
            get_status(self.http, "/healthz"),
            200,
            "{attack}: /healthz after the attack"
        );
        let payload = "after the attack";
        let deadline = Instant::now() + TEST_TIMEOUT;
        loop {
            match publish(self.http, NORMAL_ROOM, payload.as_bytes()) {
                202 => break,
                503 if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                other => {
                    panic!("{attack}: a publish into a quiet room after the attack got {other}")
                }
            }
        }
        if let Err(why) = receive(&mut member, payload) {
            panic!(
                "{attack}: a message published after the attack did not reach the normal member: {why}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// The attacks.
// ---------------------------------------------------------------------------------

/// 1. Anonymous `POST /publish` of 1 MiB bodies into 400 distinct rooms from 8
///    publishers at once: 400 MiB of history if the server kept it all (an idle room
///    keeps its history, up to 1024 rooms × 4 MiB). Publishes may be refused with 503
///    once the budget is short.
#[test]
fn history_flood_of_400_rooms_with_a_mebibyte_each() {
    const NAME: &str = "history-flood";
    const ROOMS: usize = 400;
    const PUBLISHERS: usize = 8;
    let server = Attacked::start(NAME, &["--no-demo-feed"]);
    let normal = Normal::start(&server);
    let http = server.http();
    let body = vec![b'h'; MIB];
    let deadline = Instant::now() + Duration::from_secs(15);
    let statuses: Vec<u16> = thread::scope(|s| {
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let body = &body;
                s.spawn(move || {
                    (p..ROOMS)
                        .step_by(PUBLISHERS)
                        .take_while(|_| Instant::now() < deadline)
                        .map(|room| publish(http, &format!("flood-{room}"), body))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        publishers
            .into_iter()
            .flat_map(|p| p.join().unwrap())
            .collect()
    });
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    let refused = statuses.iter().filter(|s| **s == 503).count();
    println!(
        "attack {NAME}: {} publishes, {accepted} accepted, {refused} refused with 503",
        statuses.len()
    );
    normal.check(NAME);
    server.finish();
    let other: Vec<_> = statuses
        .iter()
        .filter(|s| !matches!(s, 202 | 503))
        .collect();
    assert!(other.is_empty(), "{NAME}: publishes answered {other:?}");
    assert!(accepted > 0, "{NAME}: no publish was accepted at all");
}

/// 2. Sixteen `/echo` clients send 1 MiB messages as fast as they can (80 each at
///    most, for 6 s) while reading 4 KiB every 20 ms. The server must push back (stop
///    reading) or close them with 1008 (or 1013), or drop one too slow to take its
///    close frame within the write deadline; then each reads fast for up to 4 s to
///    see how its connection ended.
#[test]
fn slow_echo_readers_sending_mebibyte_messages() {
    const NAME: &str = "slow-echo-readers";
    const CLIENTS: usize = 16;
    const MESSAGES: usize = 80;
    let server = Attacked::start(NAME, &["--no-demo-feed"]);
    let normal = Normal::start(&server);
    let http = server.http();
    let frame = binary_frame(MIB);
    let clients: Vec<TcpStream> = (0..CLIENTS).map(|_| ws_connect(http, "/echo")).collect();
    let sending_until = Instant::now() + Duration::from_secs(6);
    let reading_until = sending_until + Duration::from_secs(4);
    let results: Vec<(usize, u64, Ending)> = thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter()
            .map(|client| {
                let frame = &frame;
                let writer = s.spawn(move || {
                    let mut sent = 0;
                    while sent < MESSAGES && write_until(client, frame, sending_until) == Sent::All
                    {
                        sent += 1;
                    }
                    sent
                });
                let reader = s.spawn(move || {
                    let mut reader = FrameReader::new(client, reading_until);
                    reader.slow_until = Some(sending_until);
                    let mut echoed = 0;
                    let ending = reader.until_end(|len| echoed += len);
                    (echoed, ending)
                });
                (writer, reader)
            })
            .collect();
        handles
            .into_iter()
            .map(|(w, r)| {
                let (echoed, ending) = r.join().unwrap();
                (w.join().unwrap(), echoed, ending)
            })
            .collect()
    });
    let endings: Vec<Ending> = results.iter().map(|r| r.2).collect();
    println!(
        "attack {NAME}: {} MiB sent, {} MiB of echoes read; {}",
        results.iter().map(|r| r.0).sum::<usize>(),
        results.iter().map(|r| r.1).sum::<u64>() >> 20,
        tally(&endings)
    );
    drop(clients);
    normal.check(NAME);
    server.finish();
    // A reader this slow may not take even the close frame, behind megabytes of echoes,
    // within the server's write deadline: then the server drops the connection without
    // it (docs/ARCHITECTURE.md, "What happens to a slow client").
    let endings: Vec<Ending> = endings
        .into_iter()
        .map(|e| match e {
            Ending::Eof | Ending::Broken(_) => Ending::Open,
            e => e,
        })
        .collect();
    assert_endings(NAME, "a slow echo client", &endings, &[1008, 1013]);
}

/// 3. Twenty-four raw members never read, six in each of four rooms, while a
///    publisher per room `POST`s 150 messages of 1 MiB into it. (One room's members
///    share each message, so a room holds at most `--send-queue` of them for its
///    stalled members; four rooms hold four times that.) Members may be closed with
///    1008 (slow consumers), publishes refused with 503.
#[test]
fn room_members_that_never_read_while_mebibyte_messages_are_published() {
    const NAME: &str = "unread-members";
    const MEMBERS: usize = 24;
    const ROOMS: usize = 4;
    const MESSAGES_PER_ROOM: usize = 150;
    let server = Attacked::start(NAME, &["--no-demo-feed"]);
    let normal = Normal::start(&server);
    let http = server.http();
    let members: Vec<TcpStream> = (0..MEMBERS)
        .map(|i| ws_connect(http, &format!("/ws/stalled-{}?raw=1", i % ROOMS)))
        .collect();
    wait_for_stats_members(http, MEMBERS as u64 + 1);
    let body = vec![b'm'; MIB];
    let deadline = Instant::now() + Duration::from_secs(12);
    let statuses: Vec<u16> = thread::scope(|s| {
        let publishers: Vec<_> = (0..ROOMS)
            .map(|room| {
                let body = &body;
                s.spawn(move || {
                    let room = format!("stalled-{room}");
                    (0..MESSAGES_PER_ROOM)
                        .take_while(|_| Instant::now() < deadline)
                        .map(|_| publish(http, &room, body))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        publishers
            .into_iter()
            .flat_map(|p| p.join().unwrap())
            .collect()
    });
    let drain_until = Instant::now() + Duration::from_secs(4);
    let endings: Vec<Ending> = thread::scope(|s| {
        let handles: Vec<_> = members
            .iter()
            .map(|m| s.spawn(move || drain(m, drain_until)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    println!(
        "attack {NAME}: {} publishes, {accepted} accepted, {} refused with 503; members: {}",
        statuses.len(),
        statuses.iter().filter(|s| **s == 503).count(),
        tally(&endings)
    );
    drop(members);
    normal.check(NAME);
    server.finish();
    let other: Vec<_> = statuses
        .iter()
        .filter(|s| !matches!(s, 202 | 503))
        .collect();
    assert!(other.is_empty(), "{NAME}: publishes answered {other:?}");
    assert!(accepted > 0, "{NAME}: no publish was accepted at all");
    assert_endings(NAME, "a member that does not read", &endings, &[1008]);
}

/// 4. A room's history filled with four messages of almost 1 MiB of control
///    characters (each becomes `\u0001`, six bytes, in JSON: about 24 MiB per replay),
///    then 40 long polls and 40 SSE streams ask for all of it (`since=0`) and never
///    read the answer. They hold for 3 s; then each answer's head must say 200 or 503.
#[test]
fn unread_replays_of_a_control_character_history() {
    const NAME: &str = "unread-replays";
    const POLLS: usize = 40;
    const STREAMS: usize = 40;
    let server = Attacked::start(NAME, &["--no-demo-feed"]);
    let normal = Normal::start(&server);
    let http = server.http();
    // Four fit in the default 4 MiB of history with their headers and bookkeeping.
    let heavy = vec![0x01u8; MIB - 2048];
    for _ in 0..4 {
        assert_eq!(
            publish(http, "heavy", &heavy),
            202,
            "{NAME}: filling history"
        );
    }
    let request = |target: &str| {
        let mut stream = TcpStream::connect(http).expect("connect");
        let head = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        stream
    };
    let mut readers: Vec<TcpStream> = Vec::new();
    for i in 0..POLLS.max(STREAMS) {
        if i < POLLS {
            readers.push(request("/poll/heavy?since=0"));
        }
        if i < STREAMS {
            readers.push(request("/events/heavy?since=0"));
        }
    }
    // The attack: everyone holds, unread, while the sampler watches.
    thread::sleep(Duration::from_secs(3));
    let statuses: Vec<u16> = thread::scope(|s| {
        let handles: Vec<_> = readers
            .iter_mut()
            .map(|r| {
                s.spawn(move || {
                    r.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
                    response_status(r)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    println!(
        "attack {NAME}: {} answered 200, {} refused with 503",
        statuses.iter().filter(|s| **s == 200).count(),
        statuses.iter().filter(|s| **s == 503).count()
    );
    drop(readers);
    normal.check(NAME);
    server.finish();
    let other: Vec<_> = statuses
        .iter()
        .filter(|s| !matches!(s, 200 | 503))
        .collect();
    assert!(other.is_empty(), "{NAME}: replays answered {other:?}");
}

/// 5. Four hundred WebSockets (half `/echo`, half raw members of a room) each send a
///    frame header announcing 1 MiB and then the payload but its last 100 bytes, and
///    hold: a server that buffers every partial frame holds 400 MiB. (More than the
///    256 connections one address may hold by default: `--max-connections-per-ip`
///    stands in for clients at many addresses.) Writes stop at a deadline if the server
///    stops reading. Each socket must then still be open (no answer) or closed with
///    1008, 1009 or 1013.
#[test]
fn partial_frames_announcing_a_mebibyte_held_open() {
    const NAME: &str = "partial-frames";
    const SOCKETS: usize = 400;
    raise_open_files_limit();
    let server = Attacked::start(
        NAME,
        &["--no-demo-feed", "--max-connections-per-ip", "1000"],
    );
    let normal = Normal::start(&server);
    let http = server.http();
    let frame = binary_frame(MIB);
    let partial = &frame[..frame.len() - 100];
    let sockets: Vec<TcpStream> = (0..SOCKETS)
        .map(|i| {
            let path = if i % 2 == 0 {
                "/echo"
            } else {
                "/ws/partial?raw=1"
            };
            ws_connect(http, path)
        })
        .collect();
    // Round-robin, non-blocking, so one socket the server does not read holds no other.
    for socket in &sockets {
        socket.set_nonblocking(true).unwrap();
    }
    let mut written = vec![0usize; SOCKETS];
    let mut broken = vec![false; SOCKETS];
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        let mut progress = false;
        let mut pending = false;
        for (i, mut socket) in sockets.iter().enumerate() {
            if broken[i] || written[i] == partial.len() {
                continue;
            }
            match socket.write(&partial[written[i]..]) {
                Ok(n) if n > 0 => {
                    written[i] += n;
                    progress = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => broken[i] = true,
            }
            pending |= !broken[i] && written[i] < partial.len();
        }
        if !pending {
            break;
        }
        if !progress {
            thread::sleep(Duration::from_millis(1));
        }
    }
    let complete = written.iter().filter(|w| **w == partial.len()).count();
    // The attack: every partial frame held while the sampler watches.
    thread::sleep(Duration::from_secs(2));
    let drain_until = Instant::now() + Duration::from_secs(4);
    let endings: Vec<Ending> = sockets
        .iter()
        .map(|socket| match socket.peek(&mut [0u8; 1]) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ending::Open,
            _ => {
                socket.set_nonblocking(false).unwrap();
                drain(socket, drain_until)
            }
        })
        .collect();
    println!(
        "attack {NAME}: {complete} of {SOCKETS} partial frames written whole, {} broken; {}",
        broken.iter().filter(|b| **b).count(),
        tally(&endings)
    );
    drop(sockets);
    normal.check(NAME);
    server.finish();
    assert_endings(
        NAME,
        "a socket holding a partial frame",
        &endings,
        &[1008, 1009, 1013],
    );
}

/// 6. Thirty-two raw WebSocket publishers in one room send 1 MiB messages as fast as
///    they can (24 each at most, within the 200-message burst of the rate limit, for
///    8 s) and never read, while three members read normally. Publishers may be
///    closed with 1008 (slow consumers) or 1013 (no budget for their messages);
///    members may be closed with 1008; messages must still reach the members.
#[test]
fn hub_queue_flood_by_32_websocket_publishers() {
    const NAME: &str = "hub-queue-flood";
    const PUBLISHERS: usize = 32;
    const READERS: usize = 3;
    const MESSAGES: usize = 24;
    let server = Attacked::start(NAME, &["--no-demo-feed"]);
    let normal = Normal::start(&server);
    let http = server.http();
    let frame = binary_frame(MIB);
    let readers: Vec<TcpStream> = (0..READERS)
        .map(|_| ws_connect(http, "/ws/flood"))
        .collect();
    let publishers: Vec<TcpStream> = (0..PUBLISHERS)
        .map(|_| ws_connect(http, "/ws/flood?raw=1"))
        .collect();
    wait_for_stats_members(http, (PUBLISHERS + READERS) as u64 + 1);
    let sending_until = Instant::now() + Duration::from_secs(8);
    let reading_until = sending_until + Duration::from_secs(3);
    let (sent, publisher_endings, reader_results) = thread::scope(|s| {
        let reader_handles: Vec<_> = readers
            .iter()
            .map(|r| {
                s.spawn(move || {
                    let mut bytes = 0;
                    let ending = FrameReader::new(r, reading_until).until_end(|len| bytes += len);
                    (bytes, ending)
                })
            })
            .collect();
        let publisher_handles: Vec<_> = publishers
            .iter()
            .map(|p| {
                let frame = &frame;
                s.spawn(move || {
                    let mut sent = 0;
                    while sent < MESSAGES && write_until(p, frame, sending_until) == Sent::All {
                        sent += 1;
                    }
                    (sent, drain(p, reading_until))
                })
            })
            .collect();
        let (sent, endings): (Vec<usize>, Vec<Ending>) = publisher_handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .unzip();
        let readers: Vec<(u64, Ending)> = reader_handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        (sent.into_iter().sum::<usize>(), endings, readers)
    });
    // Data frames' payloads, fragments included: a welcome and member counts are a few
    // hundred bytes, each room message 1 MiB.
    let received: u64 = reader_results.iter().map(|r| r.0).sum();
    let reader_endings: Vec<Ending> = reader_results.iter().map(|r| r.1).collect();
    println!(
        "attack {NAME}: {sent} MiB sent; publishers: {}; {} MiB reached the {READERS} \
         members; members: {}",
        tally(&publisher_endings),
        received >> 20,
        tally(&reader_endings)
    );
    drop((readers, publishers));
    normal.check(NAME);
    server.finish();
    assert_endings(NAME, "a publisher", &publisher_endings, &[1008, 1013]);
    assert_endings(NAME, "a reading member", &reader_endings, &[1008]);
    assert!(
        received >= MIB as u64,
        "{NAME}: not one message reached the reading members"
    );
}

/// 7. A hundred `/echo` clients each send one message of 1 MiB, read its echo, and
///    then stay connected and idle. Nothing is queued, read or kept for them any more,
///    so the server must be back near its idle size: a connection must not keep a
///    buffer the size of the largest message it once received.
#[test]
fn idle_clients_that_each_once_sent_a_mebibyte() {
    const NAME: &str = "idle-after-large";
    const CLIENTS: usize = 100;
    let server = Attacked::start(NAME, &["--no-demo-feed"]);
    let http = server.http();
    let payload = vec![0x42u8; MIB - 64];
    let mut clients: Vec<_> = (0..CLIENTS).map(|_| connect_addr(http, "/echo")).collect();
    thread::scope(|s| {
        for client in &mut clients {
            let payload = &payload;
            s.spawn(move || {
                client
                    .send(tungstenite::Message::binary(payload.clone()))
                    .unwrap();
                let echo = next_data(client);
                assert_eq!(echo.len(), payload.len());
            });
        }
    });
    // Every echo has been read: what the server holds now is what idle connections
    // cost it (the allocator may take a moment to give freed memory back).
    let idle_bound = threadcast::internals::fixed_overhead(CLIENTS) as u64;
    let pid = server.server.child.id();
    let settled = Instant::now() + Duration::from_secs(5);
    let mut rss = rss_bytes(pid).unwrap_or(0);
    while rss > idle_bound && Instant::now() < settled {
        thread::sleep(SAMPLE_EVERY);
        rss = rss_bytes(pid).unwrap_or(0);
    }
    println!(
        "attack {NAME}: RSS with {CLIENTS} idle clients afterwards {} MiB",
        rss >> 20
    );
    if server.limited {
        assert!(
            rss <= idle_bound,
            "{CLIENTS} idle connections hold {} KiB, over the fixed overhead {} KiB",
            rss >> 10,
            idle_bound >> 10
        );
    }
    drop(clients);
    server.finish();
}
