//! The state every transport needs, in one place below them: the configuration, the
//! access policy, the hub's command channel, the counters, the limits and the memory
//! budget ([`Shared`]), and how an HTTP client joins a room ([`HttpMember`]).
//!
//! `server.rs` builds it at start-up; the door, the WebSocket side, the HTTP side and
//! the feeds read it. It imports nothing above it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crate::budget::Budget;
use crate::config::Config;
use crate::hub::cluster::LinkStatus;
use crate::hub::{self, CloseSignal, Counters, Member, Membership, QueueEnd};
use crate::net::limit::ConnectionLimit;
use crate::net::per_address::PerAddress;
use crate::net::requests::RequestsInProgress;
use crate::protocol::person::Person;
use crate::room::Resume;
use crate::security::AccessPolicy;

/// State every thread of the server can see. Immutable settings plus atomics and
/// channels; the room table itself lives only in the hub thread.
#[derive(Debug)]
pub struct Shared {
    /// The configuration the server started with.
    pub config: Config,
    /// Origin and token rules.
    pub policy: Arc<AccessPolicy>,
    /// The way into the hub.
    pub hub: hub::Handle,
    /// Message and disconnect counters.
    pub counters: Arc<Counters>,
    /// The memory budget (`--memory-limit`) every large buffer is charged to.
    pub budget: Arc<Budget>,
    /// Open connections against `--max-connections`.
    pub limit: Arc<ConnectionLimit>,
    /// `--auth first-message`: sockets that have not shown their token yet.
    pub unauthenticated: Arc<ConnectionLimit>,
    /// Connections per client address (`--max-connections-per-ip`).
    pub per_ip: Arc<PerAddress>,
    /// Requests whose head, body or answer is still under way.
    pub in_progress: Arc<RequestsInProgress>,
    /// Set once shutdown begins; accept loops stop when they see it.
    pub stopping: AtomicBool,
    /// The listener's real address (port 0 resolved).
    pub http_addr: SocketAddr,
    /// Where WebSockets are served: the extra `--ws` listener's address, or
    /// `http_addr` when one port serves everything.
    pub ws_addr: SocketAddr,
    /// When the server started, for `/stats`.
    pub started: Instant,
    /// Next connection id.
    pub next_id: AtomicU64,
    /// The Redis link's figures, when rooms are shared with other instances.
    pub link: Option<Arc<LinkStatus>>,
    /// The TLS settings of the listeners, when `--tls-cert` is given.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::net::certificates::Certificates>,
    /// Every WebSocket connection's own figures (`/stats?connections=1`).
    pub connections: crate::lesson::Registry,
    /// The store's figures, with `--data-dir`.
    pub store: Option<Arc<crate::store::StoreFigures>>,
}

/// An HTTP client in a room (SSE stream or long poll): its place in the hub (left
/// when dropped), the queue the hub fills for it and the hub's close requests.
pub struct HttpMember {
    /// Its place in the room.
    pub membership: Membership,
    /// What the hub sends it.
    pub queue: QueueEnd,
    /// Where the hub asks it to close (shutdown, slow consumer).
    pub close: Arc<CloseSignal>,
}

impl Shared {
    /// Joins `room` as an enveloped member starting at `resume`; `None` when the hub
    /// has stopped (the server is shutting down).
    /// `person` is who it is; a stream (`listed`) counts in the room's presence, a
    /// long poll, a member only while its request waits, does not.
    pub fn join(
        &self,
        room: &str,
        resume: Resume,
        (person, listed): (Option<Arc<Person>>, bool),
    ) -> Option<HttpMember> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (mut member, queue) = Member::new(
            self.config.send_queue,
            self.send_queue_bytes(),
            false,
            &self.counters,
        );
        (member.person, member.listed) = (person, listed);
        let close = Arc::clone(&member.close);
        let membership = self.hub.join(id, Some(room.to_string()), member, resume)?;
        Some(HttpMember {
            membership,
            queue,
            close,
        })
    }
}

impl Shared {
    /// Bytes one connection may have queued before it is a slow consumer.
    pub fn send_queue_bytes(&self) -> usize {
        self.config.send_queue_bytes(self.budget.limit())
    }

    /// Why a new connection must wait (503) because the memory budget is nearly used
    /// up; `None` when there is room. A refusal is counted.
    pub fn memory_refusal(&self) -> Option<&'static str> {
        self.budget.is_high().then(|| {
            self.budget.count_refusal();
            "server busy: its memory budget is nearly used up; try again later"
        })
    }
}
