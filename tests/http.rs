//! The HTTP listener: static files (and their safety), `/config.json`, `/healthz`,
//! `/stats`, and `POST /publish/<room>`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;

use common::*;
use tungstenite::Message;

#[test]
fn the_page_and_its_assets_are_served_with_the_right_content_type() {
    let server = start();
    let addr = server.http_addr();
    let index = get(addr, "/");
    assert_eq!(index.status, 200);
    assert_eq!(
        index.header("Content-Type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert!(index.text().contains("src=\"app.js\""));
    assert_eq!(
        index.header("X-Content-Type-Options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(get(addr, "/index.html").body, index.body);
    assert_eq!(
        get(addr, "/app.js").header("Content-Type").as_deref(),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        get(addr, "/style.css").header("Content-Type").as_deref(),
        Some("text/css; charset=utf-8")
    );
    assert_eq!(
        get(addr, "/favicon.svg").header("Content-Type").as_deref(),
        Some("image/svg+xml")
    );
    assert_eq!(
        get(addr, "/app.js?v=2").status,
        200,
        "query strings are ignored"
    );
    assert_eq!(get(addr, "/missing.js").status, 404);
}

#[test]
fn every_content_type_we_promise_is_sent() {
    let dir = temp_dir("public");
    for (name, expected) in [
        ("a.json", "application/json"),
        ("a.png", "image/png"),
        ("a.ico", "image/x-icon"),
        ("a.wasm", "application/wasm"),
        ("a.txt", "text/plain; charset=utf-8"),
    ] {
        std::fs::write(dir.join(name), b"x").unwrap();
        let server = start_with(|c| c.public_dir = dir.clone());
        assert_eq!(
            get(server.http_addr(), &format!("/{name}"))
                .header("Content-Type")
                .as_deref(),
            Some(expected),
            "{name}"
        );
    }
}

#[test]
fn head_sends_headers_without_a_body() {
    let server = start();
    let response = http(server.http_addr(), "HEAD", "/", &[], b"");
    assert_eq!(response.status, 200);
    assert!(response.body.is_empty());
    let full = get(server.http_addr(), "/");
    assert_eq!(
        response.header("Content-Length"),
        Some(full.body.len().to_string())
    );
}

#[test]
fn nothing_outside_the_public_folder_is_ever_served() {
    let dir = temp_dir("public");
    std::fs::write(dir.join("inside.txt"), b"inside").unwrap();
    let secret = dir.parent().unwrap().join(format!(
        "{}-secret.txt",
        dir.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&secret, b"top secret").unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("link.txt")).unwrap();
    std::os::unix::fs::symlink("/etc", dir.join("etc")).unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    let server = start_with(|c| c.public_dir = dir.clone());
    let addr = server.http_addr();

    assert_eq!(get(addr, "/inside.txt").text(), "inside");
    let secret_name = secret.file_name().unwrap().to_string_lossy().to_string();
    for target in [
        format!("/../{secret_name}"),
        format!("/sub/../../{secret_name}"),
        format!("/%2e%2e/{secret_name}"),
        format!("/%2E%2E%2F{secret_name}"),
        format!("/%252e%252e/{secret_name}"),
        format!("/..%5c{secret_name}"),
        "/link.txt".to_string(),
        "/etc/passwd".to_string(),
        "/etc/hostname".to_string(),
        "//etc/passwd".to_string(),
        "/inside.txt%00.html".to_string(),
        format!("/{}", "a/".repeat(600)),
    ] {
        let response = get(addr, &target);
        assert!(
            matches!(response.status, 400 | 404),
            "{target} gave {}",
            response.status
        );
        assert!(
            !response.text().contains("top secret") && !response.text().contains("root:"),
            "{target} leaked"
        );
    }
    // A folder without index.html is not listed.
    assert_eq!(get(addr, "/sub/").status, 404);
    let _ = std::fs::remove_file(secret);
}

#[test]
fn the_bundled_page_is_served_when_the_public_folder_is_missing() {
    let server = start_with(|c| c.public_dir = PathBuf::from("/nonexistent/threadcast-public"));
    let index = get(server.http_addr(), "/");
    assert_eq!(index.status, 200);
    assert_eq!(
        index.body,
        std::fs::read(public_dir().join("index.html")).unwrap()
    );
    assert_eq!(get(server.http_addr(), "/app.js").status, 200);
}

#[test]
fn healthz_answers_ok() {
    let server = start();
    let response = get(server.http_addr(), "/healthz");
    assert_eq!((response.status, response.text().trim()), (200, "ok"));
}

#[test]
fn config_json_points_the_page_at_the_host_and_port_it_used() {
    let server = start();
    let response = http(server.http_addr(), "GET", "/config.json", &[], b"");
    assert_eq!(
        response.header("Content-Type").as_deref(),
        Some("application/json")
    );
    // `http()` sends Host: 127.0.0.1:<port>; one port serves the page and WebSockets.
    let expected = format!(
        "\"ws_url\":\"ws://127.0.0.1:{}\"",
        server.http_addr().port()
    );
    assert!(response.text().contains(&expected), "{}", response.text());

    let mut stream = TcpStream::connect(server.http_addr()).unwrap();
    stream
        .write_all(
            b"GET /config.json HTTP/1.1\r\nHost: example.test:8080\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    assert!(
        text.contains("\"ws_url\":\"ws://example.test:8080\""),
        "{text}"
    );

    let behind_proxy =
        start_with(|c| c.public_ws_url = Some("wss://chat.example.com/ws-base".into()));
    assert!(
        get(behind_proxy.http_addr(), "/config.json")
            .text()
            .contains("\"ws_url\":\"wss://chat.example.com/ws-base\"")
    );
}

#[test]
fn stats_reports_connections_rooms_and_message_counts() {
    let server = start_with(|c| c.token = Some("op".into()));
    let mut a = connect(&server, "/ws/alpha?raw=1&token=op");
    let _b = connect(&server, "/ws/alpha?raw=1&token=op");
    wait_for_members(&server, "alpha", 2);
    let _echo = connect(&server, "/echo?token=op");
    a.send(Message::text("x")).unwrap();
    let _ = next_data(&mut a);
    // Room names are shown only to a caller who gave the token.
    assert_eq!(get(server.http_addr(), "/stats").status, 401);
    let stats = get(server.http_addr(), "/stats?token=op").text();
    for expected in [
        "\"connections\":3",
        "\"alpha\":{\"members\":2,\"history_messages\":1,",
        "\"messages_in\":1",
        "\"slow_consumer_disconnects\":0",
        "\"uptime_secs\":",
    ] {
        assert!(stats.contains(expected), "{expected} missing in {stats}");
    }
    assert!(stats.contains("\"messages_out\":"), "{stats}");
}

#[test]
fn publish_broadcasts_the_body_to_the_room_and_reports_members_reached() {
    let server = start();
    let mut a = connect(&server, "/ws/news?raw=1");
    let mut b = connect(&server, "/ws/news?raw=1");
    wait_for_members(&server, "news", 2);
    let response = http(
        server.http_addr(),
        "POST",
        "/publish/news",
        &[],
        b"extra! extra!",
    );
    assert_eq!(response.status, 202);
    assert!(
        response
            .text()
            .starts_with("{\"delivered\":2,\"id\":1,\"epoch\":\""),
        "{}",
        response.text()
    );
    assert_eq!(next_data(&mut a), Message::text("extra! extra!"));
    assert_eq!(next_data(&mut b), Message::text("extra! extra!"));

    // A body that is not UTF-8 arrives as a binary message.
    http(
        server.http_addr(),
        "POST",
        "/publish/news",
        &[],
        &[0xff, 0x00, 0x01],
    );
    assert_eq!(next_data(&mut a), Message::binary(vec![0xff, 0x00, 0x01]));
}

#[test]
fn publish_checks_method_room_size_and_token() {
    let server = start_with(|c| {
        c.token = Some("t0ken".into());
        c.max_message_bytes = 10;
    });
    let addr = server.http_addr();
    assert_eq!(http(addr, "POST", "/publish/news", &[], b"hi").status, 401);
    assert_eq!(
        http(addr, "POST", "/publish/news?token=bad", &[], b"hi").status,
        401
    );
    assert_eq!(
        http(addr, "POST", "/publish/news?token=t0ken", &[], b"hi").status,
        202
    );
    assert_eq!(
        http(
            addr,
            "POST",
            "/publish/news",
            &[("Authorization", "Bearer t0ken")],
            b"hi"
        )
        .status,
        202
    );
    assert_eq!(
        http(
            addr,
            "POST",
            "/publish/news?token=t0ken",
            &[],
            b"01234567890"
        )
        .status,
        413
    );
    assert_eq!(
        http(addr, "POST", "/publish/bad.room?token=t0ken", &[], b"hi").status,
        404
    );
    assert_eq!(http(addr, "GET", "/publish/news", &[], b"").status, 405);
    assert_eq!(http(addr, "DELETE", "/index.html", &[], b"").status, 405);
}

/// The value of the sample `name` (with its labels, as written) in a metrics text.
fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

#[test]
fn metrics_speak_the_prometheus_text_format_behind_the_token() {
    let server = start_with(|c| c.token = Some("op".into()));
    let addr = server.http_addr();
    assert_eq!(get(addr, "/metrics").status, 401);
    let mut a = connect(&server, "/ws/secret-room?raw=1&token=op");
    wait_for_members(&server, "secret-room", 1);
    server.publish("secret-room", "x").unwrap();
    let _ = next_data(&mut a);

    let metrics = get(addr, "/metrics?token=op");
    assert_eq!(metrics.status, 200);
    assert_eq!(
        metrics.header("Content-Type").as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = metrics.text();
    assert_eq!(
        sample(&text, "threadcast_connections{transport=\"websocket\"}"),
        Some(1)
    );
    assert_eq!(sample(&text, "threadcast_rooms"), Some(1));
    assert_eq!(sample(&text, "threadcast_room_members"), Some(1));
    assert_eq!(sample(&text, "threadcast_messages_in_total"), Some(1));
    assert!(
        sample(&text, "threadcast_threads").is_some_and(|t| t > 2),
        "{text}"
    );
    assert!(
        sample(&text, "process_resident_memory_bytes").is_some(),
        "{text}"
    );
    assert!(!text.contains("secret-room"), "room names are not metrics");
    // One live message was written to one WebSocket member.
    assert_eq!(
        sample(&text, "threadcast_delivery_latency_seconds_count"),
        Some(1)
    );
    assert_eq!(
        sample(
            &text,
            "threadcast_delivery_latency_seconds_bucket{le=\"+Inf\"}"
        ),
        Some(1)
    );
    // Every sample belongs to a family announced by HELP and TYPE lines before it.
    let mut announced = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(matches!(kind, "gauge" | "counter" | "histogram"), "{line}");
            announced.insert(name.to_string(), kind.to_string());
        } else if !line.starts_with("# HELP ") {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|f| announced.get(*f).is_some_and(|k| k == "histogram"))
                .unwrap_or(name);
            assert!(
                announced.contains_key(family),
                "{line} comes before its TYPE"
            );
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
