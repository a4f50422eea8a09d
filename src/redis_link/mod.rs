//! Rooms shared by several instances through Redis (`--features redis`, `--redis URL`).
//!
//! Put several threadcast instances behind a load balancer and point them all at one
//! Redis: a message published on any instance (WebSocket, `POST /publish`, a feed)
//! reaches every member of its room on every instance, with the same id everywhere,
//! so a client can resume on another instance than the one it left.
//!
//! How (see [`crate::hub::cluster`] for the hub's side, `docs/ARCHITECTURE.md` for costs):
//!
//! 1. **Publish** — the hub hands the message to the link thread ([`link`]), which
//!    runs `publish.lua` in Redis: one atomic step that takes the room's next id
//!    (`INCR`), drops a repeated client id, appends to the room's capped history
//!    stream (`XADD MAXLEN ~ --history`) and `PUBLISH`es it on the room's channel.
//! 2. **Deliver** — every instance's [`subscriber`] thread (one per instance, not per
//!    room) receives it from the channel and gives it to its hub, which delivers it
//!    to local members. The publishing instance too: it delivers nothing before Redis
//!    has numbered the message, so every instance sees one order.
//! 3. **Resume** — when a room gets its first member on an instance, the hub loads
//!    the room's epoch and history from the stream (`load.lua`) and serves joins from
//!    it; subscribing happens first, so anything newer arrives on the channel.
//! 4. **Outage** — if Redis goes away, rooms carry on alone under a fresh epoch
//!    (local delivery continues), what is published is queued (`--redis-queue`; past
//!    it, counted and logged), and the link reconnects with backoff. Back up, it
//!    forwards the queue marked *late* (its origin does not deliver it twice), the
//!    rooms reload, and members get what other instances published meanwhile.
//!
//! Blocking I/O only: the official `redis` crate's synchronous client, two
//! connections and two threads per instance whatever the number of rooms.

pub mod link;
mod store;
pub mod subscriber;
pub mod wire;

use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use crate::hub::cluster::{LinkStatus, ToLink};
use crate::hub::{self, HUB_QUEUE, LinkEnd};
use crate::room;

/// Starts the link thread for the Redis at `url`. It connects in the background (the
/// server starts even while Redis is down); the returned [`LinkEnd`] goes to the hub.
///
/// # Errors
/// When `url` is not a Redis URL the client understands.
pub fn start(
    url: &str,
    queue: usize,
    history: usize,
    hub: hub::Handle,
) -> io::Result<(LinkEnd, JoinHandle<()>)> {
    let client = redis::Client::open(url)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("--redis: {e}")))?;
    let status = Arc::new(LinkStatus::default());
    let (tx, rx) = crossbeam_channel::bounded::<ToLink>(HUB_QUEUE);
    let settings = link::LinkSettings {
        client,
        queue,
        history,
        origin: room::new_epoch(),
        hub,
        status: Arc::clone(&status),
    };
    let thread = thread::Builder::new()
        .name("redis-link".into())
        .spawn(move || link::run(settings, &rx))?;
    Ok((LinkEnd { tx, status }, thread))
}
