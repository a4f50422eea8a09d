//! Starting and stopping the whole server: both listeners, the hub, and the state
//! they share.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use tungstenite::Message;

use crate::capacity;
use crate::cluster::LinkStatus;
use crate::config::Config;
use crate::feed::Feeds;
use crate::http;
use crate::http_listener::HttpListener;
use crate::hub::{
    self, CloseSignal, Command, ConnId, Counters, HUB_QUEUE, LinkEnd, Outgoing, Subscriber,
};
use crate::limit::ConnectionLimit;
use crate::room::HistoryLimits;
use crate::room::Resume;
use crate::security::AccessPolicy;
use crate::url::is_room_name;
use crate::ws::listener;

pub use crate::hub::DRAIN_TIMEOUT;

/// State every thread of the server can see. Immutable settings plus atomics and
/// channels; the room table itself lives only in the hub thread.
#[derive(Debug)]
pub struct Shared {
    /// The configuration the server started with.
    pub config: Config,
    /// Origin and token rules.
    pub policy: Arc<AccessPolicy>,
    /// Commands for the hub.
    pub hub: Sender<Command>,
    /// Message and disconnect counters.
    pub counters: Arc<Counters>,
    /// Open connections against `--max-connections`.
    pub limit: Arc<ConnectionLimit>,
    /// Set once shutdown begins; accept loops stop when they see it.
    pub stopping: AtomicBool,
    /// The HTTP listener's real address (port 0 resolved).
    pub http_addr: SocketAddr,
    /// The WebSocket listener's real address.
    pub ws_addr: SocketAddr,
    /// When the server started, for `/stats`.
    pub started: Instant,
    /// Next connection id.
    pub next_id: AtomicU64,
    /// The Redis link's figures, when rooms are shared with other instances.
    pub link: Option<Arc<LinkStatus>>,
    /// The TLS settings of both listeners, when `--tls-cert` is given.
    #[cfg(feature = "tls")]
    pub tls: Option<crate::tls::Certificates>,
    /// With TLS: which client each relayed HTTPS connection carries.
    #[cfg(feature = "tls")]
    pub https_clients: crate::https::Clients,
}

/// An HTTP client's membership of a room (SSE stream or long poll): the queue the hub
/// fills for it and the hub's close requests. Leaves the room when dropped.
pub struct Membership<'a> {
    /// The member's connection id.
    pub id: ConnId,
    /// What the hub sends it.
    pub queue: Receiver<Outgoing>,
    /// Where the hub asks it to close (shutdown, slow consumer).
    pub close: Arc<CloseSignal>,
    room: String,
    hub: &'a Sender<Command>,
}

impl Shared {
    /// The client behind an HTTP request that tiny_http saw come from `seen`. With
    /// TLS that is our own relay on loopback, which knows the real client.
    pub fn http_client(&self, seen: SocketAddr) -> SocketAddr {
        #[cfg(feature = "tls")]
        if let Some(client) = self.https_clients.lookup(seen) {
            return client;
        }
        seen
    }

    /// Joins `room` as an enveloped member starting at `resume`; `None` when the hub
    /// has stopped (the server is shutting down).
    pub fn join(&self, room: &str, resume: Resume) -> Option<Membership<'_>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (subscriber, queue) = Subscriber::new(self.config.send_queue, false);
        let close = Arc::clone(&subscriber.close);
        let join = Command::Join {
            id,
            room: Some(room.to_string()),
            subscriber,
            resume,
        };
        self.hub.send(join).ok()?;
        Some(Membership {
            id,
            queue,
            close,
            room: room.to_string(),
            hub: &self.hub,
        })
    }
}

impl Drop for Membership<'_> {
    fn drop(&mut self) {
        let room = Some(std::mem::take(&mut self.room));
        let _ = self.hub.send(Command::Leave {
            id: self.id,
            room,
            done: None,
        });
    }
}

