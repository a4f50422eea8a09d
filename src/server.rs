//! Starting and stopping the whole server: the listener (and the optional
//! WebSocket-only one), the file server behind the door, the hub, and the state they
//! share ([`Shared`], in `context.rs`).

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tungstenite::Message;

use crate::budget::{self, Budget, Category, Size, Source};
use crate::config::Config;
use crate::door::{self, MAX_REQUESTS_IN_PROGRESS, Serves};
use crate::feed::Feeds;
use crate::http::files::FileServer;
use crate::hub::{self, Counters, LinkEnd};
use crate::net::capacity;
use crate::net::limit::{ConnectionLimit, PerAddress, RequestsInProgress};
use crate::protocol::url::is_room_name;
use crate::room::HistoryLimits;
use crate::security::AccessPolicy;

pub use crate::context::{HttpMember, Shared};
pub use crate::hub::DRAIN_TIMEOUT;

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
        let tls = load_tls(&config)?;
        #[cfg(not(feature = "tls"))]
        if config.uses_tls() {
            return Err(io::Error::other(
                "TLS was asked for, but this build has no TLS support: rebuild with --features tls",
            ));
        }
        let http_listener = bind("--http", config.http_addr)?;
        let ws_listener = config.ws_addr.map(|addr| bind("--ws", addr)).transpose()?;
        let http_addr = http_listener.local_addr()?;
        let ws_addr = match &ws_listener {
            Some(listener) => listener.local_addr()?,
            None => http_addr,
        };
        let files = Arc::new(FileServer::start(&config.public_dir)?);

        let (hub_tx, hub_rx) = hub::channel();
        let (link, link_thread) = start_link(&config, &hub_tx)?;
        let counters = Arc::new(Counters::default());
        let max_connections = capacity::fit_max_connections(config.max_connections);
        let (budget, budget_source) = memory_budget(&config, max_connections, &hub_tx);
        let limit = budget.limit();
        let shared = Arc::new(Shared {
            policy: Arc::new(AccessPolicy::new(&config)),
            limit: ConnectionLimit::new(max_connections),
            unauthenticated: ConnectionLimit::new(unauthenticated_pool(max_connections)),
            per_ip: PerAddress::new(config.max_connections_per_ip),
            in_progress: RequestsInProgress::new(MAX_REQUESTS_IN_PROGRESS),
            config,
            hub: hub_tx,
            counters: Arc::clone(&counters),
            budget: Arc::clone(&budget),
            budget_source,
            stopping: AtomicBool::new(false),
            http_addr,
            ws_addr,
            started: Instant::now(),
            next_id: AtomicU64::new(1),
            link: link.as_ref().map(|l| Arc::clone(&l.status)),
            #[cfg(feature = "tls")]
            tls,
        });

        let limits = HistoryLimits {
            messages: shared.config.history,
            bytes: shared.config.history_bytes(limit),
        };
        let hub = hub::spawn(hub_rx, counters, limits, link, budget);
        let feeds = Feeds::start(&shared);
        let mut accept = vec![spawn_door(
            http_listener,
            &shared,
            Serves::Everything,
            &files,
        )?];
        if let Some(listener) = ws_listener {
            accept.push(spawn_door(
                listener,
                &shared,
                Serves::WebSocketsOnly,
                &files,
            )?);
        }
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

/// The memory budget: `--memory-limit`, or the machine's default; the hub is asked to
/// free memory when a reader finds it short. Logged with the limits derived from it.
fn memory_budget(
    config: &Config,
    max_connections: usize,
    hub: &hub::Handle,
) -> (Arc<Budget>, Source) {
    let (limit, source) = match config.memory_limit {
        Some(limit) => (limit, Source::Flag),
        None => budget::machine_limit(),
    };
    let budget = Budget::new(limit);
    let reclaim = hub.clone();
    budget.set_reclaimer(move || reclaim.reclaim());
    log::info!(
        "memory budget {} ({source}), beside a fixed {} for {max_connections} connections; \
         each room's history up to {}, each connection's queue up to {}",
        Size(limit),
        Size(budget::fixed_overhead(max_connections)),
        Size(config.history_bytes(limit)),
        Size(config.send_queue_bytes(limit)),
    );
    (budget, source)
}

