//! Shared test helpers: start a real server on ephemeral loopback ports, and talk to it
//! over real sockets — with tungstenite's client, or byte by byte with hand-built
//! frames when a test needs to say exactly what goes on the wire.
#![allow(dead_code)]

pub mod frames;
pub mod redis;
pub mod tokens;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

use threadcast::{Config, Server, ServerHandle};
use tungstenite::WebSocket;
use tungstenite::protocol::frame::coding::CloseCode;

/// Generous bound for anything a test waits on, so a bug fails the test instead of
/// hanging it.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The repository's `public/` folder.
pub fn public_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("public")
}

/// A config on ephemeral loopback ports serving the repository's page.
pub fn test_config() -> Config {
    Config {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        public_dir: public_dir(),
        ..Config::default()
    }
}

/// Starts a server with the test config, changed by `change`.
pub fn start_with(change: impl FnOnce(&mut Config)) -> ServerHandle {
    let mut config = test_config();
    change(&mut config);
    Server::start(config).expect("start server")
}

/// Starts a server with the test config.
pub fn start() -> ServerHandle {
    start_with(|_| {})
}

/// A tungstenite client connected to `path` on the server's WebSocket port.
pub fn connect(server: &ServerHandle, path: &str) -> WebSocket<TcpStream> {
    connect_addr(server.ws_addr(), path)
}

/// A tungstenite client connected to `path` at `addr`.
pub fn connect_addr(addr: SocketAddr, path: &str) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    let url = format!("ws://{addr}{path}");
    let (ws, response) = tungstenite::client(url.as_str(), stream).expect("handshake");
    assert_eq!(response.status(), 101);
    ws
}

/// Waits (bounded) until the hub has `n` members in `room`: a client's join reaches
/// the hub just after its handshake, so it may trail the client's `connect`.
pub fn wait_for_members(server: &ServerHandle, room: &str, n: usize) {
    let deadline = std::time::Instant::now() + TEST_TIMEOUT;
    while server.members(room) != n {
        assert!(
            std::time::Instant::now() < deadline,
            "room {room} never reached {n} members"
        );
        std::thread::yield_now();
    }
}

/// Reads the next data message (skipping pings, which tungstenite answers itself).
pub fn next_data(ws: &mut WebSocket<TcpStream>) -> tungstenite::Message {
    loop {
        match ws.read().expect("read") {
            m @ (tungstenite::Message::Text(_) | tungstenite::Message::Binary(_)) => return m,
            tungstenite::Message::Ping(_) | tungstenite::Message::Pong(_) => continue,
            other => panic!("expected data, got {other:?}"),
        }
    }
}

/// Sends close 1000, reads until the server's close frame, and returns its code once
/// the server has also closed the TCP connection (tungstenite: ConnectionClosed).
pub fn close_handshake(ws: &mut tungstenite::WebSocket<TcpStream>) -> Option<u16> {
    use tungstenite::protocol::CloseFrame;
    use tungstenite::protocol::frame::coding::CloseCode as Code;
    ws.close(Some(CloseFrame {
        code: Code::Normal,
        reason: "done".into(),
    }))
    .expect("send close");
    let mut code = None;
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(frame)) => code = frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => return code,
            Err(e) => panic!("the close handshake did not complete: {e}"),
        }
    }
}

