//! # threadcast
//!
//! A small real-time web server with no async runtime, on **one port**: a bundled
//! page and static files ([`tiny_http`], behind our own front door), HTTP endpoints,
//! and WebSocket rooms ([`tungstenite`]) with **one reader thread and one writer
//! thread per connection**. Only the writer ever writes to the socket, so
//! pong replies, close frames and broadcast messages can never interleave on the wire.
//!
//! Reading order for a newcomer: [`config`] (what can be set), [`server`] (start and
//! stop), [`door`] (every connection starts there: limits, the request head, the
//! route), [`ws::handshake`] (the HTTP upgrade), [`ws::connection`] (the two threads
//! of one connection: ping/pong, close, the single writer), [`hub`] (rooms and
//! fan-out, slow consumers), [`room`] and [`protocol::envelope`] (ids, history, the wire
//! format; see `docs/PROTOCOL.md`), [`http`], [`http::sse`] and [`http::poll`] (the HTTP side
//! and the fallback transports), [`feed`] (live feeds). Optional features:
//! [`hub::cluster`] and `redis_link` (several instances sharing rooms through Redis,
//! `--features redis`), `tls` and [`net::socket`] (`--features tls`).
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

pub mod budget;
pub mod config;
pub mod context;
pub mod door;
pub mod feed;
pub mod http;
pub mod hub;
pub mod latency;
pub mod logging;
pub mod net;
pub mod protocol;
#[cfg(feature = "redis")]
pub mod redis_link;
pub mod room;
pub mod security;
pub mod server;
pub mod ws;

pub use config::Config;
pub use server::{PublishError, Server, ServerHandle};
pub use tungstenite::Message;
