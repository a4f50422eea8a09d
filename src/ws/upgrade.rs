//! From an upgrade request to a running connection: the handshake checks, the
//! connection limits, the `101` ([`upgrade`]), then the connection's two threads
//! ([`Upgraded::run`]: this thread becomes the reader).
//!
//! The two steps are separate calls on purpose. An idle connection's reader waits
//! for a frame for hours, and every stack page it ever touched stays resident all
//! that time: 4 KiB per page, per connection. When the handshake's work (and the
//! door's, which reads the head) returns before the reader starts, its frames are
//! gone, and the reader waits a page less deep (measured: bench/ANALYSIS.md, idle
//! memory).

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
use crate::hub::ConnId;
use crate::lesson::{self, ConnFigures, Watch};
use crate::logging;
use crate::net::limit::{Slot, WRITE_TIMEOUT};
use crate::net::requests::RequestInProgress;
use crate::net::socket::Socket;

/// An accepted WebSocket connection (its `101` sent), ready to run.
pub struct Upgraded {
    socket: Socket,
    accepted: Accepted,
    head: Head,
    peer: SocketAddr,
    settings: Settings,
    /// Its place among `--max-connections`, held until it ends.
    _slot: Slot,
}

/// Checks the upgrade request `head` and answers it: `101` and the connection to
/// run, or a refusal (`None`). Never inlined, so that none of its stack is under the
/// reader's (see the module's documentation).
#[inline(never)]
pub fn upgrade(
    conn: RequestInProgress,
    head: Head,
    peer: SocketAddr,
    shared: &Shared,
) -> Option<Upgraded> {
    let socket = conn.socket();
    let _ = socket.set_write_timeout(Some(WRITE_TIMEOUT));
    let first_message_auth =
        shared.config.auth == AuthMode::FirstMessage && shared.policy.token_required();
    let checked = admit(&head, peer, socket, shared, first_message_auth);
    let (accepted, (slot, unauthenticated)) = match checked {
        Ok(admitted) => admitted,
        Err(rejection) => {
            refuse(socket, peer, &head, &rejection);
            return None;
        }
    };
    // The handshake is complete: the socket leaves the registry of requests in
    // progress (unless it was cut off meanwhile to make room for newer ones).
    let Some(socket) = conn.finish() else {
        log::debug!("handshake from {peer} was cut off: too many requests in progress");
        return None;
    };
    if let Err(e) = (&socket).write_all(handshake::accept_response(&accepted.accept_key).as_bytes())
    {
        log::debug!("handshake from {peer}: could not send 101: {e}");
        return None;
    }
    Some(Upgraded {
        socket,
        accepted,
        head,
        peer,
        settings: settings(shared, first_message_auth, unauthenticated),
        _slot: slot,
    })
}

/// The request's checks (origin, token, route: see `handshake`), whether it may
/// inspect, and its places among the connections ([`take_slots`]).
fn admit(
    head: &Head,
    peer: SocketAddr,
    socket: &Socket,
    shared: &Shared,
    first_message_auth: bool,
) -> Result<(Accepted, (Slot, Option<Slot>)), Rejection> {
    let checks = Checks {
        policy: &shared.policy,
        peer: peer.ip(),
        token_in_first_message: first_message_auth,
    };
    let accepted = handshake::check(head, &checks)?;
    if accepted.inspect && !inspect_allowed(socket, shared) {
        return Err(Rejection::new(403, NOT_INSPECTABLE));
    }
    Ok((accepted, take_slots(shared, first_message_auth)?))
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
        watch: None,
    }
}

impl Upgraded {
    /// Runs the connection until it ends, with an access line when it opens and one
    /// when it closes.
    pub fn run(self, shared: &Shared) {
        let Upgraded {
            socket,
            accepted,
            head,
            peer,
            settings,
            _slot,
        } = self;
        run(socket, accepted, (&head, peer), shared, settings);
    }
}

