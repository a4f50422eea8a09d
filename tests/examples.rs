//! Every program in `examples/` runs and does what its header says, so the teaching
//! kit never rots. Each test starts the example as a child process on an ephemeral
//! loopback port, reads the address from the line it prints, talks to it over real
//! sockets, and kills it.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread;
use std::time::Instant;

use common::*;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Bytes, Message};

// ---------------------------------------------------------------------------------
// echo.rs
// ---------------------------------------------------------------------------------

#[test]
fn echo_simple_returns_text_and_binary_and_closes_cleanly() {
    let (_child, addr) = start_server("echo", &["simple", "127.0.0.1:0"]);
    let mut ws = connect_addr(addr, "/");
    ws.send(Message::text("hello, wörld")).unwrap();
    assert_eq!(next_data(&mut ws), Message::text("hello, wörld"));
    ws.send(Message::binary(vec![0u8, 1, 255])).unwrap();
    assert_eq!(next_data(&mut ws), Message::binary(vec![0u8, 1, 255]));
    assert_eq!(close_handshake(&mut ws), Some(1000));
}

#[test]
fn echo_split_answers_a_ping_through_its_writer_and_keeps_echoing() {
    let (_child, addr) = start_server("echo", &["split", "127.0.0.1:0"]);
    let mut ws = connect_addr(addr, "/");
    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .unwrap();
    // The reader saw the ping and queued the pong; the writer sent it.
    match ws.read().expect("read") {
        Message::Pong(payload) => assert_eq!(&payload[..], b"are you there"),
        other => panic!("expected the pong first, got {other:?}"),
    }
    let big = "x".repeat(100_000); // over 65535 bytes: the 8-byte length encoding
    ws.send(Message::text(big.clone())).unwrap();
    assert_eq!(next_data(&mut ws), Message::text(big));
    assert_eq!(close_handshake(&mut ws), Some(1000));
}

#[test]
fn echo_split_serves_clients_concurrently() {
    let (_child, addr) = start_server("echo", &["split", "127.0.0.1:0"]);
    let mut a = connect_addr(addr, "/");
    let mut b = connect_addr(addr, "/");
    a.send(Message::text("from a")).unwrap();
    b.send(Message::text("from b")).unwrap();
    assert_eq!(next_data(&mut b), Message::text("from b"));
    assert_eq!(next_data(&mut a), Message::text("from a"));
}

#[test]
fn echo_rejects_an_unknown_mode() {
    let status = Command::new(example("echo"))
        .arg("sideways")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run echo");
    assert!(!status.success());
}

// ---------------------------------------------------------------------------------
// chat.rs
// ---------------------------------------------------------------------------------

#[test]
fn chat_announces_joins_and_broadcasts_to_every_member() {
    let (_child, addr) = start_server("chat", &["127.0.0.1:0"]);
    let mut alice = connect_addr(addr, "/");
    let alice_note = text(&mut alice);
    assert!(alice_note.ends_with("joined (1 online)"), "{alice_note}");
    let alice_name = guest_name(&alice_note);

    // The hub applies commands in order: once alice hears bob's join, bob is a member.
    let mut bob = connect_addr(addr, "/");
    let bob_note = text(&mut bob);
    assert!(bob_note.ends_with("joined (2 online)"), "{bob_note}");
    assert_eq!(text(&mut alice), bob_note);

    alice.send(Message::text("hi bob")).unwrap();
    let line = format!("{alice_name}: hi bob");
    assert_eq!(text(&mut alice), line, "the sender hears itself too");
    assert_eq!(text(&mut bob), line);

    // bob leaves with a proper close handshake; alice is told.
    assert_eq!(close_handshake(&mut bob), Some(1000));
    let left = text(&mut alice);
    assert!(left.ends_with("left (1 online)"), "{left}");
}

// ---------------------------------------------------------------------------------
// push.rs
// ---------------------------------------------------------------------------------

#[test]
fn push_serves_the_page_streams_numbered_items_and_says_going_away_on_sigterm() {
    let mut push = Running::spawn("push", &["127.0.0.1:0"], &[("PUSH_INTERVAL_MS", "20")]);
    let line = push.wait_for_line("listening on");
    let http = addr_after(&line, "http=");
    let ws_addr = addr_after(&line, "ws=");

    let page = get(http, "/");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<html"), "the page is served");

    // `?raw=1`: payloads exactly as published, without the envelope the page reads.
    let mut ws = connect_addr(ws_addr, "/ws/stream?raw=1");
    let first = next_item(&mut ws);
    let second = next_item(&mut ws);
    assert!(
        second > first,
        "items arrive in order: #{first} then #{second}"
    );

    // SIGTERM: the example shuts the server down, which closes every client with 1001.
    let pid = push.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status();
    assert!(killed.expect("run kill").success());
    loop {
        match ws.read().expect("a close frame, not a dropped connection") {
            Message::Close(frame) => {
                assert_eq!(frame.map(|f| f.code), Some(CloseCode::Away));
                break;
            }
            _ => continue, // items still in flight
        }
    }
    // Our next read sends the close reply; then the server closes TCP. A completed
    // handshake lets the server's shutdown finish at once instead of timing out.
    assert!(matches!(
        ws.read(),
        Err(tungstenite::Error::ConnectionClosed)
    ));
    let (status, output) = push.finish();
    assert!(
        status.success(),
        "exits 0 after a graceful shutdown: {output}"
    );
    assert!(output.contains("shutting down"), "{output}");
}

// ---------------------------------------------------------------------------------
// client.rs
// ---------------------------------------------------------------------------------

