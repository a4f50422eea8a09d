//! Figures every thread updates without a lock or a hub round trip: atomics.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Counters shared by every thread (atomics: no lock, no hub round trip).
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages received from clients and publishers.
    pub messages_in: AtomicU64,
    /// Messages written to clients.
    pub messages_out: AtomicU64,
    /// Connections closed with 1008 because their queue was full.
    pub slow_consumers: AtomicU64,
    /// Connections closed with 1008 for sending faster than `--max-messages-per-second`.
    pub rate_limited: AtomicU64,
    /// Messages trimmed from room histories because the memory budget ran high.
    pub history_trimmed: AtomicU64,
    /// Bytes waiting in every connection's send queue together (a message queued to
    /// n connections counts n times; the budget counts it once).
    pub queued_bytes: Arc<AtomicUsize>,
    /// From a publish being accepted to its frame being written to each WebSocket
    /// member (live messages; replays are not counted).
    pub delivery_latency: crate::latency::Histogram,
    /// Server-Sent Events streams open right now.
    pub sse_streams: Gauge,
    /// Long-poll requests waiting right now.
    pub polls_waiting: Gauge,
}

/// A count of things in progress; [`Gauge::enter`] counts one until the guard drops.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

/// Counts one for its [`Gauge`] while it lives.
#[derive(Debug)]
pub struct GaugeGuard<'a>(&'a Gauge);

impl Gauge {
    /// Counts one until the returned guard is dropped.
    pub fn enter(&self) -> GaugeGuard<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(self)
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}
