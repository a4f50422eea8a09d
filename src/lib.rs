//! # threadcast
//!
//! A small real-time web server with no async runtime, on **one port**: a bundled
//! page and static files ([`tiny_http`], behind our own front door), HTTP endpoints,
//! and WebSocket rooms ([`tungstenite`]) with **one reader thread and one writer
//! thread per connection**. Only the writer ever writes to the socket, so
//! pong replies, close frames and broadcast messages can never interleave on the wire.
//!
//! The library's surface is small: [`Server::start`] with a [`Config`] gives a
//! [`ServerHandle`] (addresses, figures, [`ServerHandle::publish`], shutdown). The
//! rest is the server's inside, written to be read file by file (`docs/ARCHITECTURE.md`
//! has the map). Reading order for a newcomer, following one room message:
//! `src/door.rs` (every connection starts there: limits, the request head, the route),
//! `src/ws/upgrade.rs` and `src/ws/handshake.rs` (the HTTP upgrade),
//! `src/ws/connection.rs` (the two threads of one connection), `src/ws/reader.rs`
//! (frames in), `src/hub/handle.rs` (the one way into the hub), `src/hub/mod.rs` and
//! `src/hub/rooms.rs` (the hub thread: rooms and fan-out), `src/room/` and
//! `src/protocol/envelope.rs` (ids, history, the wire format; see `docs/PROTOCOL.md`),
//! `src/hub/offer.rs` (handing a member its copy without waiting), `src/ws/writer.rs`
//! (the only code that writes to the socket). Then `src/http/` (the HTTP side, SSE and
//! long polling), `src/feed/`, `src/budget/`, `src/net/`, `src/config/`. Optional
//! features: `src/hub/cluster.rs` and `src/redis_link/` (several instances sharing
//! rooms through Redis, `--features redis`), `src/net/tls.rs` (`--features tls`).
//!
//! ## Example
//! Start a server on an ephemeral port, push a message into a room from Rust, stop it:
//! ```
//! use threadcast::{Config, Server};
//!
//! let config = Config {
//!     http_addr: "127.0.0.1:0".parse().unwrap(),
//!     ..Config::default()
//! };
//! let server = Server::start(config).expect("bind a loopback port");
//! println!("page at http://{0}/, WebSocket at ws://{0}/ws/lobby", server.http_addr());
//! // Nobody has joined yet, so the message reaches no one.
//! assert_eq!(server.publish("lobby", "hello").unwrap(), 0);
//! server.shutdown();
//! ```

#![warn(missing_docs)]

pub(crate) mod budget;
pub mod config;
pub(crate) mod context;
pub(crate) mod door;
pub(crate) mod feed;
pub(crate) mod http;
pub(crate) mod hub;
pub(crate) mod latency;
pub(crate) mod lesson;
pub(crate) mod logging;
pub(crate) mod net;
pub(crate) mod protocol;
#[cfg(feature = "redis")]
pub(crate) mod redis_link;
pub(crate) mod room;
pub(crate) mod security;
pub(crate) mod server;
pub(crate) mod store;
pub(crate) mod ws;

// The public surface: what a program that embeds the server needs. Everything else is
// internal (`pub(crate)`); the integration tests reach a few internals through
// `internals` below.
pub use budget::{Budget, Category};
pub use config::{AuthMode, Config, Feed, FeedSource};
pub use server::{DRAIN_TIMEOUT, PublishError, Server, ServerHandle};
pub use tungstenite::Message;

/// Readies the process for serving many connections, as the `threadcast` binary does
/// before [`Server::start`]: memory the budget gives back is returned to the system
/// (large buffers are mapped, not kept in the allocator's arenas), and the open files
/// limit is raised to its hard maximum. Returns that limit when it could be read.
pub fn prepare_process() -> Option<u64> {
    budget::return_large_buffers_to_the_system();
    net::capacity::raise_fd_limit()
}

/// Internals the integration tests reach for: limits they attack, parsers they fuzz.
/// Not part of the API; they change without notice.
#[doc(hidden)]
pub mod internals {
    pub use crate::budget::fixed_overhead;
    pub use crate::door::MAX_REQUESTS_IN_PROGRESS;
    pub use crate::http::body::{Framing, framing};
    pub use crate::http::bounded_body::BODY_BOUND;
    pub use crate::http::head::{Head, MAX_HEAD_BYTES};
    pub use crate::http::static_files::{Lookup, StaticFiles};
    #[cfg(feature = "tls")]
    pub use crate::net::certificates::load_server_config;
    pub use crate::net::spare_threads;
    #[cfg(feature = "tls")]
    pub use crate::net::tls::TlsSocket;
    pub use crate::protocol::{json, url};
    pub use crate::security::{
        AccessPolicy, bearer_token, host_without_port, is_loopback_name, normalize_host,
    };
    pub use crate::server::unauthenticated_pool;
    pub use crate::ws::close::CLOSE_LINGER;
    pub use crate::ws::handshake;
}
