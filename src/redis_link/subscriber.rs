//! The subscriber thread: one per instance, on its own Redis connection (a
//! connection in subscribe mode can do nothing else). It listens to every room's
//! channel at once (`PSUBSCRIBE threadcast:room:*`) and hands each message to the hub.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use crossbeam_channel::Sender;

use super::wire;
use crate::hub::{self, cluster::FromLink};

/// How often a quiet subscriber wakes to see whether the link has moved on to a new
/// connection (then this one ends).
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// One subscription: the connection, and how to report on it.
pub struct Subscription {
    /// A fresh connection to Redis.
    pub connection: redis::Connection,
    /// This subscription's number; it ends when `current` moves past it.
    pub generation: u64,
    /// The link's current generation.
    pub current: Arc<AtomicU64>,
    /// Where room messages go.
    pub hub: hub::Handle,
    /// Told this subscription's generation if its connection fails.
    pub lost: Sender<u64>,
    /// This instance's origin, to recognise its own late messages.
    pub origin: u64,
}

/// Subscribes, reports the outcome on `ready`, then relays messages until the
/// connection fails or the link moves on.
pub fn spawn(
    subscription: Subscription,
    ready: Sender<redis::RedisResult<()>>,
) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("redis-sub".into())
        .spawn(move || run(subscription, &ready))
}

fn run(mut s: Subscription, ready: &Sender<redis::RedisResult<()>>) {
    let mut pubsub = s.connection.as_pubsub();
    // PSUBSCRIBE returns once Redis confirms it: from then on no message is missed,
    // which is what lets the link load history knowing the rest will be broadcast.
    let subscribed = pubsub
        .psubscribe(wire::CHANNEL_PATTERN)
        .and_then(|()| pubsub.set_read_timeout(Some(POLL_INTERVAL)));
    let failed = subscribed.is_err();
    let _ = ready.send(subscribed);
    if failed {
        return;
    }
    while s.current.load(Ordering::Acquire) == s.generation {
        let message = match pubsub.get_message() {
            Ok(message) => message,
            Err(e) if e.is_timeout() => continue,
            Err(e) => {
                log::debug!("Redis subscription {} ended: {e}", s.generation);
                let _ = s.lost.send(s.generation);
                return;
            }
        };
        let Some(room) = wire::room_of_channel(message.get_channel_name()) else {
            continue;
        };
        match wire::decode(room, message.get_payload_bytes(), s.origin) {
            Ok(arrival) => {
                if !s.hub.link(FromLink::Remote(Box::new(arrival))) {
                    return; // the hub has stopped
                }
            }
            Err(e) => {
                log::warn!("ignored a malformed message on Redis channel of room '{room}': {e}")
            }
        }
    }
}