/// Reads until the server's close frame arrives and returns its code and reason.
pub fn expect_close(ws: &mut WebSocket<TcpStream>) -> (CloseCode, String) {
    loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(Some(frame))) => {
                return (frame.code, frame.reason.to_string());
            }
            Ok(tungstenite::Message::Close(None)) => panic!("close frame without a code"),
            Ok(_) => continue,
            Err(e) => panic!("connection ended without a close frame: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------
// Raw sockets: hand-built handshakes and frames.
// ---------------------------------------------------------------------------------

/// Frame opcodes (RFC 6455 §5.2).
pub mod op {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// A key for the handshake (the RFC's example).
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Sends `request` and reads the response head. Returns the status and the whole head.
pub fn raw_request(addr: SocketAddr, request: impl AsRef<[u8]>) -> (TcpStream, u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    stream.write_all(request.as_ref()).unwrap();
    let head = read_head(&mut stream);
    let status = status_of(&head);
    (stream, status, head)
}

/// The status code in a response head (`HTTP/1.1 200 OK` → 200), or 0 when there is
/// none (the server hung up without answering).
pub fn status_of(head: &str) -> u16 {
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Reads up to and including the blank line that ends an HTTP response head.
pub fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// An upgrade request for `path` with extra header lines (each ending in `\r\n`).
pub fn upgrade_request(path: &str, extra_headers: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
    )
}

/// A raw socket that completed the handshake for `path`.
pub fn raw_connect(addr: SocketAddr, path: &str) -> TcpStream {
    let (stream, status, head) = raw_request(addr, upgrade_request(path, ""));
    assert_eq!(status, 101, "{head}");
    stream
}

/// Encodes one client frame: FIN flag, opcode, masked payload (with a fixed mask).
pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(fin, 0, opcode, payload, true)
}

/// Encodes one frame with full control: reserved bits (`rsv` in bits 4..6 of the first
/// byte, e.g. 0x40 for RSV1) and whether to mask.
pub fn frame_with(fin: bool, rsv: u8, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | rsv | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// A close frame payload: code then reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// One frame read from the server: (fin, opcode, payload).
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == op::CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Reads one server frame; `None` at EOF. Panics if the server masked it (it must not).
pub fn read_frame(stream: &mut TcpStream) -> Option<Frame> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).ok()?;
    assert_eq!(head[1] & 0x80, 0, "server frames must not be masked");
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            stream.read_exact(&mut b).ok()?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            stream.read_exact(&mut b).ok()?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).ok()?;
    Some(Frame {
        fin: head[0] & 0x80 != 0,
        opcode: head[0] & 0x0f,
        payload,
    })
}

/// Reads frames, skipping pings, until a non-ping frame (or EOF). A message the
/// server sent in fragments (it splits long ones) comes back whole: its first frame's
/// opcode, every continuation's payload, `fin` set (or the close frame that cut it
/// short).
pub fn read_non_ping(stream: &mut TcpStream) -> Option<Frame> {
    let mut first = loop {
        let f = read_frame(stream)?;
        if f.opcode != op::PING {
            break f;
        }
    };
    while !first.fin && first.opcode != op::CLOSE {
        let next = read_frame(stream)?;
        match next.opcode {
            op::PING => {}
            op::CONTINUATION => {
                first.payload.extend_from_slice(&next.payload);
                first.fin = next.fin;
            }
            // A close may cut a message short (a slow consumer closed mid-message).
            op::CLOSE => return Some(next),
            other => panic!("opcode {other} inside a fragmented message"),
        }
    }
    Some(first)
}

/// Reads frames until the close frame and returns its code; asserts that the server
/// then closes the TCP connection and sends nothing after its close frame.
pub fn expect_raw_close(stream: &mut TcpStream) -> u16 {
    let close = read_non_ping(stream).expect("a close frame before EOF");
    assert_eq!(
        close.opcode,
        op::CLOSE,
        "expected a close frame, got {close:?}"
    );
    let code = close.close_code().expect("close frame with a code");
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "server sent {} bytes after its close frame",
        rest.len()
    );
    code
}

// ---------------------------------------------------------------------------------
// Plain HTTP.
// ---------------------------------------------------------------------------------

/// An HTTP response: status, head (status line and headers) and body.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The value of a header, case-insensitively.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|line| {
            let (k, v) = line.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// Sends one HTTP/1.1 request with `Connection: close` and reads the whole response.
pub fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

/// Splits a complete HTTP/1.1 response (as read until the connection closed) into
/// status, head and body, undoing chunked encoding.
pub fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = status_of(&head);
    let mut body = raw[split..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    HttpResponse { status, head, body }
}