#[test]
fn client_talks_to_threadcast_and_completes_the_close_handshake() {
    let server = start();
    let url = format!("ws://{}/echo", server.ws_addr());
    let (status, output) = Running::spawn("client", &[&url, "hello", "wörld"], &[]).finish();
    assert!(status.success(), "client failed:\n{output}");
    assert!(output.contains("received: hello"), "{output}");
    assert!(output.contains("received: wörld"), "{output}");
    assert!(
        output.contains("server's close frame: 1000 bye"),
        "threadcast answers a close with the same code: {output}"
    );
    assert!(output.contains("closed cleanly"), "{output}");
}

// ---------------------------------------------------------------------------------
// backend.rs
// ---------------------------------------------------------------------------------

#[test]
fn backend_mints_a_token_the_server_accepts_and_pushes_to_that_user_alone() {
    use common::tokens::{ADMIN, SECRET};
    let server = start_with(|c| {
        c.jwt_secret = Some(SECRET.into());
        c.admin_token = Some(ADMIN.into());
    });
    let env = [
        ("THREADCAST_JWT_SECRET", SECRET),
        ("THREADCAST_ADMIN_TOKEN", ADMIN),
    ];
    let (status, token) =
        Running::spawn("backend", &["token", "alice", "Alice \"A\""], &env).finish();
    assert!(status.success(), "{token}");
    let token = token.trim();
    let mut alice = connect(&server, &format!("/ws/@alice?raw=1&token={token}"));
    // The lobby is in the token's rooms; another shared room is not.
    let _lobby = connect(&server, &format!("/ws/lobby?token={token}"));
    let elsewhere = upgrade_request(&format!("/ws/other?token={token}"), "");
    assert_eq!(raw_request(server.http_addr(), elsewhere).1, 403);
    wait_for_members(&server, "@alice", 1);

    let url = format!("http://{}", server.http_addr());
    let env = [
        ("THREADCAST_ADMIN_TOKEN", ADMIN),
        ("THREADCAST_URL", url.as_str()),
    ];
    let (status, output) =
        Running::spawn("backend", &["push", "alice", "your order shipped"], &env).finish();
    assert!(status.success(), "{output}");
    assert!(output.starts_with("HTTP/1.1 202"), "{output}");
    assert!(output.contains(r#""delivered":1"#), "{output}");
    assert_eq!(next_data(&mut alice), Message::text("your order shipped"));
}

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// A running example and its stdout, line by line. Killed when the test ends,
/// however it ends; its stderr (logs) is shown only when the test fails.
struct Running {
    child: Child,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Running {
    /// Starts example `name`.
    fn spawn(name: &str, args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut child = Command::new(example(name))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start example {name}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (pipe, log) = (
            child.stderr.take().expect("piped stderr"),
            Arc::clone(&stderr),
        );
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
                log.push_str(&line);
                log.push('\n');
            }
        });
        Running {
            child,
            lines,
            stderr,
        }
    }

    /// The first line containing `needle`, waiting at most TEST_TIMEOUT.
    fn wait_for_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + TEST_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(e) => panic!("no line containing {needle:?} from the example: {e}"),
            }
        }
    }

    /// Waits (at most TEST_TIMEOUT) for the example to exit by itself; returns its
    /// status and the rest of its output. The output ends when the process closes its
    /// stdout, which it does as it exits.
    fn finish(&mut self) -> (ExitStatus, String) {
        let deadline = Instant::now() + TEST_TIMEOUT;
        let mut output = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => output.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "the example did not exit; it printed:\n{}",
                        output.join("\n")
                    )
                }
            }
        }
        let status = self.child.wait().expect("wait for the example");
        (status, output.join("\n"))
    }

    /// The example's address from its `listening on ADDR` line.
    fn listening_addr(&self) -> SocketAddr {
        let line = self.wait_for_line("listening on ");
        let after = &line[line.find("listening on ").unwrap_or(0) + "listening on ".len()..];
        after
            .split_whitespace()
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let log = self.stderr.lock().unwrap_or_else(PoisonError::into_inner);
            eprintln!("--- the example's stderr ---\n{log}");
        }
    }
}

/// Starts example `name` and returns it with the address it listens on.
fn start_server(name: &str, args: &[&str]) -> (Running, SocketAddr) {
    let running = Running::spawn(name, args, &[]);
    let addr = running.listening_addr();
    (running, addr)
}

fn addr_after(line: &str, key: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no {key}ADDR in {line:?}"))
}

/// The next text message.
fn text(ws: &mut tungstenite::WebSocket<TcpStream>) -> String {
    match next_data(ws) {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// `* guest-3 joined (1 online)` → `guest-3`.
fn guest_name(note: &str) -> String {
    note.split_whitespace().nth(1).expect("a name").to_string()
}

/// The number of the next stream item (`#12 @ferris: ...` → 12).
fn next_item(ws: &mut tungstenite::WebSocket<TcpStream>) -> u64 {
    let item = text(ws);
    item.strip_prefix('#')
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a numbered item: {item:?}"))
}

/// The compiled example `name`. The examples are built once per test run with the
/// same cargo, profile and target directory as this test (`cargo test --test examples`
/// alone does not build them; a full `cargo test` already has, and this is a no-op).
fn example(name: &str) -> PathBuf {
    static EXAMPLES_DIR: OnceLock<PathBuf> = OnceLock::new();
    EXAMPLES_DIR.get_or_init(build_examples).join(name)
}

fn build_examples() -> PathBuf {
    // This test runs from <target>/<profile>/deps/examples-<hash>.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let target_dir = profile_dir.parent().expect("target dir");
    let mut cargo = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    cargo
        .args(["build", "--quiet", "--examples", "--manifest-path"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cargo.arg("--release");
        }
        Some(other) => {
            cargo.args(["--profile", other]);
        }
    }
    let status = cargo.status().expect("run cargo build --examples");
    assert!(status.success(), "cargo build --examples failed");
    profile_dir.join("examples")
}
