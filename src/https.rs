//! HTTPS (`--features tls`): TLS in front of tiny_http.
//!
//! tiny_http reads requests from sockets it accepts itself, so it cannot be handed a
//! TLS stream. (Its own `ssl-rustls` feature pins rustls 0.20, which has
//! RUSTSEC-2024-0336.) So with `--tls-cert` the public HTTP port is ours: tiny_http
//! listens on an internal loopback port, and each HTTPS connection is relayed to it:
//!
//! ```text
//!  browser ══TLS══▶ :8080  https-accept: a thread per connection (at most 512)
//!                            │ TLS handshake (within --handshake-timeout)
//!                            ▼
//!                   https:      TLS ─▶ plaintext ─▶ 127.0.0.1:<internal> tiny_http
//!                   https-back: TLS ◀─ plaintext ◀─ (the same connection)
//! ```
//!
//! The relay copies bytes and knows nothing of HTTP, so every endpoint works as on
//! plain HTTP, and each chunk tiny_http sends (an SSE event, a long poll's answer) is
//! encrypted and sent at once. When either side ends, both are closed; a connection
//! with no traffic either way for [`RELAY_IDLE_TIMEOUT`] is closed too (tiny_http's
//! own idle timeout usually ends it first).
//!
//! **Cost**: an HTTPS connection holds two relay threads (128 KiB stacks, mostly
//! untouched), the TLS session, and two extra loopback descriptors, besides tiny_http's
//! own thread for the internal connection. [`MAX_HTTPS_CONNECTIONS`] bounds them.
//!
//! tiny_http sees every request come from loopback, so the relay records which client
//! each internal connection carries ([`Clients`]); the DNS-rebinding guard asks it for
//! the real address.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use crate::http_listener::DEFAULT_WRITE_TIMEOUT;
use crate::limit::{ConnectionLimit, Slot};
use crate::server::Shared;
use crate::stream::log_failed_handshake;
use crate::tls::TlsStream;
use crate::ws::connection::THREAD_STACK_BYTES;
use crate::ws::listener::accept_each;

/// Most HTTPS connections relayed at once (each costs two threads here and one in
/// tiny_http). Beyond it a new connection is closed at once; browsers use about six per
/// site, so this serves some eighty browsers with their SSE streams open.
pub const MAX_HTTPS_CONNECTIONS: usize = 512;
/// A relayed connection with no bytes in either direction this long is closed. Longer
/// than tiny_http's own 60 s idle timeout (which answers `408` first) and than any
/// quiet stretch of a response we hold open (25 s long poll, 15 s SSE keep-alive).
/// Checked when a direction's read times out, so the cut comes within twice this.
pub const RELAY_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Bytes copied per read. A TLS record holds at most 16 KiB; 8 KiB keeps the relay's
/// stacks small.
const RELAY_BUFFER_BYTES: usize = 8 * 1024;

/// Which client each relayed connection carries: the relay's end of the internal
/// connection (the address tiny_http reports as the request's peer) → the client.
#[derive(Debug, Default)]
pub struct Clients(Mutex<HashMap<SocketAddr, SocketAddr>>);

impl Clients {
    /// The client behind an internal connection from `relay`, if it is one of ours.
    pub fn lookup(&self, relay: SocketAddr) -> Option<SocketAddr> {
        self.lock().get(&relay).copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, SocketAddr>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An entry of [`Clients`], removed when the relay ends.
struct Registered<'a> {
    clients: &'a Clients,
    relay: SocketAddr,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.clients.lock().remove(&self.relay);
    }
}

/// Accepts HTTPS connections on the public HTTP port until `shared.stopping` is set
/// (the server then connects once to wake this loop), relaying each to tiny_http at
/// `internal`.
pub fn accept_loop(listener: TcpListener, internal: SocketAddr, shared: Arc<Shared>) {
    let open = ConnectionLimit::new(MAX_HTTPS_CONNECTIONS);
    accept_each(&listener, &shared.stopping, "HTTPS", |socket| {
        let Some(slot) = open.try_acquire() else {
            // Dropping the socket closes it.
            return log::warn!(
                "HTTPS: {MAX_HTTPS_CONNECTIONS} connections open; refusing one more"
            );
        };
        let shared = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name("https".into())
            .stack_size(THREAD_STACK_BYTES)
            .spawn(move || serve(socket, internal, &shared, slot));
        if let Err(e) = spawned {
            log::warn!("cannot start an HTTPS thread: {e}; see README, Capacity");
        }
    });
}

