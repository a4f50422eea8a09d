//! A histogram of delivery latency: from a publish being accepted to its frame being
//! written to a member's socket. Fixed buckets and atomics, so the writer threads
//! record without a lock, and `/metrics` reads it in the Prometheus form
//! (`_bucket{le=…}`, `_sum`, `_count`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: from a millisecond (a quiet loopback) to
/// ten seconds (a member far behind), roughly ×2.5 apart. Beyond the last: `+Inf`.
pub const BUCKETS_SECONDS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Counts per bucket (not cumulative; the last slot is `+Inf`), the sum and the count.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_SECONDS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    /// Records one delivery that took `latency`.
    pub fn observe(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        let slot = BUCKETS_SECONDS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS_SECONDS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative counts per upper bound (`None` is `+Inf`), as Prometheus wants them.
    pub fn cumulative(&self) -> Vec<(Option<f64>, u64)> {
        let mut total = 0;
        let bounds = BUCKETS_SECONDS.iter().copied().map(Some).chain([None]);
        bounds
            .zip(&self.buckets)
            .map(|(bound, count)| {
                total += count.load(Ordering::Relaxed);
                (bound, total)
            })
            .collect()
    }

    /// The sum of all recorded latencies, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// How many deliveries were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_cumulative_buckets() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500)); // ≤ 1 ms
        h.observe(Duration::from_millis(30)); // ≤ 50 ms
        h.observe(Duration::from_secs(60)); // +Inf only
        let cumulative = h.cumulative();
        assert_eq!(cumulative[0], (Some(0.001), 1));
        assert_eq!(cumulative[5], (Some(0.05), 2));
        assert_eq!(cumulative[12], (Some(10.0), 2));
        assert_eq!(cumulative[13], (None, 3));
        assert_eq!(h.count(), 3);
        assert!((h.sum_seconds() - 60.0305).abs() < 1e-6);
    }
}
