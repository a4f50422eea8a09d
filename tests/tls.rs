//! TLS on both listeners (`--features tls`): HTTPS static files and endpoints, WSS
//! echo and rooms, all through clients that verify the server's certificate against a
//! throwaway CA made with openssl at test time; and the ways a TLS handshake can fail
//! without harming anyone else.
#![cfg(feature = "tls")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use threadcast::{Config, Server, ServerHandle};
use tungstenite::{Message, WebSocket};

/// A TLS client connection: rustls over a TCP socket.
type Tls = StreamOwned<ClientConnection, TcpStream>;

/// Debian's openssl, used to make the test certificates.
const OPENSSL: &str = "/usr/bin/openssl";

/// The throwaway certificates: a CA, a leaf for `localhost` and `127.0.0.1` signed by
/// it, and an unrelated CA that must not be trusted (it signs the "renewed" leaf).
struct Pki {
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    ca_key: PathBuf,
    /// Another leaf for localhost, signed by the other CA: a "renewed" certificate.
    renewed_cert: PathBuf,
    renewed_key: PathBuf,
}

/// Made once per test binary, in a fresh folder (ECDSA P-256: fast to generate).
fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let dir = temp_dir("tls-pki");
        let self_signed_ca = |name: &str, cn: &str| {
            openssl(
                &dir,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN={cn}"),
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.pem"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign",
                ],
            );
        };
        self_signed_ca("ca", "threadcast test CA");
        self_signed_ca("other-ca", "some other CA");
        std::fs::write(
            dir.join("leaf.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        // A key and a certificate for localhost signed by `ca`, as `name`.{key,pem}.
        let leaf = |name: &str, ca: &str| {
            openssl(
                &dir,
                &[
                    "req",
                    "-new",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                    "-nodes",
                    "-subj",
                    "/CN=localhost",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                ],
            );
            openssl(
                &dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    &format!("{ca}.pem"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-sha256",
                    "-extfile",
                    "leaf.ext",
                    "-out",
                    &format!("{name}.pem"),
                ],
            );
        };
        leaf("leaf", "ca");
        leaf("renewed", "other-ca");
        Pki {
            ca: dir.join("ca.pem"),
            other_ca: dir.join("other-ca.pem"),
            cert: dir.join("leaf.pem"),
            key: dir.join("leaf.key"),
            ca_key: dir.join("ca.key"),
            renewed_cert: dir.join("renewed.pem"),
            renewed_key: dir.join("renewed.key"),
        }
    })
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new(OPENSSL)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run /usr/bin/openssl");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A server on ephemeral ports with TLS on both listeners, changed by `change`.
fn start_tls(change: impl FnOnce(&mut Config)) -> ServerHandle {
    start_with(|config| {
        config.tls_cert = Some(pki().cert.clone());
        config.tls_key = Some(pki().key.clone());
        change(config);
    })
}

/// A client configuration that trusts only the CA in `ca_file`.
fn client_config(ca_file: &Path) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca_file).expect("read CA"))
        .expect("add CA");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// Connects to `addr` as `localhost`, trusting `ca_file`, and completes the TLS
