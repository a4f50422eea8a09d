//! `deploy/nginx.conf` in front of a real threadcast: the page, `/config.json`, echo, a
//! room broadcast, heartbeats and Server-Sent Events all work through the proxy, on one
//! origin, with the browser's Origin header accepted.
//!
//! Each test starts its own threadcast (library, one ephemeral loopback port serving
//! everything, with the README's recipe: `--public-ws-url` naming the proxy and
//! `--trust-proxy`) and its own nginx (Debian's package) on an ephemeral loopback port,
//! running the shipped `deploy/nginx.conf` with only the listen and upstream addresses
//! substituted, from a temporary prefix directory (config, logs, pid, temp files), so
//! nothing under /etc or /var is touched. Without nginx the tests are skipped, except
//! under CI (env `CI`), where a missing nginx is a failure.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use threadcast::{Config, ServerHandle};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

#[test]
fn the_page_and_its_config_come_through_the_proxy() {
    let Some((server, proxy)) = start_pair(|_| {}) else {
        return;
    };
    let page = get(proxy.addr, "/");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<html"), "the page: {}", page.text());
    assert!(
        page.header("Server")
            .is_some_and(|s| s.starts_with("nginx")),
        "answered through nginx: {}",
        page.head
    );
    // One port: the upstream serves the page and the WebSockets alike.
    assert_eq!(server.http_addr(), server.ws_addr(), "one threadcast port");
    // With --public-ws-url the page is told the proxy's address, not threadcast's own.
    let config = get(proxy.addr, "/config.json").text();
    let expected = format!("\"ws_url\":\"{}\"", proxy.ws_url());
    assert!(config.contains(&expected), "{config} lacks {expected}");
    assert_eq!(get(proxy.addr, "/healthz").status, 200);
    drop(server);
}