/// Sends a GET for `path` and returns the stream, for a response that does not end
/// (an SSE stream): read it with [`read_until`].
pub fn open_stream(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream
}

/// Reads from `stream` until `needle` has arrived; everything read.
pub fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(needle) {
        let n = stream.read(&mut buf).expect("more of the stream");
        assert!(n > 0, "stream ended before {needle:?}");
        seen.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&seen).into_owned()
}

/// GET shorthand.
pub fn get(addr: SocketAddr, target: &str) -> HttpResponse {
    http(addr, "GET", target, &[], b"")
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            std::str::from_utf8(&data[..line_end]).unwrap_or("0").trim(),
            16,
        )
        .unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.extend_from_slice(&data[start..start + size]);
        data = &data[start + size + 2..];
    }
    out
}

/// The threadcast binary with ephemeral loopback ports (`--http 127.0.0.1:0 --ws
/// 127.0.0.1:0`) and stderr piped; add flags, environment and stdin as needed.
pub fn binary_command() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_threadcast"));
    command
        .args(["--http", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    command
}

/// A running threadcast binary and the addresses it bound.
pub struct Binary {
    pub child: std::process::Child,
    pub http: SocketAddr,
    pub ws: SocketAddr,
    /// The rest of its stderr, line by line (drain it, or the server may block on a
    /// full pipe: see [`Binary::drain_logs`]).
    pub logs: Box<dyn Iterator<Item = String> + Send>,
}

impl Binary {
    /// Starts `command` and reads the real addresses from its `listening http=ADDR
    /// ws=ADDR` line.
    pub fn start(mut command: std::process::Command) -> Binary {
        use std::io::BufRead;
        let mut child = command.spawn().expect("spawn threadcast");
        let stderr = child.stderr.take().expect("stderr piped");
        let mut logs = std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok);
        let line = logs
            .by_ref()
            .find(|l| l.contains("listening http="))
            .expect("a listening line");
        let field = |name: &str| -> SocketAddr {
            let start = line.find(name).unwrap() + name.len();
            line[start..]
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        let (http, ws) = (field("http="), field("ws="));
        Binary {
            child,
            http,
            ws,
            logs: Box::new(logs),
        }
    }

    /// Keeps reading its stderr in the background from now on.
    pub fn drain_logs(&mut self) {
        let logs = std::mem::replace(&mut self.logs, Box::new(std::iter::empty()));
        std::thread::spawn(move || logs.for_each(drop));
    }

    /// Sends a signal (`TERM`, `INT`) with kill(1).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// Threads of this process right now (Linux).
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------
// Isolation and resource counting (conformance, hostile input, faults).
// ---------------------------------------------------------------------------------

/// Environment variable set in the child process of [`run_alone`].
pub const ALONE_ENV: &str = "THREADCAST_TEST_ALONE";

/// Runs the `#[ignore]`d test `name` (its full path, e.g. `faults::churn::inner`) of
/// this test binary alone in a child process and asserts that it passed. Tests that
/// count the threads or descriptors of the whole process need this: the other tests of
/// the same binary run in parallel threads of one process. The inner test must start
/// with `if !alone() { return; }`, so a plain `cargo test -- --ignored` skips it.
pub fn run_alone(name: &str) {
    let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            name,
            "--ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(ALONE_ENV, "1")
        .output()
        .expect("run the test binary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{name} failed when run alone:\n{stdout}\n{stderr}"
    );
}

/// Whether this process is the child of [`run_alone`].
pub fn alone() -> bool {
    std::env::var_os(ALONE_ENV).is_some()
}

/// File descriptors open in this process right now (Linux).
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident memory of this process in KiB (Linux).
pub fn rss_kib() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Polls `condition` until it holds, failing the test with `what` after [`TEST_TIMEOUT`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + TEST_TIMEOUT;
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A fresh, empty folder under the system's temporary directory.
pub fn temp_dir(tag: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "threadcast-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
