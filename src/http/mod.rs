//! The plain-HTTP side of the one port: what the door does with a request that is not
//! a WebSocket upgrade. Every request is served on its connection's own thread, within
//! deadlines, and answered with `Connection: close`.
//!
//! | request | answered by |
//! |---|---|
//! | `GET /healthz`, `/config.json`, `/stats` | [`endpoints`] |
//! | `GET /metrics` (Prometheus) | [`metrics`] |
//! | `POST /publish/<room>`, `POST /publish?room=…` | [`publish`] |
//! | `GET /rooms`, `GET /presence/<room>`, `DELETE /rooms/<room>`, `POST /disconnect/<sub>` (the operator's API) | [`operator`] |
//! | `GET /events/<room>` (SSE), `GET /poll/<room>` | [`crate::http::sse`], [`crate::http::poll`] |
//! | `OPTIONS` on those (CORS preflight) | [`browser`] |
//! | any other `GET`/`HEAD` | [`files`]: tiny_http behind the door |
//!
//! Reading order: [`head`] (the request head, bounded), [`body`] (the body, its length
//! checked first), [`reply`] (answers), [`browser`] (Host, Origin and CORS rules),
//! [`endpoints`], [`files`].

pub mod body;
pub mod bounded_body;
pub mod browser;
pub mod endpoints;
pub mod files;
pub mod head;
pub mod metrics;
pub mod operator;
pub mod poll;
pub mod publish;
pub mod reply;
pub mod response_head;
pub mod sse;
pub mod static_files;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::context::Shared;
use crate::logging;
use crate::net::requests::RequestInProgress;
use files::FileServer;
use head::Head;
use reply::Reply;

/// Where the HTTP fallbacks, publishing and the operator's API live; these paths get
/// the browser rules.
pub const GUARDED_PREFIXES: [&str; 6] = [
    "/publish",
    "/events/",
    "/poll/",
    "/rooms",
    "/presence/",
    "/disconnect/",
];

/// The operator's API (`src/http/operator.rs`).
const OPERATOR_PREFIXES: [&str; 3] = ["/rooms", "/presence/", "/disconnect/"];

/// One HTTP request on its connection's thread: the head is read, the socket still
/// registered as "in progress" (so shutdown and the in-progress ceiling can cut it).
pub struct Exchange<'a> {
    /// The request head.
    pub head: Head,
    /// The connection, until it is answered or becomes a long-lived stream.
    pub conn: RequestInProgress,
    /// The client's address.
    pub peer: SocketAddr,
    /// The server's shared state.
    pub shared: &'a Arc<Shared>,
}

impl Exchange<'_> {
    /// Answers with `reply`, logs the access line, and closes the connection.
    pub fn answer(self, reply: Reply) {
        self.log(reply.status);
        reply.send(self.conn.socket(), self.head.is_head());
    }

    /// One access line: client, method, path (never the query: it may hold a token),
    /// status.
    pub fn log(&self, status: u16) {
        logging::access(format_args!(
            "{} \"{} {}\" {status}",
            self.client(),
            self.head.method,
            self.head.path()
        ));
    }

    /// Who made the request: the peer, or with `--trust-proxy` the client the proxy
    /// reports in `X-Forwarded-For`.
    pub fn client(&self) -> String {
        let forwarded = crate::security::forwarded_client(self.head.header("X-Forwarded-For"));
        match forwarded {
            Some(client) if self.shared.config.trust_proxy => {
                format!("{client} (via {})", self.peer)
            }
            _ => self.peer.to_string(),
        }
    }
}

/// Serves one request that is not a WebSocket upgrade.
pub fn serve(exchange: Exchange, files: &FileServer) {
    let path = exchange.head.path().to_string();
    let guarded = path == "/stats"
        || path == "/metrics"
        || GUARDED_PREFIXES.iter().any(|p| path.starts_with(p));
    if guarded {
        if let Err(reply) = browser::check(&exchange.head, exchange.peer, &exchange.shared.policy) {
            return exchange.answer(reply);
        }
    }
    // Every request's body framing is checked before anything else, whether or not
    // the endpoint reads a body: two framings at once (request smuggling), a bad or
    // oversized length. A body an endpoint does not read is never read at all.
    if let Err(e) = body::framing(&exchange.head, exchange.shared.config.max_message_bytes) {
        if let Some((status, message)) = e.status() {
            // A listed origin's page may read why (413, 400).
            let cors = browser::cors_headers(&exchange.head, &exchange.shared.policy);
            return exchange.answer(Reply::text(status, &message).headers(cors));
        }
    }
    let method = exchange.head.method.as_str();
    let read_only = matches!(method, "GET" | "HEAD");
    match (method, path.as_str()) {
        ("OPTIONS", p) if GUARDED_PREFIXES.iter().any(|g| p.starts_with(g)) => {
            let reply = browser::preflight(&exchange.head, &exchange.shared.policy);
            exchange.answer(reply)
        }
        ("POST", p) if p == "/publish" || p.starts_with("/publish/") => publish::publish(exchange),
        (_, p) if OPERATOR_PREFIXES.iter().any(|o| p.starts_with(o)) => {
            let reply = operator::answer(&exchange.head, exchange.shared);
            exchange.answer(reply)
        }
        (_, p) if p.starts_with("/publish") => exchange
            .answer(Reply::text(405, "use POST to publish").header("Allow", "POST, OPTIONS")),
        (_, p) if read_only && p.starts_with("/events/") => crate::http::sse::start(exchange),
        (_, p) if read_only && p.starts_with("/poll/") => crate::http::poll::start(exchange),
        (_, "/healthz") if read_only => {
            let reply = endpoints::health(exchange.shared);
            exchange.answer(reply)
        }
        (_, "/config.json") if read_only => {
            let reply = endpoints::config_json(&exchange.head, exchange.shared);
            exchange.answer(reply)
        }
        (_, "/stats") if read_only => {
            let reply = endpoints::stats(&exchange.head, exchange.shared);
            exchange.answer(reply)
        }
        (_, "/metrics") if read_only => {
            let reply = metrics::metrics(&exchange.head, exchange.shared);
            exchange.answer(reply)
        }
        _ if read_only => serve_file(exchange, files),
        _ => exchange.answer(Reply::text(405, "method not allowed").header("Allow", "GET, HEAD")),
    }
}

/// A static file, through tiny_http behind the door.
fn serve_file(exchange: Exchange, files: &FileServer) {
    let deadline = Instant::now() + reply::ANSWER_TIMEOUT;
    let socket = exchange.conn.socket();
    match files.serve(
        socket,
        exchange.head.path(),
        exchange.head.is_head(),
        deadline,
    ) {
        Ok(status) => {
            exchange.log(status);
            reply::close_gently(socket);
        }
        Err(e) => {
            log::debug!(
                "file {} not delivered to {}: {e}",
                exchange.head.path(),
                exchange.peer
            );
            exchange.log(503);
        }
    }
}