#[test]
fn echo_works_through_the_proxy_for_the_page_origin_only() {
    let Some((_server, proxy)) = start_pair(|_| {}) else {
        return;
    };
    let mut ws = proxy
        .connect("/echo", &proxy.origin())
        .expect("page origin accepted");
    for len in [5, 300, 100_000] {
        let text = "é".repeat(len / 2);
        ws.send(Message::text(text.clone())).unwrap();
        assert_eq!(next_data(&mut ws), Message::text(text), "{len} bytes");
    }
    ws.send(Message::binary(vec![0u8, 255, 7])).unwrap();
    assert_eq!(next_data(&mut ws), Message::binary(vec![0u8, 255, 7]));
    assert_eq!(close_handshake(&mut ws), Some(1000));

    // nginx passes Host through, so the same-host rule still refuses another site.
    match proxy.connect("/echo", "https://evil.example") {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("a foreign Origin must get 403, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_public_host_name_works_through_the_proxy() {
    // A real deployment: the browser asks nginx for https://example.com, nginx passes
    // `Host: example.com` to threadcast over loopback, and threadcast was told its
    // public name with --public-ws-url. The page, its config and a WebSocket opened the
    // way the page opens it (ws_url + path, Origin of the page) must all work.
    let Some((_server, proxy)) = start_pair(|config| {
        config.public_ws_url = Some("ws://example.com".into());
    }) else {
        return;
    };
    let host = [("Host", "example.com")];
    let page = http_as(proxy.addr, "/", &host);
    assert_eq!(page.status, 200, "{}", page.text());
    let config = http_as(proxy.addr, "/config.json", &host).text();
    assert!(
        config.contains("\"ws_url\":\"ws://example.com\""),
        "{config}"
    );

    let stream = TcpStream::connect(proxy.addr).unwrap();
    stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    let mut request = "ws://example.com/echo".into_client_request().unwrap();
    let origin = HeaderValue::from_static("http://example.com");
    request.headers_mut().insert("Origin", origin);
    let (mut ws, _) = tungstenite::client(request, stream).expect("handshake as example.com");
    ws.send(Message::text("hello from example.com")).unwrap();
    assert_eq!(next_data(&mut ws), Message::text("hello from example.com"));
}

#[test]
fn a_room_broadcast_reaches_every_member_through_the_proxy() {
    let Some((server, proxy)) = start_pair(|_| {}) else {
        return;
    };
    // `?raw=1`: payloads exactly as published. A member that hears its own message has
    // joined (the hub applies its join before its publish), so after both have heard
    // themselves, both are members.
    let mut alice = proxy.connect("/ws/kitchen?raw=1", &proxy.origin()).unwrap();
    alice.send(Message::text("alice here")).unwrap();
    assert_eq!(next_text_containing(&mut alice, "alice here"), "alice here");
    let mut bob = proxy.connect("/ws/kitchen?raw=1", &proxy.origin()).unwrap();
    bob.send(Message::text("bob here")).unwrap();
    assert_eq!(next_text_containing(&mut bob, "bob here"), "bob here");
    assert_eq!(next_text_containing(&mut alice, "bob here"), "bob here");

    alice.send(Message::text("soup is ready")).unwrap();
    assert_eq!(next_text_containing(&mut bob, "soup"), "soup is ready");
    assert_eq!(next_text_containing(&mut alice, "soup"), "soup is ready");

    // Publishing over HTTP through the proxy reaches both WebSockets.
    let published = http(proxy.addr, "POST", "/publish/kitchen", &[], b"from curl");
    assert_eq!(published.status, 202, "{}", published.text());
    assert_eq!(next_text_containing(&mut alice, "curl"), "from curl");
    assert_eq!(next_text_containing(&mut bob, "curl"), "from curl");
    drop(server);
}

#[test]
fn with_trust_proxy_the_per_address_limit_is_left_to_nginx() {
    // Behind nginx every client arrives from 127.0.0.1. With --trust-proxy (the README's
    // recipe) threadcast does not apply --max-connections-per-ip to that loopback peer,
    // so three clients pass a limit of 2; nginx's `limit_conn` counts real addresses.
    let Some((server, proxy)) = start_pair(|config| config.max_connections_per_ip = 2) else {
        return;
    };
    let mut clients: Vec<_> = (0..3)
        .map(|i| {
            proxy
                .connect("/echo", &proxy.origin())
                .unwrap_or_else(|e| panic!("client {i} through nginx: {e}"))
        })
        .collect();
    for (i, ws) in clients.iter_mut().enumerate() {
        ws.send(Message::text(format!("client {i}"))).unwrap();
        assert_eq!(next_data(ws), Message::text(format!("client {i}")));
    }
    assert_eq!(get(proxy.addr, "/healthz").status, 200);
    drop(server);
}

/// README, "Running several instances": two instances in the one upstream block (whose
/// `least_conn` sends each new connection to the instance with fewer open ones), sharing
/// rooms through Redis.
#[cfg(feature = "redis")]
#[test]
fn several_instances_behind_the_upstreams_share_their_rooms_through_redis() {
    let Some(nginx) = find_nginx() else {
        return;
    };
    let redis = common::redis::Redis::start();
    let (servers, proxy) = (0..START_ATTEMPTS)
        .find_map(|_| {
            let port = free_port();
            let proxy = SocketAddr::from(([127, 0, 0, 1], port));
            let instance = || {
                start_with(|c| {
                    c.public_ws_url = Some(format!("ws://{proxy}"));
                    c.trust_proxy = true;
                    c.redis_url = Some(redis.url());
                    c.demo_feed = false;
                })
            };
            let servers = [instance(), instance()];
            let [a, b] = &servers;
            let site = site_config(a, port);
            assert!(
                site.contains("least_conn;"),
                "deploy/nginx.conf balances by open connections, as the README says"
            );
            // The README's recipe: one more `server` line per instance.
            let site = site.replace(
                &format!("server {};", a.http_addr()),
                &format!("server {};\n    server {};", a.http_addr(), b.http_addr()),
            );
            start_nginx(&nginx, &site, proxy).map(|proxy| (servers, proxy))
        })
        .expect("nginx did not start");
    common::redis::wait_linked(&[&servers[0], &servers[1]]);
    let mut alice = proxy.connect("/ws/hall?raw=1", &proxy.origin()).unwrap();
    wait_until("alice has joined", || {
        servers.iter().map(|s| s.members("hall")).sum::<usize>() == 1
    });
    let mut bob = proxy.connect("/ws/hall?raw=1", &proxy.origin()).unwrap();
    wait_until("bob joined the other instance (least_conn)", || {
        servers.iter().all(|s| s.members("hall") == 1)
    });
    alice.send(Message::text("hello across instances")).unwrap();
    assert_eq!(
        next_text_containing(&mut bob, "across"),
        "hello across instances"
    );
    assert_eq!(
        next_text_containing(&mut alice, "across"),
        "hello across instances"
    );
    // /publish through the proxy lands on one instance and reaches both.
    let published = http(proxy.addr, "POST", "/publish/hall", &[], b"from curl");
    assert!(
        [200, 202].contains(&published.status),
        "{}",
        published.text()
    );
    assert_eq!(next_text_containing(&mut alice, "curl"), "from curl");
    assert_eq!(next_text_containing(&mut bob, "curl"), "from curl");
}

#[test]
fn heartbeats_keep_an_idle_websocket_open_past_the_proxy_read_timeout() {
    // nginx drops a proxied connection silent for proxy_read_timeout (75 s in the file,
    // 1 s here); threadcast's pings (every 300 ms here) and the client's pongs keep
    // an idle connection from ever being that silent.
    let Some((_server, proxy)) = start_pair_with(
        |config| {
            config.ping_interval = Duration::from_millis(300);
            config.pong_timeout = Duration::from_millis(1500);
        },
        |conf| conf.replace("proxy_read_timeout 75s;", "proxy_read_timeout 1s;"),
    ) else {
        return;
    };
    let mut ws = proxy.connect("/echo", &proxy.origin()).unwrap();
    ws.get_ref()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let idle_until = Instant::now() + Duration::from_millis(2500);
    let mut pings = 0;
    while Instant::now() < idle_until {
        // Reading answers each ping with a pong (tungstenite does it inside read()).
        match ws.read() {
            Ok(Message::Ping(_)) => pings += 1,
            Ok(other) => panic!("unexpected {other:?} while idle"),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("the idle connection was dropped after {pings} pings: {e}"),
        }
    }
    assert!(pings >= 3, "pings crossed the proxy: {pings}");
    ws.get_ref().set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    ws.send(Message::text("still here")).unwrap();
    assert_eq!(next_data(&mut ws), Message::text("still here"));
}

#[test]
fn server_sent_events_stream_through_the_proxy_without_buffering() {
    let Some((server, proxy)) = start_pair(|_| {}) else {
        return;
    };
    let mut stream = TcpStream::connect(proxy.addr).unwrap();
    stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    // HTTP/1.0 so nginx answers close-delimited, without chunked framing to undo.
    let request = format!(
        "GET /events/news HTTP/1.0\r\nHost: {}\r\nAccept: text/event-stream\r\n\r\n",
        proxy.addr
    );
    stream.write_all(request.as_bytes()).unwrap();
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );

    // The stream is open; publish until an event arrives. Every publish after the
    // stream joined the room reaches it, and nginx must pass it on at once: the
    // stream stays open, so a buffered event would never arrive.
    let deadline = Instant::now() + TEST_TIMEOUT;
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while !String::from_utf8_lossy(&received).contains("hello through nginx") {
        assert!(
            Instant::now() < deadline,
            "no event arrived: {}",
            String::from_utf8_lossy(&received)
        );
        server.publish("news", "hello through nginx").unwrap();
        match stream.read(&mut chunk) {
            Ok(0) => panic!("the stream ended: {}", String::from_utf8_lossy(&received)),
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(_) => {} // nothing yet: publish again
        }
    }
    let text = String::from_utf8_lossy(&received);
    let event = text
        .split("\n\n")
        .find(|event| event.contains("hello through nginx"))
        .unwrap();
    assert!(
        event.lines().any(|line| line.starts_with("data:")),
        "an SSE event with a data line: {event:?}"
    );
}

// ---------------------------------------------------------------------------------
// nginx in a temporary prefix
// ---------------------------------------------------------------------------------

/// How often to try again when the ephemeral port was taken between choosing and binding.
const START_ATTEMPTS: usize = 5;

/// A running nginx; stopped and its directory removed when dropped.
struct Nginx {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Nginx {
    /// `ws://` base URL of the proxy, what `--public-ws-url` is set to.
    fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The Origin a browser sends for the page served by the proxy.
    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A WebSocket through the proxy, as the page opens it: `ws_url` + path, with Origin.
    fn connect(
        &self,
        path: &str,
        origin: &str,
    ) -> Result<WebSocket<TcpStream>, tungstenite::Error> {
        let stream = TcpStream::connect(self.addr).expect("connect to nginx");
        stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
        let mut request = format!("{}{path}", self.ws_url()).into_client_request()?;
        request
            .headers_mut()
            .insert("Origin", HeaderValue::from_str(origin).unwrap());
        tungstenite::client(request, stream)
            .map(|(ws, _)| ws)
            .map_err(|e| match e {
                tungstenite::HandshakeError::Failure(e) => e,
                tungstenite::HandshakeError::Interrupted(_) => {
                    panic!("a blocking handshake cannot be interrupted")
                }
            })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
            eprintln!("--- nginx error.log ---\n{log}");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// threadcast and nginx in front of it, or `None` (skip) when nginx is not installed.
fn start_pair(change: impl FnOnce(&mut Config)) -> Option<(ServerHandle, Nginx)> {
    start_pair_with(change, |conf| conf)
}

/// Like [`start_pair`], also editing the nginx site config.
fn start_pair_with(
    change: impl FnOnce(&mut Config),
    edit_site: impl Fn(String) -> String,
) -> Option<(ServerHandle, Nginx)> {
    let nginx = find_nginx()?;
    let mut change = Some(change);
    for _ in 0..START_ATTEMPTS {
        let port = free_port();
        let proxy = SocketAddr::from(([127, 0, 0, 1], port));
        let change = change.take();
        // README, "Running behind nginx": loopback, --public-ws-url, --trust-proxy.
        let server = start_with(|config| {
            config.public_ws_url = Some(format!("ws://{proxy}"));
            config.trust_proxy = true;
            if let Some(change) = change {
                change(config);
            }
        });
        let site = edit_site(site_config(&server, port));
        if let Some(proxy) = start_nginx(&nginx, &site, proxy) {
            return Some((server, proxy));
        }
    }
    panic!("nginx did not start in {START_ATTEMPTS} attempts");
}

/// The nginx binary, or `None` when it is not installed and this is not CI.
fn find_nginx() -> Option<PathBuf> {
    for candidate in ["nginx", "/usr/sbin/nginx"] {
        let found = Command::new(candidate)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if found.is_ok_and(|status| status.success()) {
            return Some(PathBuf::from(candidate));
        }
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "nginx is not installed (apt-get install -y nginx); CI must run these tests"
    );
    eprintln!("skipped: nginx is not installed (apt-get install -y nginx)");
    None
}

/// deploy/nginx.conf with the listen and upstream addresses replaced. The file has one
/// upstream with one server, threadcast's one port, for every location.
fn site_config(server: &ServerHandle, port: u16) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx.conf");
    let mut site = std::fs::read_to_string(&path).expect("read deploy/nginx.conf");
    assert!(
        !site.contains("8081"),
        "deploy/nginx.conf should not name a separate WebSocket port"
    );
    let listen = format!("listen 127.0.0.1:{port};");
    let upstream = format!("server {};", server.http_addr());
    for (from, to) in [
        ("listen 80;", listen.as_str()),
        ("listen [::]:80;", ""),
        ("server 127.0.0.1:8080;", upstream.as_str()),
    ] {
        assert_eq!(
            site.matches(from).count(),
            1,
            "deploy/nginx.conf should contain `{from}` once"
        );
        site = site.replace(from, to);
    }
    site
}

/// A port that was free a moment ago (nginx binds it next; a loser of that race retries).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().unwrap().port()
}

/// Starts nginx with `site` inside a minimal main config, all files in a fresh temporary
/// prefix. `None` if it did not come up on `addr` (e.g. the port was taken meanwhile).
fn start_nginx(nginx: &Path, site: &str, addr: SocketAddr) -> Option<Nginx> {
    let dir = temp_dir("nginx");
    let d = dir.display();
    let main = format!(
        "error_log {d}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n\
         access_log {d}/access.log;\n\
         client_body_temp_path {d}/client_body;\n\
         proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n\
         uwsgi_temp_path {d}/uwsgi;\n\
         scgi_temp_path {d}/scgi;\n\
         {site}\n}}\n"
    );
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, main).expect("write nginx.conf");
    // One foreground process (no daemon, no workers, so no user switch when root);
    // -e: the startup error log, before the config's own error_log applies.
    let child = Command::new(nginx)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-g")
        .arg(format!(
            "daemon off; master_process off; pid {d}/nginx.pid;"
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    let mut proxy = Nginx { child, dir, addr };
    // Ready when /healthz answers through nginx (and not through some other program that
    // took the port: nginx would then have exited with "address in use").
    let deadline = Instant::now() + TEST_TIMEOUT;
    while Instant::now() < deadline {
        if proxy.child.try_wait().ok().flatten().is_some() {
            return None; // exited: most likely the port was taken
        }
        if TcpStream::connect(addr).is_ok() {
            let health = get(addr, "/healthz");
            if health.status == 200 && health.header("Server").is_some_and(|s| s.contains("nginx"))
            {
                return Some(proxy);
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = proxy.child.kill();
    panic!("nginx did not answer on {addr} within {TEST_TIMEOUT:?}");
}

/// GET `target` through the proxy with `headers` replacing the defaults (e.g. `Host`).
fn http_as(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    let mut request = format!("GET {target} HTTP/1.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    parse_response(&raw)
}

/// The text of the next text message that contains `needle` (skipping others, such as
/// messages of earlier steps).
fn next_text_containing(ws: &mut WebSocket<TcpStream>, needle: &str) -> String {
    loop {
        if let Message::Text(text) = next_data(ws) {
            if text.contains(needle) {
                return text.to_string();
            }
        }
    }
}