/// Entry point of the library: `Server::start(config)`.
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Binds both listeners, starts the hub and the worker threads, and returns a
    /// handle. Binding happens before this returns, so the handle's addresses are
    /// ready to connect to (use port 0 for an ephemeral port).
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
        let ws_listener = TcpListener::bind(config.ws_addr)?;
        let http_listener = TcpListener::bind(config.http_addr)?;
        let (http_addr, ws_addr) = (http_listener.local_addr()?, ws_listener.local_addr()?);
        // With TLS, tiny_http listens on an internal loopback port behind our relay, and
        // the public port is the relay's (src/https.rs).
        #[cfg(feature = "tls")]
        let (http_listener, https_listener) = match tls {
            Some(_) => (TcpListener::bind(INTERNAL_HTTP_ADDR)?, Some(http_listener)),
            None => (http_listener, None),
        };
        #[cfg(feature = "tls")]
        let internal_addr = http_listener.local_addr()?;
        let http = HttpListener::start(http_listener, crate::http_listener::Options::default())?;

        let (hub_tx, hub_rx) = crossbeam_channel::bounded(HUB_QUEUE);
        let (link, link_thread) = start_link(&config, &hub_tx)?;
        let counters = Arc::new(Counters::default());
        let shared = Arc::new(Shared {
            policy: Arc::new(AccessPolicy::new(&config)),
            limit: ConnectionLimit::new(capacity::fit_max_connections(config.max_connections)),
            config,
            hub: hub_tx,
            counters: Arc::clone(&counters),
            stopping: AtomicBool::new(false),
            http_addr,
            ws_addr,
            started: Instant::now(),
            next_id: AtomicU64::new(1),
            link: link.as_ref().map(|l| Arc::clone(&l.status)),
            #[cfg(feature = "tls")]
            tls,
            #[cfg(feature = "tls")]
            https_clients: crate::https::Clients::default(),
        });

        let limits = HistoryLimits {
            messages: shared.config.history,
            bytes: shared.config.history_bytes,
        };
        let hub = hub::spawn(hub_rx, counters, limits, link);
        let feeds = Feeds::start(&shared);
        let accept = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("ws-accept".into())
                .spawn(move || listener::accept_loop(ws_listener, shared))?
        };
        #[cfg(feature = "tls")]
        let https = match https_listener {
            Some(listener) => {
                let shared = Arc::clone(&shared);
                Some(
                    thread::Builder::new()
                        .name("https-accept".into())
                        .spawn(move || {
                            crate::https::accept_loop(listener, internal_addr, shared)
                        })?,
                )
            }
            None => None,
        };
        let http = Arc::new(http);
        let http_workers = http::spawn_workers(Arc::clone(&http), Arc::clone(&shared));
        if shared.config.uses_tls() {
            log::info!("TLS on both listeners: https:// and wss://");
        }
        log::info!("listening http={http_addr} ws={ws_addr}");

        Ok(ServerHandle {
            shared,
            hub: Some(hub),
            link: link_thread,
            feeds,
            accept: Some(accept),
            #[cfg(feature = "tls")]
            https,
            http: Some(http),
            http_workers,
        })
    }
}

/// A running server. Dropping it shuts the server down (see [`ServerHandle::shutdown`]).
pub struct ServerHandle {
    shared: Arc<Shared>,
    hub: Option<JoinHandle<()>>,
    link: Option<JoinHandle<()>>,
    feeds: Feeds,
    accept: Option<JoinHandle<()>>,
    /// The HTTPS relay's accept loop (`--tls-cert`).
    #[cfg(feature = "tls")]
    https: Option<JoinHandle<()>>,
    http: Option<Arc<HttpListener>>,
    http_workers: Vec<JoinHandle<()>>,
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
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::InvalidRoom => {
                write!(f, "room names are 1-64 characters of A-Z a-z 0-9 _ -")
            }
            PublishError::Stopped => write!(f, "the server is shutting down"),
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

    /// The HTTP listener's bound address.
    pub fn http_addr(&self) -> SocketAddr {
        self.shared.http_addr
    }