/// The body of [`Upgraded::run`].
fn run(
    socket: Socket,
    accepted: Accepted,
    (head, peer): (&Head, SocketAddr),
    shared: &Shared,
    mut settings: Settings,
) {
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    settings.caller = accepted.caller.clone();
    let watch = watch(id, (&accepted, head, peer), shared);
    let _listed = shared.connections.register(&watch.figures);
    settings.watch = Some(Arc::clone(&watch));
    let destination = match accepted.route {
        Route::Echo => Destination::Echo,
        Route::Room { name, raw, resume } => Destination::Room { name, raw, resume },
    };
    let client = client_name(accepted.forwarded_for.as_deref(), peer, shared);
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
    watch.ended(&code);
    logging::access(format_args!(
        "{client} WebSocket {id} closed after {:.1?} (close code {code})",
        opened.elapsed()
    ));
}

/// Who the client is, for the access log. Behind a proxy every connection comes from
/// the proxy; with --trust-proxy we log the client it reports instead. Never trusted
/// by default: anyone can send the header.
fn client_name(forwarded_for: Option<&str>, peer: SocketAddr, shared: &Shared) -> String {
    match forwarded_for {
        Some(forwarded) if shared.config.trust_proxy => format!("{forwarded} (via {peer})"),
        _ => peer.to_string(),
    }
}

/// What a client asking to inspect its connection hears where it may not (403).
pub const NOT_INSPECTABLE: &str =
    "?inspect=1 is allowed on loopback listeners only (start the server with --allow-inspect)";

/// Whether `?inspect=1` is allowed on the listener `socket` came in by: a loopback
/// one, or any with `--allow-inspect`.
fn inspect_allowed(socket: &Socket, shared: &Shared) -> bool {
    socket
        .local_addr()
        .is_ok_and(|local| inspect_allowed_at(local, shared.config.allow_inspect))
}

/// Whether `?inspect=1` is allowed on a listener at `local`: a loopback one, or any
/// with `--allow-inspect`. (An inspector shows the handshake's headers: not for
/// anyone who can reach a public port.)
fn inspect_allowed_at(local: SocketAddr, allow_inspect: bool) -> bool {
    allow_inspect || local.ip().is_loopback()
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

/// How connection `id` is watched (lesson mode), and the handshake's event for its
/// inspector or the console.
fn watch(
    id: ConnId,
    (accepted, head, peer): (&Accepted, &Head, SocketAddr),
    shared: &Shared,
) -> Arc<Watch> {
    let figures = Arc::new(ConnFigures::new(
        id,
        peer.to_string(),
        accepted.route.room(),
    ));
    let watch = Arc::new(Watch {
        id,
        inspect: accepted.inspect,
        narrate: shared.config.lesson,
        figures,
        first_events: std::sync::Mutex::default(),
    });
    if watch.inspect || watch.narrate {
        let line = (
            head.method.as_str(),
            head.target.as_str(),
            head.minor_version,
        );
        let request = lesson::handshake::request_lines(line, &head.headers);
        let answer = handshake::accept_response(&accepted.accept_key);
        let response: Vec<String> = answer
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        watch.narrate(&format!(
            "handshake checked: {} → 101, Sec-WebSocket-Accept {}",
            request[0], accepted.accept_key
        ));
        let accept = lesson::handshake::accept_steps(&accepted.key);
        watch
            .first_events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(lesson::handshake_json(&request, &response, &accept));
    }
    watch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_inspector_is_for_loopback_listeners_unless_allowed() {
        for loopback in ["127.0.0.1:8080", "127.0.0.2:1", "[::1]:8080"] {
            assert!(
                inspect_allowed_at(loopback.parse().unwrap(), false),
                "{loopback}"
            );
        }
        for public in ["10.0.0.5:8080", "192.168.1.2:80", "[2001:db8::1]:443"] {
            let local = public.parse().unwrap();
            assert!(!inspect_allowed_at(local, false), "{public}");
            assert!(
                inspect_allowed_at(local, true),
                "{public} with --allow-inspect"
            );
        }
    }
}