/// Says where the server listens (a script reads the `listening` line).
fn announce(shared: &Shared) {
    let (http_addr, ws_addr) = (shared.http_addr, shared.ws_addr);
    let scheme = if shared.config.uses_tls() {
        log::info!("TLS on every listener: https:// and wss://");
        "https"
    } else {
        "http"
    };
    log::info!("listening http={http_addr} ws={ws_addr}");
    log::info!("open {scheme}://{}/", browsable(http_addr));
}

/// The pool of WebSockets still waiting to authenticate (`--auth first-message`): an
/// eighth of the connections, at least 16. A token arrives within a round trip of the
/// handshake, so few honest clients are ever in it at once.
pub fn unauthenticated_pool(max_connections: usize) -> usize {
    (max_connections / 8).max(16)
}

/// Binds a listener; the error names the flag and the address.
fn bind(flag: &str, addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| {
        let hint = if e.kind() == io::ErrorKind::AddrInUse {
            " (another program, or another threadcast, is using it; pick another port)"
        } else {
            ""
        };
        io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} ({flag}): {e}{hint}"),
        )
    })
}

/// Starts an accept loop on its own thread.
fn spawn_door(
    listener: TcpListener,
    shared: &Arc<Shared>,
    serves: Serves,
    files: &Arc<FileServer>,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let addr = listener.local_addr()?;
    let (shared, files) = (Arc::clone(shared), Arc::clone(files));
    let thread = thread::Builder::new()
        .name("accept".into())
        .spawn(move || door::accept_loop(listener, shared, serves, files))?;
    Ok((addr, thread))
}

/// An address a browser on this machine can open: `0.0.0.0` and `::` become loopback.
fn browsable(addr: SocketAddr) -> SocketAddr {
    wake_address(addr)
}

/// A running server. Dropping it shuts the server down (see [`ServerHandle::shutdown`]).
pub struct ServerHandle {
    shared: Arc<Shared>,
    hub: Option<JoinHandle<()>>,
    link: Option<JoinHandle<()>>,
    feeds: Feeds,
    /// Each listener's address and accept loop.
    accept: Vec<(SocketAddr, JoinHandle<()>)>,
    files: Arc<FileServer>,
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
            PublishError::InvalidRoom => {
                write!(f, "room names are 1-64 characters of A-Z a-z 0-9 _ -")
            }
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
    /// [`crate::budget`]): its limit, what is used by category, what was refused.
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
        if !is_room_name(room) {
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
        let published = self
            .shared
            .hub
            .publish(room.to_string(), (message, charge), None);
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

/// Starts the Redis link when `--redis` is set; its end goes to the hub.
#[cfg(feature = "redis")]
fn start_link(
    config: &Config,
    hub: &hub::Handle,
) -> io::Result<(Option<LinkEnd>, Option<JoinHandle<()>>)> {
    let Some(url) = &config.redis_url else {
        return Ok((None, None));
    };
    let (end, thread) =
        crate::redis_link::start(url, config.redis_queue, config.history, hub.clone())?;
    Ok((Some(end), Some(thread)))
}

/// Without the `redis` feature there is no link; asking for one is an error.
#[cfg(not(feature = "redis"))]
fn start_link(
    config: &Config,
    _hub: &hub::Handle,
) -> io::Result<(Option<LinkEnd>, Option<JoinHandle<()>>)> {
    match config.redis_url {
        Some(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "--redis needs a build with `--features redis`",
        )),
        None => Ok((None, None)),
    }
}

/// Reads the certificate and key named in the config, if any.
#[cfg(feature = "tls")]
fn load_tls(config: &Config) -> io::Result<Option<crate::net::tls::Certificates>> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(crate::net::tls::Certificates::load(cert, key)?)),
        (None, None) => Ok(None),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--tls-cert and --tls-key go together: give both or neither",
        )),
    }
}

/// Where to connect to wake a listener: its own address, with an unspecified IP
/// (`0.0.0.0`, `::`) replaced by loopback.
fn wake_address(addr: SocketAddr) -> SocketAddr {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}
