//! The `threadcast` binary: flags, the start-up line scripts rely on, graceful
//! shutdown on SIGTERM and SIGINT, and SIGHUP (a reload, never a stop).

mod common;

use std::process::Command;

use common::*;
use tungstenite::protocol::frame::coding::CloseCode;

const BIN: &str = env!("CARGO_BIN_EXE_threadcast");

/// Starts the binary on ephemeral ports, serving the repository's page.
fn spawn_server() -> Binary {
    let mut command = binary_command();
    command.arg("--public").arg(public_dir());
    let mut server = Binary::start(command);
    server.drain_logs();
    server
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
        "an extra listener for WebSockets only [default: none]",
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
    let mut server = spawn_server();
    assert_eq!(get(server.http, "/healthz").status, 200);
    let mut clients: Vec<_> = ["/echo", "/ws/lobby", "/ws/lobby"]
        .iter()
        .map(|p| connect_addr(server.ws, p))
        .collect();
    server.signal("TERM");
    for client in &mut clients {
        assert_eq!(expect_close(client).0, CloseCode::Away);
    }
    drop(clients);
    assert_eq!(server.child.wait().unwrap().code(), Some(0));
}

#[test]
fn sighup_without_tls_is_logged_and_the_server_keeps_serving() {
    let mut server = Binary::start(binary_command());
    server.signal("HUP");
    assert!(
        server.logs.by_ref().any(|l| l.contains("received SIGHUP")),
        "SIGHUP should be acknowledged in the log"
    );
    server.drain_logs();
    assert_eq!(get(server.http, "/healthz").status, 200);
    server.signal("TERM");
    assert_eq!(server.child.wait().unwrap().code(), Some(0));
}

#[test]
fn sigint_also_shuts_down_cleanly() {
    let mut server = spawn_server();
    let mut client = connect_addr(server.ws, "/echo");
    server.signal("INT");
    assert_eq!(expect_close(&mut client).0, CloseCode::Away);
    drop(client);
    assert_eq!(server.child.wait().unwrap().code(), Some(0));
}

#[test]
fn the_token_can_come_from_the_environment() {
    let mut command = binary_command();
    command.env("THREADCAST_TOKEN", "from-env");
    let mut server = Binary::start(command);
    assert_eq!(raw_request(server.ws, upgrade_request("/echo", "")).1, 401);
    assert_eq!(
        raw_request(server.ws, upgrade_request("/echo?token=from-env", "")).1,
        101
    );
    server.signal("TERM");
    // Everything it logged, to the end: the token must appear nowhere.
    let logs: Vec<String> = server.logs.by_ref().collect();
    assert!(
        logs.iter()
            .any(|l| l.contains("\"GET /echo\" 401 missing or wrong token")),
        "{logs:?}"
    );
    assert!(logs.iter().all(|l| !l.contains("from-env")), "{logs:?}");
    assert_eq!(server.child.wait().unwrap().code(), Some(0));
}

/// Starts the binary with `extra` flags at debug level, opens one WebSocket that claims
/// to come through a proxy for 203.0.113.7, and returns the log line of that connection.
fn logged_client_address(extra: &[&str]) -> String {
    let mut command = binary_command();
    command
        .args(["--log-level", "debug", "--no-demo-feed"])
        .args(extra);
    let mut server = Binary::start(command);
    let (stream, status, _) = raw_request(
        server.ws,
        upgrade_request("/echo", "X-Forwarded-For: 203.0.113.7, 10.0.0.1\r\n"),
    );
    assert_eq!(status, 101);
    let line = server
        .logs
        .find(|l| l.contains("WebSocket 1 open"))
        .unwrap();
    assert!(!line.contains("from-env"));
    drop(stream);
    server.drain_logs();
    server.signal("TERM");
    assert_eq!(server.child.wait().unwrap().code(), Some(0));
    line
}

#[test]
fn the_forwarded_client_address_is_logged_only_with_trust_proxy() {
    let trusted = logged_client_address(&["--trust-proxy"]);
    assert!(trusted.contains("203.0.113.7 (via 127.0.0.1:"), "{trusted}");
    let untrusted = logged_client_address(&[]);
    assert!(!untrusted.contains("203.0.113.7"), "{untrusted}");
}