    /// The WebSocket listener's bound address.
    pub fn ws_addr(&self) -> SocketAddr {
        self.shared.ws_addr
    }

    /// Connections open right now: WebSockets, SSE streams and waiting long polls.
    pub fn connections(&self) -> usize {
        self.shared.limit.open()
    }

    /// Members of `room` right now (0 for a room that does not exist). Asks the hub,
    /// so a join that completed before this call is counted.
    pub fn members(&self, room: &str) -> usize {
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        if self.shared.hub.send(Command::Stats(reply_tx)).is_err() {
            return 0;
        }
        reply_rx
            .recv()
            .ok()
            .and_then(|rooms| rooms.into_iter().find(|r| r.name == room))
            .map_or(0, |r| r.members)
    }

    /// Broadcasts `message` into `room` from Rust code, exactly as if a client had
    /// sent it. Returns the number of members it was queued to.
    ///
    /// # Errors
    /// [`PublishError::InvalidRoom`] for a bad name, [`PublishError::Stopped`] after
    /// shutdown began.
    pub fn publish(&self, room: &str, message: impl Into<Message>) -> Result<usize, PublishError> {
        if !is_room_name(room) {
            return Err(PublishError::InvalidRoom);
        }
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        let command = Command::Publish {
            room: room.to_string(),
            message: message.into(),
            cid: None,
            from: None,
            reply: Some(reply_tx),
        };
        self.shared
            .hub
            .send(command)
            .map_err(|_| PublishError::Stopped)?;
        self.shared
            .counters
            .messages_in
            .fetch_add(1, Ordering::Relaxed);
        reply_rx
            .recv()
            .map(|published| published.delivered)
            .map_err(|_| PublishError::Stopped)
    }

    /// Graceful shutdown: stop accepting on both listeners, send every WebSocket
    /// client close 1001 (going away), and wait up to [`DRAIN_TIMEOUT`] for the
    /// connections to finish. Returns true if every connection finished in time.
    pub fn shutdown(mut self) -> bool {
        self.stop()
    }

    fn stop(&mut self) -> bool {
        if self.shared.stopping.swap(true, Ordering::AcqRel) {
            return true; // already stopped
        }
        // The accept loop is blocked in accept(): one connection wakes it to see the flag.
        let _ =
            TcpStream::connect_timeout(&wake_address(self.shared.ws_addr), Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        #[cfg(feature = "tls")]
        if let Some(https) = self.https.take() {
            let wake = wake_address(self.shared.http_addr);
            let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
            let _ = https.join();
        }
        if let Some(http) = self.http.take() {
            http.stop(); // stops accepting; the workers' recv() returns None
            for worker in self.http_workers.drain(..) {
                let _ = worker.join();
            }
        }
        self.feeds.stop();
        let _ = self.shared.hub.send(Command::Shutdown);
        if let Some(hub) = self.hub.take() {
            let _ = hub.join();
        }
        // The hub has let go of the link, which now closes its Redis connections.
        if let Some(link) = self.link.take() {
            let _ = link.join();
        }
        // The hub has waited for the connections to leave; their threads end right after.
        let drained = self.shared.limit.wait_idle(DRAIN_TIMEOUT);
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
    hub: &Sender<Command>,
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
    _hub: &Sender<Command>,
) -> io::Result<(Option<LinkEnd>, Option<JoinHandle<()>>)> {
    match config.redis_url {
        Some(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "--redis needs a build with `--features redis`",
        )),
        None => Ok((None, None)),
    }
}

/// Where tiny_http listens when the public HTTP port is the HTTPS relay's: loopback,
/// an ephemeral port, reachable only from this machine.
#[cfg(feature = "tls")]
const INTERNAL_HTTP_ADDR: &str = "127.0.0.1:0";

/// Reads the certificate and key named in the config, if any.
#[cfg(feature = "tls")]
fn load_tls(config: &Config) -> io::Result<Option<crate::tls::Certificates>> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(crate::tls::Certificates::load(cert, key)?)),
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