/// handshake (so a certificate the client rejects fails here).
fn tls_connect_with(addr: SocketAddr, ca_file: &Path) -> std::io::Result<Tls> {
    let socket = TcpStream::connect(addr)?;
    socket.set_read_timeout(Some(TEST_TIMEOUT))?;
    socket.set_write_timeout(Some(TEST_TIMEOUT))?;
    let name = ServerName::try_from("localhost").unwrap();
    let session = ClientConnection::new(client_config(ca_file), name).unwrap();
    let mut tls = StreamOwned::new(session, socket);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// A verified TLS connection to `addr`.
fn tls_connect(addr: SocketAddr) -> Tls {
    tls_connect_with(addr, &pki().ca).expect("TLS handshake with the test CA")
}

/// `GET target` over HTTPS with `Connection: close`; the whole response.
fn https_get(server: &ServerHandle, target: &str) -> HttpResponse {
    let host = format!("localhost:{}", server.http_addr().port());
    https_get_as(server, target, &host)
}

/// [`https_get`] naming `host` in the `Host` header.
fn https_get_as(server: &ServerHandle, target: &str, host: &str) -> HttpResponse {
    let mut tls = tls_connect(server.http_addr());
    write!(
        tls,
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw)
        .expect("the response ends with close_notify");
    parse_response(&raw)
}

/// A WebSocket over verified TLS to `path` on the WebSocket port.
fn wss_connect(server: &ServerHandle, path: &str) -> WebSocket<Tls> {
    let tls = tls_connect(server.ws_addr());
    let url = format!("wss://localhost:{}{path}", server.ws_addr().port());
    let (ws, response) = tungstenite::client(url.as_str(), tls).expect("WebSocket handshake");
    assert_eq!(response.status(), 101);
    ws
}

/// The next text or binary message (pings are answered by tungstenite).
fn next_message(ws: &mut WebSocket<Tls>) -> Message {
    loop {
        match ws.read().expect("read") {
            m @ (Message::Text(_) | Message::Binary(_)) => return m,
            _ => continue,
        }
    }
}

/// Reads until the peer closes the connection; true if it did before [`TEST_TIMEOUT`]
/// (end of stream or reset), false if the read timed out instead.
fn closed_by_server(socket: &mut TcpStream) -> bool {
    let mut sink = [0u8; 1024];
    loop {
        match socket.read(&mut sink) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

#[test]
fn https_serves_the_page_and_static_files_but_nothing_outside_public() {
    let server = start_tls(|_| {});
    let page = https_get(&server, "/");
    assert_eq!(page.status, 200, "{}", page.head);
    assert!(page.text().contains("<html"), "{}", page.text());

    let script = https_get(&server, "/app.js");
    assert_eq!(script.status, 200);
    assert!(
        script
            .header("Content-Type")
            .unwrap_or_default()
            .contains("javascript"),
        "{}",
        script.head
    );
    let on_disk = std::fs::read(public_dir().join("app.js")).unwrap();
    assert_eq!(script.body, on_disk);

    assert_eq!(https_get(&server, "/../Cargo.toml").status, 404);
    assert_eq!(https_get(&server, "/%2e%2e/Cargo.toml").status, 404);
}

#[test]
fn config_json_over_https_names_a_wss_url() {
    let server = start_tls(|_| {});
    let config = https_get(&server, "/config.json");
    assert_eq!(config.status, 200);
    // One port: the page's WebSocket URL is the host and port it was loaded from.
    let expected = format!(
        "\"ws_url\":\"wss://localhost:{}\"",
        server.http_addr().port()
    );
    assert!(config.text().contains(&expected), "{}", config.text());
}

#[test]
fn wss_echo_returns_text_and_binary_unchanged() {
    let server = start_tls(|_| {});
    let mut ws = wss_connect(&server, "/echo");
    ws.send(Message::text("hello over TLS")).unwrap();
    assert_eq!(next_message(&mut ws), Message::text("hello over TLS"));
    // Larger than one TLS record (16 KiB), so it spans several.
    let bytes: Vec<u8> = (0..100_000).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(bytes.clone())).unwrap();
    assert_eq!(next_message(&mut ws), Message::binary(bytes));
    ws.close(None).unwrap();
}

#[test]
fn a_room_over_wss_delivers_from_one_verified_client_to_another() {
    let server = start_tls(|_| {});
    let mut alice = wss_connect(&server, "/ws/tls-room");
    let mut bob = wss_connect(&server, "/ws/tls-room");
    wait_for_members(&server, "tls-room", 2);
    alice.send(Message::text("cid:a-1\nhello, bob")).unwrap();
    // Bob gets his welcome (and maybe member counts) first, then the message with its
    // one-line JSON header (docs/PROTOCOL.md).
    let message = loop {
        let text = next_message(&mut bob).into_text().unwrap().to_string();
        if text.starts_with("{\"type\":\"message\"") {
            break text;
        }
    };
    assert!(message.ends_with("\nhello, bob"), "{message}");
    assert!(message.contains("\"cid\":\"a-1\""), "{message}");
}

#[test]
fn a_quiet_wss_client_is_kept_alive_by_pings_through_tls() {
    // The writer pings every 50 ms while the reader waits (without the session's lock)
    // for the pongs; a reader that timed out or a writer stuck behind it would drop
    // the connection within the 200 ms pong timeout.
    let server = start_tls(|c| {
        c.ping_interval = Duration::from_millis(50);
        c.pong_timeout = Duration::from_millis(200);
    });
    let mut ws = wss_connect(&server, "/echo");
    let mut pings = 0;
    while pings < 10 {
        // tungstenite answers each ping with a pong when it reads it.
        match ws.read().expect("the connection stays open") {
            Message::Ping(_) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    ws.send(Message::text("still open")).unwrap();
    assert_eq!(next_message(&mut ws), Message::text("still open"));
}

#[test]
fn sse_events_stream_through_the_https_relay_as_they_happen() {
    let server = start_tls(|_| {});
    let mut tls = tls_connect(server.http_addr());
    let port = server.http_addr().port();
    write!(
        tls,
        "GET /events/tls-sse HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"
    )
    .unwrap();
    wait_for_members(&server, "tls-sse", 1);
    server.publish("tls-sse", "live over https").unwrap();
    // The stream never ends, so read what has arrived until the event is there.
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("live over https") {
        let n = tls.read(&mut chunk).expect("the event arrives");
        assert!(
            n > 0,
            "stream ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&chunk[..n]);
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));
}

#[test]
fn a_client_that_does_not_trust_the_ca_fails_on_both_ports() {
    let server = start_tls(|_| {});
    for addr in [server.http_addr(), server.ws_addr()] {
        let refused = tls_connect_with(addr, &pki().other_ca);
        let error = refused.expect_err("an unknown CA must fail verification");
        assert!(
            error.to_string().contains("certificate"),
            "unexpected error: {error}"
        );
    }
    // The server shrugs it off: the next (trusting) client is served.
    assert_eq!(https_get(&server, "/healthz").text().trim(), "ok");
}

#[test]
fn plain_http_and_ws_sent_to_tls_ports_are_refused_without_harming_others() {
    let server = start_tls(|_| {});
    let http_request = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        server.http_addr().port()
    );
    for (addr, request) in [
        (server.http_addr(), http_request),
        (server.ws_addr(), upgrade_request("/echo", "")),
    ] {
        let mut socket = TcpStream::connect(addr).unwrap();
        socket.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
        socket.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        let _ = socket.read_to_end(&mut answer); // an alert, then the end (or a reset)
        assert!(
            !answer.starts_with(b"HTTP/"),
            "plain text answered on a TLS port: {}",
            String::from_utf8_lossy(&answer)
        );
    }
    assert_eq!(https_get(&server, "/healthz").text().trim(), "ok");
    let mut ws = wss_connect(&server, "/echo");
    ws.send(Message::text("still here")).unwrap();
    assert_eq!(next_message(&mut ws), Message::text("still here"));
}

#[test]
fn a_silent_tls_client_is_cut_off_at_the_handshake_timeout_while_others_are_served() {
    let server = start_tls(|c| c.handshake_timeout = Duration::from_millis(300));
    let started = Instant::now();
    // On each port: one client that sends nothing, and one that stops halfway through
    // a TLS record header (a partial record must not be mistaken for progress).
    let mut silent = Vec::new();
    for addr in [server.http_addr(), server.ws_addr()] {
        for opening in [&b""[..], &[0x16, 0x03, 0x01][..]] {
            let mut socket = TcpStream::connect(addr).unwrap();
            socket.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
            socket.write_all(opening).unwrap();
            silent.push(socket);
        }
    }
    assert_eq!(https_get(&server, "/healthz").text().trim(), "ok");
    let mut ws = wss_connect(&server, "/echo");
    ws.send(Message::text("served")).unwrap();
    assert_eq!(next_message(&mut ws), Message::text("served"));

    for socket in &mut silent {
        assert!(
            closed_by_server(socket),
            "a silent client was never cut off"
        );
    }
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "cut off before the deadline"
    );
}

#[test]
fn the_dns_rebinding_guard_applies_over_https_too() {
    // TLS ends at the door, which then reads the Host header like any other.
    let server = start_tls(|_| {});
    assert_eq!(https_get(&server, "/stats").status, 200);
    let rebound = https_get_as(&server, "/stats", "attacker.example");
    assert_eq!(rebound.status, 403, "{}", rebound.text());
    assert_eq!(
        https_get_as(&server, "/", "attacker.example").status,
        200,
        "the page is public"
    );
}

#[test]
fn silent_tls_clients_past_the_in_progress_cap_cut_off_the_oldest_and_others_are_served() {
    use threadcast::internals::MAX_REQUESTS_IN_PROGRESS;
    // Long enough that the silent clients below would hold their places for the whole
    // test; they all come from 127.0.0.1, so the per-address limit is raised.
    let server = start_tls(|c| {
        c.handshake_timeout = Duration::from_secs(60);
        c.max_connections_per_ip = 4 * MAX_REQUESTS_IN_PROGRESS;
    });
    let mut held: Vec<TcpStream> = (0..MAX_REQUESTS_IN_PROGRESS + 10)
        .map(|_| TcpStream::connect(server.http_addr()).unwrap())
        .collect();
    // The oldest silent client was cut off to make room for the newer ones.
    let oldest = &mut held[0];
    oldest.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    assert!(
        closed_by_server(oldest),
        "the oldest silent client was kept"
    );
    // A real client still gets through at once, page and WebSocket alike.
    assert_eq!(https_get(&server, "/healthz").text().trim(), "ok");
    let mut ws = wss_connect(&server, "/echo");
    ws.send(Message::text("still here")).unwrap();
    assert_eq!(next_message(&mut ws), Message::text("still here"));
    held.clear();
}

/// A server-side `TlsSocket` and a verified client over a fresh loopback socket pair,
/// with the handshake done.
fn tls_pair() -> (threadcast::internals::TlsSocket, Tls) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = std::thread::spawn(move || tls_connect(addr));
    let (socket, _) = listener.accept().unwrap();
    let config = threadcast::internals::load_server_config(&pki().cert, &pki().key).unwrap();
    let server = threadcast::internals::TlsSocket::new(socket, &config).unwrap();
    server
        .handshake(Instant::now() + TEST_TIMEOUT)
        .expect("server handshake");
    (server, client.join().unwrap())
}

#[test]
fn tls_stream_timeouts_keep_a_partial_record_and_eof_reads_zero() {
    let (server, mut client) = tls_pair();
    // Encrypt a message on the client, but put only its first bytes on the wire.
    client.conn.writer().write_all(b"hello").unwrap();
    let mut record = Vec::new();
    while client.conn.wants_write() {
        client.conn.write_tls(&mut record).unwrap();
    }
    let half = record.len() / 2; // past the 5-byte header, inside the body
    client.sock.write_all(&record[..half]).unwrap();
    server
        .socket()
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 64];
    let timed_out = (&server)
        .read(&mut buf)
        .expect_err("half a record is no data");
    assert!(
        matches!(
            timed_out.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{timed_out}"
    );
    // The rest arrives: the bytes read before the timeout were kept.
    client.sock.write_all(&record[half..]).unwrap();
    server
        .socket()
        .set_read_timeout(Some(TEST_TIMEOUT))
        .unwrap();
    let n = (&server).read(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
    // close_notify, then the end of the stream: read returns 0.
    client.conn.send_close_notify();
    client.flush().unwrap();
    assert_eq!((&server).read(&mut buf).unwrap(), 0);
}

#[test]
fn tls_stream_writes_while_another_thread_waits_in_read() {
    let (server, mut client) = tls_pair();
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut buf = [0u8; 64];
            let n = (&server).read(&mut buf).unwrap();
            buf[..n].to_vec()
        });
        // The reader is (or soon will be) parked in read; writing must not wait for it.
        (&server).write_all(b"from the writer").unwrap();
        let mut buf = [0u8; 64];
        let n = client.read(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"from the writer");
        client.write_all(b"now the reader").unwrap();
        client.flush().unwrap();
        assert_eq!(reader.join().unwrap(), b"now the reader");
    });
}

