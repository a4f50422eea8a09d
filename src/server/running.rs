//! A running server ([`ServerHandle`]): its addresses and figures, publishing from
//! Rust code, and stopping — the accept loops first, then requests in progress, then
//! the hub, which asks every connection to close within one drain deadline.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tungstenite::Message;

use super::listeners::wake_address;
use crate::budget::{self, Budget, Category};
use crate::context::Shared;
use crate::feed::Feeds;
use crate::http::files::FileServer;
use crate::hub::DRAIN_TIMEOUT;
use crate::protocol::url::is_room;
use crate::room::Tag;

/// A running server. Dropping it shuts the server down (see [`ServerHandle::shutdown`]).
pub struct ServerHandle {
    pub(super) shared: Arc<Shared>,
    pub(super) hub: Option<JoinHandle<()>>,
    pub(super) link: Option<JoinHandle<()>>,
    pub(super) feeds: Feeds,
    /// Each listener's address and accept loop.
    pub(super) accept: Vec<(SocketAddr, JoinHandle<()>)>,
    pub(super) files: Arc<FileServer>,
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("http_addr", &self.shared.http_addr)
            .field("ws_addr", &self.shared.ws_addr)
            .finish_non_exhaustive()
    }
}

/// Why [`ServerHandle::publish`] could not deliver.
#[derive(Debug, PartialEq, Eq)]
pub enum PublishError {
    /// Room names are 1–64 characters of `[A-Za-z0-9_-]`.
    InvalidRoom,
    /// The server is shutting down.
    Stopped,
    /// The memory budget cannot take the message, even after the hub freed what it
    /// could (what a client would get as 503 or close 1013).
    Busy,
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::InvalidRoom => f.write_str(crate::protocol::url::BAD_ROOM),
            PublishError::Stopped => write!(f, "the server is shutting down"),
            PublishError::Busy => write!(f, "the server's memory budget is used up"),
        }
    }
}

impl std::error::Error for PublishError {}

impl ServerHandle {
    /// Reads the TLS certificate and key files again (`--tls-cert`, `--tls-key`; the
    /// binary does this on SIGHUP): connections accepted from now on get the new pair,
    /// open ones keep theirs. Returns `false` when the server does not use TLS.
    ///
    /// # Errors
    /// When the files do not hold a usable pair; the pair in use stays.
    pub fn reload_tls(&self) -> io::Result<bool> {
        #[cfg(feature = "tls")]
        if let Some(certificates) = &self.shared.tls {
            certificates.reload()?;
            log::info!("TLS certificate and key reloaded");
            return Ok(true);
        }
        Ok(false)
    }

    /// The listener's bound address: page, files, HTTP endpoints and WebSockets.
    pub fn http_addr(&self) -> SocketAddr {
        self.shared.http_addr
    }

    /// Where WebSockets are served: the extra `--ws` listener if there is one, else
    /// the same address as [`http_addr`](Self::http_addr).
    pub fn ws_addr(&self) -> SocketAddr {
        self.shared.ws_addr
    }

    /// Connections open right now: WebSockets, SSE streams and waiting long polls.
    pub fn connections(&self) -> usize {
        self.shared.limit.open()
    }

    /// The memory budget the server charges its large buffers to (see
    /// [`crate::Budget`]): its limit, what is used by category, what was refused.
    pub fn budget(&self) -> &Arc<Budget> {
        &self.shared.budget
    }

    /// Members of `room` right now (0 for a room that does not exist). Asks the hub,
    /// so a join that completed before this call is counted.
    pub fn members(&self, room: &str) -> usize {
        let rooms = self.shared.hub.stats().unwrap_or_default();
        rooms
            .into_iter()
            .find(|r| r.name == room)
            .map_or(0, |r| r.members)
    }

    /// Broadcasts `message` into `room` from Rust code, exactly as if a client had
    /// sent it. Returns the number of members it was queued to.
    ///
    /// # Errors
    /// [`PublishError::InvalidRoom`] for a bad name, [`PublishError::Stopped`] after
    /// shutdown began, [`PublishError::Busy`] when the memory budget cannot take it.
    pub fn publish(&self, room: &str, message: impl Into<Message>) -> Result<usize, PublishError> {
        if !is_room(room) {
            return Err(PublishError::InvalidRoom);
        }
        let message = message.into();
        let cost = message.len() + crate::room::MESSAGE_OVERHEAD_BYTES;
        let charge = self
            .shared
            .budget
            .reserve_within(Category::Messages, cost, budget::RECLAIM_WAIT)
            .ok_or(PublishError::Busy)?;
        self.shared
            .counters
            .messages_in
            .fetch_add(1, Ordering::Relaxed);
        let published =
            self.shared
                .hub
                .publish(room.to_string(), (message, charge), Tag::default());
        published
            .map(|published| published.delivered)
            .map_err(|_| PublishError::Stopped)
    }

    /// Graceful shutdown: stop accepting, cut off requests still in progress, send
    /// every WebSocket client close 1001 (going away) and every SSE stream
    /// `event: close`, and wait for them to finish — all within one deadline,
    /// [`DRAIN_TIMEOUT`] from the call. Returns true if every connection finished in
    /// time.
    pub fn shutdown(mut self) -> bool {
        self.stop()
    }

    fn stop(&mut self) -> bool {
        if self.shared.stopping.swap(true, Ordering::AcqRel) {
            return true; // already stopped
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        // Each accept loop is blocked in accept(): one connection wakes it to see the flag.
        for (addr, accept) in self.accept.drain(..) {
            let _ = TcpStream::connect_timeout(&wake_address(addr), Duration::from_secs(1));
            let _ = accept.join();
        }
        // Heads and bodies still arriving, answers still being written: cut off now.
        self.shared.in_progress.cut_all();
        // The hub asks every member to close and answers their leaving until the
        // deadline; the feeds stop meanwhile.
        self.shared.hub.shutdown(deadline);
        self.feeds.stop();
        if let Some(hub) = self.hub.take() {
            let _ = hub.join();
        }
        // The hub has let go of the link, which now closes its Redis connections.
        if let Some(link) = self.link.take() {
            let _ = link.join();
        }
        // The hub has waited for the connections to leave; their threads end right after.
        let left = deadline.saturating_duration_since(Instant::now());
        let drained = self.shared.limit.wait_idle(left);
        self.files.stop();
        log::info!(
            "shut down ({})",
            if drained {
                "all connections closed"
            } else {
                "some connections still closing"
            }
        );
        drained
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}
