//! The `threadcast` binary: flags, the start-up line scripts rely on, and graceful
//! shutdown on SIGTERM and SIGINT.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use common::*;
use tungstenite::protocol::frame::coding::CloseCode;

const BIN: &str = env!("CARGO_BIN_EXE_threadcast");

/// Starts the binary on ephemeral ports and reads the real addresses from its
/// `listening http=ADDR ws=ADDR` line.
fn spawn_server(extra: &[&str]) -> (Child, SocketAddr, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["--http", "127.0.0.1:0", "--ws", "127.0.0.1:0", "--public"])
        .arg(public_dir())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn threadcast");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("listening http="))
        .expect("a listening line");
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let field = |name: &str| -> SocketAddr {
        let start = line.find(name).unwrap() + name.len();
        line[start..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (child, field("http="), field("ws="))
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn help_lists_every_flag_with_its_default() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "--http ADDR",
        "[default: 127.0.0.1:8080]",
        "--ws ADDR",
        "[default: 127.0.0.1:8081]",
        "--max-connections",
        "[default: 1024]",
        "--ping-interval",
        "[default: 20s]",
        "--pong-timeout",
        "[default: 30s]",
        "--token",
        "THREADCAST_TOKEN",
    ] {
        assert!(text.contains(expected), "--help lacks {expected}");
    }
}

#[test]
fn invalid_flags_and_values_exit_2_with_a_clear_message() {
    for args in [
        &["--bogus"][..],
        &["--ws", "nowhere"],
        &["--max-connections", "-3"],
        &["--ping-interval"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with("threadcast: ") && err.contains("--help"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn sigterm_sends_1001_to_every_client_and_exits_0() {
    let (mut child, http_addr, ws_addr) = spawn_server(&[]);
    assert_eq!(get(http_addr, "/healthz").status, 200);
    let mut clients: Vec<_> = ["/echo", "/ws/lobby", "/ws/lobby"]
        .iter()
        .map(|p| connect_addr(ws_addr, p))
        .collect();
    signal(&child, "TERM");
    for client in &mut clients {
        assert_eq!(expect_close(client).0, CloseCode::Away);
    }
    drop(clients);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn sigint_also_shuts_down_cleanly() {
    let (mut child, _, ws_addr) = spawn_server(&[]);
    let mut client = connect_addr(ws_addr, "/echo");
    signal(&child, "INT");
    assert_eq!(expect_close(&mut client).0, CloseCode::Away);
    drop(client);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn the_token_can_come_from_the_environment() {
    let mut child = Command::new(BIN)
        .args(["--http", "127.0.0.1:0", "--ws", "127.0.0.1:0"])
        .env("THREADCAST_TOKEN", "from-env")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("listening"))
        .unwrap();
    std::thread::spawn(move || lines.for_each(drop));
    let ws: SocketAddr = line.split("ws=").nth(1).unwrap().trim().parse().unwrap();
    assert_eq!(raw_request(ws, upgrade_request("/echo", "")).1, 401);
    assert_eq!(
        raw_request(ws, upgrade_request("/echo?token=from-env", "")).1,
        101
    );
    assert!(!line.contains("from-env"), "the token must never be logged");
    signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// Starts the binary with `extra` flags at debug level, opens one WebSocket that claims
/// to come through a proxy for 203.0.113.7, and returns the log line of that connection.
fn logged_client_address(extra: &[&str]) -> String {
    let mut child = Command::new(BIN)
        .args([
            "--http",
            "127.0.0.1:0",
            "--ws",
            "127.0.0.1:0",
            "--log-level",
            "debug",
            "--no-demo-feed",
        ])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let listening = lines
        .by_ref()
        .find(|l| l.contains("listening http="))
        .unwrap();
    let ws: SocketAddr = listening
        .split("ws=")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let (stream, status, _) = raw_request(
        ws,
        upgrade_request("/echo", "X-Forwarded-For: 203.0.113.7, 10.0.0.1\r\n"),
    );
    assert_eq!(status, 101);
    let line = lines.find(|l| l.contains("connection 1 from")).unwrap();
    drop(stream);
    signal(&child, "TERM");
    std::thread::spawn(move || lines.for_each(drop));
    assert_eq!(child.wait().unwrap().code(), Some(0));
    line
}

#[test]
fn the_forwarded_client_address_is_logged_only_with_trust_proxy() {
    let trusted = logged_client_address(&["--trust-proxy"]);
    assert!(
        trusted.contains("from 203.0.113.7 (via 127.0.0.1:"),
        "{trusted}"
    );
    let untrusted = logged_client_address(&[]);
    assert!(!untrusted.contains("203.0.113.7"), "{untrusted}");
}
