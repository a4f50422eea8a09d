//! The front door: every connection, on every listener, starts here.
//!
//! ```text
//! accept loop (one per listener)          the connection's own thread
//! ──────────────────────────────          ────────────────────────────────────────────
//! accept ─▶ per-address limit ─▶ spawn ─▶ TLS handshake ─▶ read the head ─┬─▶ ws::upgrade
//!           (503 at once when over)       (--tls-cert)     (bounded, one  ├─▶ http::serve
//!                                                           deadline)     └─▶ 4xx, close
//! ```
//!
//! The accept loop does as little as possible, because while it works nobody else
//! is accepted: it checks the client's address against `--max-connections-per-ip`
//! (refusing at once, before a thread is spent), registers the socket among the
//! requests in progress, and starts the connection's thread. That thread reads the
//! request head itself ([`crate::http::head`]), so no byte a client sends reaches
//! any other code before it is bounded and checked, then routes it.
//!
//! **Requests in progress** (head or body still arriving, answer being written) have a
//! ceiling of their own, [`MAX_REQUESTS_IN_PROGRESS`]: past it the oldest is cut off
//! (see [`crate::net::requests::RequestsInProgress`]). A client that opens sockets and trickles bytes can
//! therefore hold neither threads nor descriptors for long, nor lock anyone out.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use crate::context::Shared;
use crate::http::files::FileServer;
use crate::http::head::{self, Head, HeadError};
use crate::http::reply::Reply;
use crate::http::{self as http_side, Exchange};
use crate::logging;
use crate::net::requests::RequestInProgress;
use crate::net::socket::{self, Socket};
use crate::net::spare_threads::{self, Kind};
use crate::ws::{self, upgrade::Upgraded};

/// Pause after `accept` fails for lack of file descriptors (EMFILE/ENFILE), so the loop
/// does not spin while connections finish and free some.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
pub use crate::net::requests::MAX_REQUESTS_IN_PROGRESS;

/// What a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serves {
    /// The page, files, HTTP endpoints and WebSockets (`--http`).
    Everything,
    /// WebSocket upgrades only (`--ws`); anything else gets 426.
    WebSocketsOnly,
}

/// Accepts connections until `shared.stopping` is set (the server then connects to
/// the listener once to wake this loop).
pub fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    serves: Serves,
    files: Arc<FileServer>,
) {
    for tcp in listener.incoming() {
        if shared.stopping.load(Ordering::Acquire) {
            break;
        }
        match tcp {
            Ok(tcp) => admit(tcp, &shared, serves, &files),
            Err(e) => {
                log::warn!("accept failed: {e}");
                if is_out_of_descriptors(&e) {
                    thread::sleep(ACCEPT_BACKOFF);
                }
            }
        }
    }
}

/// The accept loop's part for one socket: the per-address limit, then a thread.
fn admit(tcp: TcpStream, shared: &Arc<Shared>, serves: Serves, files: &Arc<FileServer>) {
    let Ok(peer) = tcp.peer_addr() else {
        return; // already gone
    };
    // Behind a proxy on this machine every client has the proxy's address: with
    // --trust-proxy the proxy's own limits apply instead (nginx limit_conn).
    let exempt = shared.config.trust_proxy && peer.ip().to_canonical().is_loopback();
    let address_slot = if exempt {
        None
    } else {
        match shared.per_ip.try_acquire(peer.ip()) {
            Some(slot) => Some(slot),
            None => return refuse_over_limit(tcp, peer, shared),
        }
    };
    let socket = match wrap(tcp, shared) {
        Ok(socket) => socket,
        Err(e) => return log::warn!("cannot start a TLS session: {e}"),
    };
    let conn = shared.in_progress.admit(socket);
    let (shared, files) = (Arc::clone(shared), Arc::clone(files));
    let spawned = spare_threads::run(Kind::Connection, "conn".into(), move || {
        // The address's place is held until the connection ends, whatever it became.
        let _address_slot = address_slot;
        if let Some(websocket) = handle(conn, peer, &shared, serves, &files) {
            websocket.run(&shared);
        }
    });
    if let Err(e) = spawned {
        // Out of threads (pid_max, ulimit -u, memory): the socket is dropped.
        log::warn!("cannot start a connection thread: {e}; see README, Capacity and memory");
    }
}