#[test]
fn start_fails_with_a_clear_error_for_a_missing_garbage_or_mismatched_cert_or_key() {
    let dir = temp_dir("tls-bad");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").unwrap();
    let missing = dir.join("missing.pem");
    let pki = pki();
    let cases: [(&Path, &Path, &str); 4] = [
        (&missing, &pki.key, "missing.pem"),
        (&garbage, &pki.key, "no PEM certificate"),
        (&pki.cert, &garbage, "no PEM private key"),
        // The CA's key does not belong to the leaf certificate.
        (&pki.cert, &pki.ca_key, "not usable"),
    ];
    for (cert, key, expected) in cases {
        let mut config = test_config();
        config.tls_cert = Some(cert.to_path_buf());
        config.tls_key = Some(key.to_path_buf());
        let error = Server::start(config).expect_err("a bad certificate or key");
        assert!(
            error.to_string().contains(expected),
            "{cert:?}/{key:?}: expected {expected:?} in {error}"
        );
    }
}

#[test]
fn the_binary_exits_with_a_message_for_a_bad_certificate_or_a_lone_flag() {
    let missing = temp_dir("tls-bin").join("missing.pem");
    let output = binary_command()
        .arg("--tls-cert")
        .arg(&missing)
        .arg("--tls-key")
        .arg(&pki().key)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("missing.pem"), "{stderr}");

    let lone = binary_command()
        .arg("--tls-cert")
        .arg(&pki().cert)
        .output()
        .unwrap();
    assert_eq!(lone.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&lone.stderr).contains("--tls-key"));
}

