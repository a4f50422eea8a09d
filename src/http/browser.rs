//! What a browser may do on the HTTP endpoints that read or change state
//! (`/publish`, `/events`, `/poll`, `/stats`): the same rules as the WebSocket
//! handshake, plus CORS so that pages on origins the operator allows can use them.
//!
//! 1. **Host** (DNS rebinding): a loopback server answers only to loopback names and
//!    `--allow-host` names ([`AccessPolicy::host_allowed`]).
//! 2. **Origin**: a browser names the page that makes a request in `Origin`. A page
//!    on another site must not publish into our rooms with the user's network
//!    position (a `POST` from a form or `fetch` needs no permission from us to be
//!    *sent*), so a present Origin that the WebSocket rule refuses gets 403.
//! 3. **CORS**: for an origin allowed by `--allow-origin`, answers carry
//!    `Access-Control-Allow-Origin` naming that origin (never `*`, and never with
//!    credentials: the token travels in a header or the query, not a cookie), so the
//!    SSE and polling fallbacks work from a page on another origin. A preflight
//!    (`OPTIONS`) asking to send `Authorization` is answered the same way.

use std::net::SocketAddr;

use super::head::Head;
use super::reply::Reply;
use crate::security::AccessPolicy;

/// How long a browser may cache a preflight answer, in seconds.
pub const PREFLIGHT_MAX_AGE: u32 = 600;
/// Request headers a cross-origin page may send.
pub const ALLOWED_HEADERS: &str = "Authorization, Content-Type, X-Client-Id, Last-Event-ID";

/// The Host and Origin checks.
///
/// # Errors
/// The 403 answer to send instead.
pub fn check(head: &Head, peer: SocketAddr, policy: &AccessPolicy) -> Result<(), Reply> {
    if !policy.host_allowed(head.header("Host"), peer.ip()) {
        // The access line records the 403; this says why, for whoever looks closer.
        log::debug!(
            "refused {} from {peer}: Host not allowed (see --allow-host)",
            head.path()
        );
        return Err(Reply::text(403, "Host not allowed; see --allow-host"));
    }
    if !policy.origin_allowed(head.header("Origin"), head.header("Host")) {
        log::debug!(
            "refused {} from {peer}: Origin not allowed (see --allow-origin)",
            head.path()
        );
        return Err(Reply::text(403, "Origin not allowed; see --allow-origin"));
    }
    Ok(())
}

/// The CORS headers for an answer to this request: empty unless it comes from an
/// origin that `--allow-origin` lists (a same-host page needs none).
pub fn cors_headers(head: &Head, policy: &AccessPolicy) -> Vec<(&'static str, String)> {
    match head.header("Origin") {
        Some(origin) if policy.origin_listed(origin) => vec![
            ("Access-Control-Allow-Origin", origin.to_string()),
            ("Vary", "Origin".to_string()),
        ],
        _ => Vec::new(),
    }
}

/// The answer to a CORS preflight (`OPTIONS`): 204 with the methods and headers a
/// listed origin may use, 403 for anyone else.
pub fn preflight(head: &Head, policy: &AccessPolicy) -> Reply {
    let cors = cors_headers(head, policy);
    if cors.is_empty() {
        return Reply::text(403, "Origin not allowed; see --allow-origin");
    }
    Reply::new(204, "text/plain; charset=utf-8", Vec::new())
        .headers(cors)
        .header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        .header("Access-Control-Allow-Headers", ALLOWED_HEADERS)
        .header("Access-Control-Max-Age", PREFLIGHT_MAX_AGE.to_string())
}