/// Over `--max-connections-per-ip`: a short 503, written without waiting (it fits in
/// the empty send buffer of a new socket), and the socket is closed.
fn refuse_over_limit(tcp: TcpStream, peer: SocketAddr, shared: &Shared) {
    log::debug!("refused a connection from {peer}: over --max-connections-per-ip");
    if shared.config.uses_tls() {
        return; // plain text would be noise inside TLS: just close
    }
    let reply = Reply::text(
        503,
        &format!(
            "too many connections from your address (--max-connections-per-ip {})",
            shared.config.max_connections_per_ip
        ),
    );
    let _ = tcp.set_nonblocking(true);
    let _ = (&tcp).write_all(&reply.to_bytes(false));
}

/// Plain TCP, or a TLS session whose handshake the connection's own thread performs
/// (never the accept loop: a slow client must not hold up the others).
fn wrap(tcp: TcpStream, shared: &Shared) -> io::Result<Socket> {
    #[cfg(feature = "tls")]
    if let Some(certificates) = &shared.tls {
        return crate::net::tls::TlsSocket::new(tcp, &certificates.current())
            .map(|tls| Socket::Tls(Box::new(tls)));
    }
    let _ = shared;
    Ok(Socket::Plain(tcp))
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE (24): this process; ENFILE (23): the whole system.
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// The connection's own thread: TLS, the head, then the route. An HTTP request is
/// answered here; an accepted WebSocket upgrade is returned, for the caller to run
/// once this function's stack frames are gone (see [`ws::upgrade`]).
#[inline(never)]
fn handle(
    conn: RequestInProgress,
    peer: SocketAddr,
    shared: &Arc<Shared>,
    serves: Serves,
    files: &FileServer,
) -> Option<Upgraded> {
    let head = read_request(conn.socket(), peer, shared)?;
    if wants_websocket(&head) {
        return ws::upgrade::upgrade(conn, head, peer, shared);
    }
    let exchange = Exchange {
        head,
        conn,
        peer,
        shared,
    };
    if serves == Serves::WebSocketsOnly {
        let reply = Reply::text(426, "this port speaks WebSocket only: /echo, /ws/ROOM")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13");
        exchange.answer(reply);
        return None;
    }
    http_side::serve(exchange, files);
    None
}

/// The TLS handshake (with `--tls-cert`) and the request head, within one deadline
/// (against slowloris); a head that cannot be read is answered here (408, 4xx).
fn read_request(socket: &Socket, peer: SocketAddr, shared: &Shared) -> Option<Head> {
    // Frames and answers are small and latency matters: no Nagle delay.
    let _ = socket.set_nodelay(true);
    let deadline = Instant::now() + shared.config.handshake_timeout;
    if let Err(e) = socket.handshake(deadline) {
        socket::log_failed_handshake("HTTP", peer, &e);
        return None;
    }
    match head::read_head(socket, deadline) {
        Ok(head) => Some(head),
        Err(HeadError::Gone(e)) => {
            log::debug!("{peer} left before its request: {e}");
            None
        }
        Err(HeadError::TimedOut) => {
            log::debug!("{peer} did not finish its request head in time");
            Reply::text(408, "request head not received in time").send(socket, false);
            None
        }
        Err(HeadError::Refused(status, message)) => {
            // An access line, not a warning: access lines are rate-limited, so a
            // client sending garbage cannot flood the log.
            logging::access(format_args!("{peer} refused: {status} {message}"));
            Reply::text(status, &message).send(socket, false);
            None
        }
    }
}

/// A request for a WebSocket endpoint, or one asking to upgrade: the WebSocket side
/// answers it (with 426 when the upgrade headers are missing).
fn wants_websocket(head: &Head) -> bool {
    let path = head.path();
    path == "/echo"
        || path.starts_with("/ws/")
        || head.header("Upgrade").is_some_and(|u| {
            u.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("websocket"))
        })
}