/// Copies of the first certificate and key in a folder of their own, as a deployment
/// has them (a renewal overwrites them in place).
fn deployed_pair() -> (PathBuf, PathBuf) {
    let dir = temp_dir("tls-deployed");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::copy(&pki().cert, &cert).unwrap();
    std::fs::copy(&pki().key, &key).unwrap();
    (cert, key)
}

/// Overwrites the deployed pair with the renewed one (signed by the other CA).
fn renew(cert: &Path, key: &Path) {
    std::fs::copy(&pki().renewed_cert, cert).unwrap();
    std::fs::copy(&pki().renewed_key, key).unwrap();
}

fn trusted_by(addr: SocketAddr, ca: &Path) -> bool {
    tls_connect_with(addr, ca).is_ok()
}

#[test]
fn a_renewed_certificate_is_served_after_a_reload_and_a_broken_one_is_not() {
    let (cert, key) = deployed_pair();
    let server = start_with(|c| {
        c.tls_cert = Some(cert.clone());
        c.tls_key = Some(key.clone());
    });
    let mut open = wss_connect(&server, "/echo");
    assert!(trusted_by(server.http_addr(), &pki().ca));

    // Half a renewal: the files do not hold a usable pair. Nothing changes.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\ntruncated").unwrap();
    assert!(server.reload_tls().is_err());
    assert!(trusted_by(server.http_addr(), &pki().ca));
    assert!(trusted_by(server.ws_addr(), &pki().ca));

    renew(&cert, &key);
    assert!(server.reload_tls().unwrap());
    for addr in [server.http_addr(), server.ws_addr()] {
        assert!(
            trusted_by(addr, &pki().other_ca),
            "the renewed certificate is served"
        );
        assert!(!trusted_by(addr, &pki().ca), "the old one is not");
    }
    // A connection opened before keeps working.
    open.send(Message::text("still open")).unwrap();
    assert_eq!(next_message(&mut open), Message::text("still open"));
    assert!(!start().reload_tls().unwrap(), "no TLS, nothing to reload");
}

#[test]
fn the_binary_reloads_its_certificate_on_sighup() {
    let (cert, key) = deployed_pair();
    let mut command = binary_command();
    command
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key);
    let mut binary = Binary::start(command);
    binary.drain_logs();
    assert!(trusted_by(binary.http, &pki().ca));
    renew(&cert, &key);
    binary.signal("HUP");
    wait_until("the renewed certificate is served", || {
        trusted_by(binary.http, &pki().other_ca)
    });
    assert!(trusted_by(binary.ws, &pki().other_ca));
    assert!(
        binary.child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the server"
    );
    binary.signal("TERM");
    assert!(binary.child.wait().unwrap().success());
}
