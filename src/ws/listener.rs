//! The accept loop: one thread takes connections from the WebSocket listener and
//! gives each its own thread, which performs the handshake (TLS first, with
//! `--tls-cert`) and then becomes the connection's reader.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::connection::{self, Destination, Settings, THREAD_STACK_BYTES, WRITE_TIMEOUT};
use super::handshake::{self, Checks, ReadError, Rejection, Route};
use crate::config::AuthMode;
use crate::limit::{PendingHandshake, PendingHandshakes};
use crate::server::Shared;
use crate::stream::{self, Stream};

/// Pause after `accept` fails for lack of file descriptors (EMFILE/ENFILE), so the loop
/// does not spin while connections finish and free some.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Most handshakes in progress at once (each holds a thread and a socket for up to
/// `--handshake-timeout`). Far above what real clients need, since each finishes within
/// a round trip; beyond it the oldest is cut off (see [`PendingHandshakes`]), so a
/// slowloris flood cannot exhaust threads or descriptors nor lock out real clients.
pub const MAX_PENDING_HANDSHAKES: usize = 512;

/// Accepts connections until `shared.stopping` is set (the server then connects to the
/// listener once to wake this loop).
pub fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let pending = PendingHandshakes::new(MAX_PENDING_HANDSHAKES);
    accept_each(&listener, &shared.stopping, "WebSocket", |stream| {
        let stream = match wrap(stream, &shared) {
            Ok(stream) => stream,
            Err(e) => return log::warn!("cannot start a TLS session: {e}"),
        };
        let handshake = pending.admit(stream);
        let shared_for_thread = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name("ws-read".into())
            .stack_size(THREAD_STACK_BYTES)
            .spawn(move || handle(handshake, &shared_for_thread));
        if let Err(e) = spawned {
            // Out of threads (pid_max, ulimit -u, memory): the socket is dropped.
            log::warn!("cannot start a connection thread: {e}; see README, Capacity");
        }
    });
}

/// Accepts connections until `stopping` is set (the server then connects to the
/// listener once to wake the loop) and hands each to `each`. A failed accept is logged
/// and skipped; when descriptors have run out, the loop pauses for ACCEPT_BACKOFF
/// instead of spinning while connections finish and free some.
pub fn accept_each(
    listener: &TcpListener,
    stopping: &AtomicBool,
    what: &str,
    mut each: impl FnMut(TcpStream),
) {
    for stream in listener.incoming() {
        if stopping.load(Ordering::Acquire) {
            break;
        }
        match stream {
            Ok(stream) => each(stream),
            Err(e) => {
                log::warn!("{what} accept failed: {e}");
                if is_out_of_descriptors(&e) {
                    thread::sleep(ACCEPT_BACKOFF);
                }
            }
        }
    }
}

/// Plain TCP, or a TLS session whose handshake the connection's own thread performs
/// (never this loop: a slow client must not hold up the others).
fn wrap(socket: TcpStream, shared: &Shared) -> io::Result<Stream> {
    #[cfg(feature = "tls")]
    if let Some(certificates) = &shared.tls {
        return crate::tls::TlsStream::new(socket, &certificates.current())
            .map(|tls| Stream::Tls(Box::new(tls)));
    }
    let _ = shared;
    Ok(Stream::Plain(socket))
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE (24): this process; ENFILE (23): the whole system.
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// Handshake, admission, then the connection's whole life.
fn handle(pending: PendingHandshake, shared: &Shared) {
    let stream = pending.stream();
    let peer = stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    // Frames are small and latency matters: send each flush at once (no Nagle delay).
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));

    let deadline = Instant::now() + shared.config.handshake_timeout;
    // With TLS, the TLS handshake comes first, within the same deadline.
    if let Err(e) = stream.handshake(deadline) {
        return stream::log_failed_handshake("WebSocket", peer, &e);
    }
    let (buf, head_len) = match handshake::read_request(stream, deadline) {
        Ok(read) => read,
        Err(ReadError::Gone(e)) => {
            log::debug!("handshake from {peer} abandoned: {e}");
            return;
        }
        Err(ReadError::Refused(rejection)) => return refuse(stream, peer, &rejection),
    };
    let checks = Checks {
        policy: &shared.policy,
        http_port: shared.http_addr.port(),
        peer: peer.ip(),
        token_in_first_message: shared.config.auth == AuthMode::FirstMessage,
    };
    let accepted = match handshake::check(&buf, head_len, &checks) {
        Ok(accepted) => accepted,
        Err(rejection) => return refuse(stream, peer, &rejection),
    };
    let Some(_slot) = shared.limit.try_acquire() else {
        let message = format!(
            "server full: {} connections open",
            shared.config.max_connections
        );
        return refuse(
            stream,
            peer,
            &Rejection {
                status: 503,
                message,
            },
        );
    };
    // The handshake is complete: the socket leaves the pending registry (unless it was
    // cut off meanwhile to make room for newer handshakes).
    let Some(stream) = pending.finish() else {
        log::debug!("handshake from {peer} was cut off: too many in progress");
        return;
    };
    if let Err(e) = (&stream).write_all(handshake::accept_response(&accepted.accept_key).as_bytes())
    {
        log::debug!("handshake from {peer}: could not send 101: {e}");
        return;
    }

    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let destination = match accepted.route {
        Route::Echo => Destination::Echo,
        Route::Room { name, raw, resume } => Destination::Room { name, raw, resume },
    };
    // Behind a proxy every connection comes from the proxy; with --trust-proxy we log
    // the client it reports instead. Never trusted by default: anyone can send the header.
    let client = match accepted.forwarded_for {
        Some(forwarded) if shared.config.trust_proxy => format!("{forwarded} (via {peer})"),
        _ => peer.to_string(),
    };
    log::debug!("connection {id} from {client}: open ({destination:?})");
    let settings = Settings {
        ping_interval: shared.config.ping_interval,
        pong_timeout: shared.config.pong_timeout,
        max_message_bytes: shared.config.max_message_bytes,
        send_queue: shared.config.send_queue,
        handshake_timeout: shared.config.handshake_timeout,
        first_message_auth: (shared.config.auth == AuthMode::FirstMessage
            && shared.policy.token_required())
        .then(|| Arc::clone(&shared.policy)),
    };
    connection::serve(
        id,
        stream,
        accepted.leftover,
        destination,
        shared.hub.clone(),
        Arc::clone(&shared.counters),
        settings,
    );
    log::debug!("connection {id} from {client}: finished");
}

fn refuse(stream: &Stream, peer: SocketAddr, rejection: &Rejection) {
    log::warn!(
        "refused WebSocket handshake from {peer}: {} {}",
        rejection.status,
        rejection.message
    );
    let _ = (&*stream).write_all(handshake::rejection_response(rejection).as_bytes());
}
