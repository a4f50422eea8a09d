//! Starting and stopping the whole server: the listener (and the optional
//! WebSocket-only one), the file server behind the door, the hub, and the state they
//! share ([`Shared`], in `context.rs`).
//!
//! - this file: [`Server::start`], the order things start in;
//! - `listeners.rs`: binding, and an accept loop per listener;
//! - `setup.rs`: the memory budget, the Redis link, TLS, the `listening` line;
//! - `running.rs`: the [`ServerHandle`] and the order things stop in.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Instant;

use crate::config::Config;
use crate::door::MAX_REQUESTS_IN_PROGRESS;
use crate::feed::Feeds;
use crate::http::files::FileServer;
use crate::hub::{self, Counters, LinkEnd};
use crate::net::capacity;
use crate::net::limit::ConnectionLimit;
use crate::net::per_address::PerAddress;
use crate::net::requests::RequestsInProgress;
use crate::room::HistoryLimits;
use crate::security::AccessPolicy;
use crate::store::Store;

mod listeners;
mod running;
mod setup;

pub use crate::context::Shared;
pub use crate::hub::DRAIN_TIMEOUT;
use listeners::Listeners;
pub use running::{PublishError, ServerHandle};
pub use setup::unauthenticated_pool;
use setup::{announce, memory_budget, start_link};

/// Entry point of the library: `Server::start(config)`.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Binds the listener (and the `--ws` one, if any), starts the file server, the
    /// hub and the accept loops, and returns a handle. Binding happens before this
    /// returns, so the handle's addresses are ready to connect to (use port 0 for an
    /// ephemeral port).
    ///
    /// # Errors
    /// When a listener cannot be bound (address in use, no permission), or the TLS
    /// certificate or key cannot be used.
    pub fn start(config: Config) -> io::Result<ServerHandle> {
        #[cfg(feature = "tls")]
        let tls = setup::load_tls(&config)?;
        #[cfg(not(feature = "tls"))]
        if config.uses_tls() {
            return Err(io::Error::other(
                "TLS was asked for, but this build has no TLS support: rebuild with --features tls",
            ));
        }
        let store = setup::open_store(&config)?;
        let listeners = Listeners::bind(&config)?;
        let files = Arc::new(FileServer::start(&config.public_dir)?);
        // The link needs the hub's handle before the hub starts: the channel first.
        let (hub_handle, hub_commands) = hub::channel();
        let (link, link_thread) = start_link(&config, &hub_handle)?;
        let mut shared = shared_state(config, hub_handle, &listeners, link.as_ref());
        shared.store = store.as_ref().map(Store::figures);
        #[cfg(feature = "tls")]
        let shared = Shared { tls, ..shared };
        let shared = Arc::new(shared);

        let setup = hub::Setup {
            limits: HistoryLimits {
                messages: shared.config.history,
                bytes: shared.config.history_bytes(shared.budget.limit()),
            },
            max_idle_rooms: shared.config.max_idle_rooms,
            ttl: shared.config.history_ttl,
            store,
        };
        let (counters, budget) = (Arc::clone(&shared.counters), Arc::clone(&shared.budget));
        let hub = hub::spawn(hub_commands, counters, setup, link, budget);
        let feeds = Feeds::start(&shared);
        let accept = listeners.open_doors(&shared, &files)?;
        announce(&shared);
        Ok(ServerHandle {
            shared,
            hub: Some(hub),
            link: link_thread,
            feeds,
            accept,
            files,
        })
    }
}

/// The state every transport shares, with the connection limit fitted to what this
/// machine allows and the memory budget set up.
fn shared_state(
    config: Config,
    hub: hub::Handle,
    listeners: &Listeners,
    link: Option<&LinkEnd>,
) -> Shared {
    let max_connections = capacity::fit_max_connections(config.max_connections);
    let budget = memory_budget(&config, max_connections, &hub);
    Shared {
        policy: Arc::new(AccessPolicy::new(&config)),
        limit: ConnectionLimit::new(max_connections),
        unauthenticated: ConnectionLimit::new(unauthenticated_pool(max_connections)),
        per_ip: PerAddress::new(config.max_connections_per_ip),
        in_progress: RequestsInProgress::new(MAX_REQUESTS_IN_PROGRESS),
        config,
        hub,
        counters: Arc::new(Counters::default()),
        budget,
        stopping: AtomicBool::new(false),
        http_addr: listeners.http_addr,
        ws_addr: listeners.ws_addr,
        started: Instant::now(),
        next_id: AtomicU64::new(1),
        link: link.map(|l| Arc::clone(&l.status)),
        store: None,
        connections: crate::lesson::Registry::default(),
        #[cfg(feature = "tls")]
        tls: None,
    }
}