/// One HTTPS connection: the TLS handshake, then the relay until either side ends.
fn serve(socket: TcpStream, internal: SocketAddr, shared: &Shared, _slot: Slot) {
    let Some(certificates) = &shared.tls else {
        return;
    };
    let config = &certificates.current();
    let peer = socket
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let _ = socket.set_nodelay(true);
    let _ = socket.set_write_timeout(Some(DEFAULT_WRITE_TIMEOUT));
    let tls = match TlsStream::new(socket, config) {
        Ok(tls) => tls,
        Err(e) => return log::warn!("cannot start a TLS session: {e}"),
    };
    if let Err(e) = tls.handshake(Instant::now() + shared.config.handshake_timeout) {
        return log_failed_handshake("HTTPS", peer, &e);
    }
    let inner = match TcpStream::connect(internal) {
        Ok(inner) => inner,
        Err(e) => return log::warn!("HTTPS from {peer}: cannot reach tiny_http: {e}"),
    };
    let timeouts = [tls.socket(), &inner].into_iter().try_for_each(|s| {
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(RELAY_IDLE_TIMEOUT))?;
        s.set_write_timeout(Some(DEFAULT_WRITE_TIMEOUT))
    });
    let Ok(relay_addr) = timeouts.and_then(|()| inner.local_addr()) else {
        return;
    };
    shared.https_clients.lock().insert(relay_addr, peer);
    let _registered = Registered {
        clients: &shared.https_clients,
        relay: relay_addr,
    };

    let activity = Activity::new();
    thread::scope(|scope| {
        // Server to client: every chunk tiny_http writes goes out at once, encrypted.
        let back = thread::Builder::new()
            .name("https-back".into())
            .stack_size(THREAD_STACK_BYTES)
            .spawn_scoped(scope, || {
                let result = copy(&inner, &tls, &activity);
                log_end(peer, "tiny_http", &result);
                // The response is complete: say so (close_notify), then end both sides,
                // which also wakes the other direction's read.
                let _ = tls.shutdown(Shutdown::Write);
                let _ = tls.socket().shutdown(Shutdown::Both);
                let _ = inner.shutdown(Shutdown::Both);
            });
        if let Err(e) = back {
            log::warn!("cannot start an HTTPS thread: {e}; see README, Capacity");
            let _ = inner.shutdown(Shutdown::Both);
            return;
        }
        // Client to server, on this thread.
        let result = copy(&tls, &inner, &activity);
        log_end(peer, "client", &result);
        // The client has sent everything: tiny_http may still answer what it has (the
        // other thread carries that). On an error nothing more can reach the client.
        let how = if result.is_ok() {
            Shutdown::Write
        } else {
            Shutdown::Both
        };
        let _ = inner.shutdown(how);
        if result.is_err() {
            let _ = tls.socket().shutdown(Shutdown::Both);
        }
    });
}

/// Copies bytes from `from` to `to` until `from` ends (`Ok`) or either fails. Each
/// chunk is sent on at once. A read that times out ends the copy only when neither
/// direction has moved a byte for [`RELAY_IDLE_TIMEOUT`].
fn copy(mut from: impl Read, mut to: impl Write, activity: &Activity) -> io::Result<()> {
    let mut buf = [0u8; RELAY_BUFFER_BYTES];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                to.write_all(&buf[..n])?;
                to.flush()?;
                activity.touch();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if activity.quiet_for() >= RELAY_IDLE_TIMEOUT {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "idle"));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn log_end(peer: SocketAddr, side: &str, result: &io::Result<()>) {
    match result {
        Ok(()) => log::debug!("HTTPS {peer}: {side} finished"),
        Err(e) => log::debug!("HTTPS {peer}: {side} side ended: {e}"),
    }
}

/// When a relayed connection last moved a byte in either direction.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}
