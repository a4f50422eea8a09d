//! Counting open connections against `--max-connections`, and waiting for them to
//! finish at shutdown; with the two limits every connection thread lives under (its
//! stack, and how long one message may take to write). The other limits have files of
//! their own: `requests.rs`, `per_address.rs`, `rate.rs`.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// Longest writing one message (a WebSocket message or control frame, an SSE
/// write) may take in all, however the peer
/// paces its reading (gorilla's `writeWait`, but for the whole message, not each
/// system call: a peer reading a trickle cannot hold a message for minutes). A 1 MiB
/// message needs a client that reads about 100 KB/s. After that the peer is gone.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Stack of each connection thread. Threads here parse frames and copy buffers that
/// live on the heap, so they need little stack; 128 KiB leaves a wide margin even in
/// unoptimized builds, and untouched stack pages cost no memory anyway.
pub const THREAD_STACK_BYTES: usize = 128 * 1024;

/// How many long-lived connections are open, with a ceiling. Each open connection
/// holds a [`Slot`]; dropping the slot frees it and wakes anyone waiting for zero.
#[derive(Debug)]
pub struct ConnectionLimit {
    max: usize,
    open: Mutex<usize>,
    changed: Condvar,
}

/// Proof that a connection was admitted. Frees its place when dropped.
#[derive(Debug)]
pub struct Slot(Arc<ConnectionLimit>);

impl ConnectionLimit {
    /// A limit of `max` open connections.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(ConnectionLimit {
            max,
            open: Mutex::new(0),
            changed: Condvar::new(),
        })
    }

    /// Takes a place, or `None` when all `max` are in use (the caller answers 503).
    pub fn try_acquire(self: &Arc<Self>) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if *open >= self.max {
            return None;
        }
        *open += 1;
        Some(Slot(Arc::clone(self)))
    }

    /// The ceiling.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections open right now.
    pub fn open(&self) -> usize {
        *self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until no connection is open, at most `timeout`. True if all finished.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let (open, _) = self
            .changed
            .wait_timeout_while(open, timeout, |open| *open > 0)
            .unwrap_or_else(PoisonError::into_inner);
        *open == 0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.0.open.lock().unwrap_or_else(PoisonError::into_inner);
        *open -= 1;
        self.0.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_refused_past_the_limit_and_freed_on_drop() {
        let limit = ConnectionLimit::new(2);
        let a = limit.try_acquire().unwrap();
        let _b = limit.try_acquire().unwrap();
        assert!(limit.try_acquire().is_none());
        drop(a);
        assert_eq!(limit.open(), 1);
        assert!(limit.try_acquire().is_some());
    }

    #[test]
    fn wait_idle_returns_when_the_last_slot_is_dropped() {
        let limit = ConnectionLimit::new(1);
        let slot = limit.try_acquire().unwrap();
        assert!(!limit.wait_idle(Duration::from_millis(10)));
        let waiter = std::thread::spawn({
            let limit = Arc::clone(&limit);
            move || limit.wait_idle(Duration::from_secs(10))
        });
        drop(slot);
        assert!(waiter.join().unwrap());
    }
}
