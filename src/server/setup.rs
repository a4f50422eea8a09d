//! The parts the server is built from, each set up once at start-up: the memory
//! budget, the link to other instances (Redis), the TLS certificates, and the line
//! that says where the server listens.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::listeners::browsable;
use crate::budget::{self, Budget, Size, Source};
use crate::config::Config;
use crate::context::Shared;
use crate::hub::{self, LinkEnd};
use crate::store::Store;

/// The memory budget: `--memory-limit`, or the machine's default; the hub is asked to
/// free memory when a reader finds it short. Logged with the limits derived from it.
pub(super) fn memory_budget(
    config: &Config,
    max_connections: usize,
    hub: &hub::Handle,
) -> Arc<Budget> {
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
    budget
}

/// Opens the store of room histories when `--data-dir` is set.
///
/// # Errors
/// Why it cannot be used (another instance holds it, it is damaged, …).
pub(super) fn open_store(config: &Config) -> io::Result<Option<Store>> {
    let Some(dir) = &config.data_dir else {
        return Ok(None);
    };
    let store = crate::store::open(dir, config.fsync).map_err(io::Error::other)?;
    log::info!(
        "room histories kept in {} (--fsync {:?})",
        dir.display(),
        config.fsync
    );
    Ok(Some(store))
}

/// Says where the server listens (a script reads the `listening` line).
pub(super) fn announce(shared: &Shared) {
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

/// Starts the Redis link when `--redis` is set; its end goes to the hub.
#[cfg(feature = "redis")]
pub(super) fn start_link(
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
pub(super) fn start_link(
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
pub(super) fn load_tls(
    config: &Config,
) -> io::Result<Option<crate::net::certificates::Certificates>> {
    match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Ok(Some(crate::net::certificates::Certificates::load(
            cert, key,
        )?)),
        (None, None) => Ok(None),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--tls-cert and --tls-key go together: give both or neither",
        )),
    }
}
