//! A connection's send queue, bounded twice: in items (`--send-queue`) and in bytes
//! (`--send-queue-bytes`).
//!
//! Counting items is not enough: 128 queued messages of 1 MiB each pin 128 MiB for
//! one client that reads slowly. So each queue also keeps a [`Backlog`]: the bytes of
//! the messages waiting in it. The hub adds a message's bytes when it queues the
//! message, and the receiving end ([`QueueEnd`]) takes them off when the writer picks
//! the message up; a member whose backlog would pass its share is a slow consumer.
//!
//! A message queued to many members is one buffer in memory (it is shared), and the
//! memory budget counts it once; the backlog counts it for each member, because what
//! matters here is how far behind each one is.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use super::Outgoing;

/// The bytes waiting in one connection's queue, and how many may.
#[derive(Debug)]
pub struct Backlog {
    bytes: AtomicUsize,
    limit: usize,
    /// Every connection's backlog together, for `/metrics`.
    total: Arc<AtomicUsize>,
}

impl Backlog {
    /// An empty backlog of at most `limit` bytes, counted into `total` as well.
    pub fn new(limit: usize, total: Arc<AtomicUsize>) -> Backlog {
        Backlog {
            bytes: AtomicUsize::new(0),
            limit,
            total,
        }
    }

    /// Counts `bytes` more if they fit under the limit; `false` (nothing counted) if
    /// they do not: the connection is too far behind.
    pub fn add(&self, bytes: usize) -> bool {
        let fits = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                now.checked_add(bytes).filter(|after| *after <= self.limit)
            })
            .is_ok();
        if fits {
            self.total.fetch_add(bytes, Ordering::Relaxed);
        }
        fits
    }

    /// Counts `bytes` less (the writer took them, or they were never queued).
    pub fn remove(&self, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.total.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Bytes waiting now.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The most bytes that may wait.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl Drop for Backlog {
    fn drop(&mut self) {
        // Items still queued when the connection ends are dropped with it.
        self.total.fetch_sub(self.bytes(), Ordering::Relaxed);
    }
}

/// The receiving end of a send queue: each item taken off it is taken off the
/// backlog too, whoever reads it (a WebSocket writer, an SSE stream, a long poll, or
/// the hub dropping what a slow consumer will never be sent).
#[derive(Clone, Debug)]
pub struct QueueEnd {
    queue: Receiver<Outgoing>,
    backlog: Arc<Backlog>,
}

impl QueueEnd {
    /// The receiving end of `queue`, whose bytes `backlog` counts.
    pub fn new(queue: Receiver<Outgoing>, backlog: Arc<Backlog>) -> QueueEnd {
        QueueEnd { queue, backlog }
    }

    fn taken(&self, item: Outgoing) -> Outgoing {
        self.backlog.remove(item.bytes());
        item
    }

    /// The next item, waiting until `deadline`.
    ///
    /// # Errors
    /// As [`Receiver::recv_deadline`].
    pub fn recv_deadline(&self, deadline: Instant) -> Result<Outgoing, RecvTimeoutError> {
        self.queue.recv_deadline(deadline).map(|i| self.taken(i))
    }

    /// The next item if one is waiting.
    ///
    /// # Errors
    /// As [`Receiver::try_recv`].
    pub fn try_recv(&self) -> Result<Outgoing, TryRecvError> {
        self.queue.try_recv().map(|i| self.taken(i))
    }

    /// Every item waiting now, without blocking.
    pub fn try_iter(&self) -> impl Iterator<Item = Outgoing> + '_ {
        std::iter::from_fn(|| self.try_recv().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_holds_up_to_its_limit_and_empties_as_items_are_taken() {
        let total = Arc::new(AtomicUsize::new(0));
        let backlog = Arc::new(Backlog::new(100, Arc::clone(&total)));
        assert!(backlog.add(60));
        assert!(!backlog.add(41), "past the limit");
        assert!(backlog.add(40));
        assert_eq!((backlog.bytes(), total.load(Ordering::Relaxed)), (100, 100));
        backlog.remove(60);
        assert_eq!(backlog.bytes(), 40);
        drop(backlog);
        assert_eq!(
            total.load(Ordering::Relaxed),
            0,
            "what was left is forgotten"
        );
    }
}
