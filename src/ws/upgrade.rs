//! From an upgrade request to a running connection: the handshake checks, the
//! connection limits, the `101`, then the connection's two threads (this thread
//! becomes the reader).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::connection;
use super::handshake::{self, Accepted, Checks, Rejection, Route};
use super::settings::{Destination, Settings};
use crate::config::AuthMode;
use crate::context::Shared;
use crate::http::head::Head;
use crate::http::reply::close_gently;
use crate::logging;
use crate::net::limit::{Slot, WRITE_TIMEOUT};
use crate::net::requests::RequestInProgress;
use crate::net::socket::Socket;

/// Checks the upgrade request `head`, and on success runs the connection until it
/// ends.
pub fn upgrade(conn: RequestInProgress, head: Head, peer: SocketAddr, shared: &Shared) {
    let socket = conn.socket();
    let _ = socket.set_write_timeout(Some(WRITE_TIMEOUT));
    let first_message_auth =
        shared.config.auth == AuthMode::FirstMessage && shared.policy.token_required();
    let checks = Checks {
        policy: &shared.policy,
        peer: peer.ip(),
        token_in_first_message: first_message_auth,
    };
    let accepted = match handshake::check(&head, &checks) {
        Ok(accepted) => accepted,
        Err(rejection) => return refuse(socket, peer, &head, &rejection),
    };
    let (_slot, unauthenticated) = match take_slots(shared, first_message_auth) {
        Ok(slots) => slots,
        Err(rejection) => return refuse(socket, peer, &head, &rejection),
    };
    // The handshake is complete: the socket leaves the registry of requests in
    // progress (unless it was cut off meanwhile to make room for newer ones).
    let Some(socket) = conn.finish() else {
        log::debug!("handshake from {peer} was cut off: too many requests in progress");
        return;
    };
    if let Err(e) = (&socket).write_all(handshake::accept_response(&accepted.accept_key).as_bytes())
    {
        log::debug!("handshake from {peer}: could not send 101: {e}");
        return;
    }
    let settings = settings(shared, first_message_auth, unauthenticated);
    run(socket, accepted, (&head, peer), shared, settings);
}

/// A place among `--max-connections`, and under `--auth first-message` one in the
/// smaller pool of sockets still waiting to authenticate (so they can never take every
/// slot before showing a token); 503 when there is none, or no memory to spare.
fn take_slots(
    shared: &Shared,
    first_message_auth: bool,
) -> Result<(Slot, Option<Slot>), Rejection> {
    let Some(slot) = shared.limit.try_acquire() else {
        // The limit in force: --max-connections as lowered at start-up to what the
        // machine allows.
        let full = format!("server full: {} connections open", shared.limit.max());
        return Err(Rejection::new(503, full));
    };
    if let Some(busy) = shared.memory_refusal() {
        return Err(Rejection::new(503, busy));
    }
    if !first_message_auth {
        return Ok((slot, None));
    }
    match shared.unauthenticated.try_acquire() {
        Some(waiting) => Ok((slot, Some(waiting))),
        None => Err(Rejection::new(
            503,
            "too many connections waiting to authenticate",
        )),
    }
}

/// The connection's settings, from the server's configuration.
fn settings(shared: &Shared, first_message_auth: bool, unauthenticated: Option<Slot>) -> Settings {
    Settings {
        ping_interval: shared.config.ping_interval,
        pong_timeout: shared.config.pong_timeout,
        max_message_bytes: shared.config.max_message_bytes,
        max_messages_per_second: shared.config.max_messages_per_second,
        send_queue: shared.config.send_queue,
        send_queue_bytes: shared.send_queue_bytes(),
        budget: Arc::clone(&shared.budget),
        handshake_timeout: shared.config.handshake_timeout,
        first_message_auth: first_message_auth.then(|| Arc::clone(&shared.policy)),
        unauthenticated,
        caller: None,
    }
}

/// Runs the accepted connection, with an access line when it opens and one when it
/// closes.
fn run(
    socket: Socket,
    accepted: Accepted,
    (head, peer): (&Head, SocketAddr),
    shared: &Shared,
    mut settings: Settings,
) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    settings.caller = accepted.caller;
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
    logging::access(format_args!("{client} WebSocket {id} open {}", head.path()));
    let opened = Instant::now();
    let hub = shared.hub.clone();
    let counters = Arc::clone(&shared.counters);
    let code = connection::serve(
        id,
        socket,
        accepted.leftover,
        destination,
        hub,
        counters,
        settings,
    );
    let code = code.map_or_else(|| "none".to_string(), |c| c.to_string());
    logging::access(format_args!(
        "{client} WebSocket {id} closed after {:.1?} (close code {code})",
        opened.elapsed()
    ));
}

fn refuse(socket: &Socket, peer: SocketAddr, head: &Head, rejection: &Rejection) {
    // One rate-limited access line (a client could otherwise flood the log).
    logging::access(format_args!(
        "{peer} \"{} {}\" {} {}",
        head.method,
        head.path(),
        rejection.status,
        rejection.message
    ));
    let response = handshake::rejection_response(rejection);
    if (&*socket).write_all(response.as_bytes()).is_ok() {
        close_gently(socket);
    }
}
