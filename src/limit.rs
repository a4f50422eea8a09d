//! Counting open connections against `--max-connections`, and waiting for them to
//! finish at shutdown.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

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
