//! The message rate of one connection (`--max-messages-per-second`): a token bucket.

use std::time::Instant;

/// A token bucket: `per_second` tokens flow in each second, up to a burst of twice
/// that; each message takes one. A client that keeps sending faster runs dry.
#[derive(Debug)]
pub struct RateLimit {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// A full bucket for `per_second` messages a second (bursts of twice that).
    pub fn per_second(per_second: u32) -> RateLimit {
        let per_second = f64::from(per_second.max(1));
        RateLimit {
            per_second,
            burst: 2.0 * per_second,
            tokens: 2.0 * per_second,
            last: Instant::now(),
        }
    }

    /// The configured rate.
    pub fn per_second_limit(&self) -> u64 {
        self.per_second as u64
    }

    /// Takes one token if there is one (refilling for the time since the last call).
    pub fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let mut rate = RateLimit::per_second(10);
        let start = rate.last;
        let allowed = (0..100).filter(|_| rate.allow(start)).count();
        assert_eq!(allowed, 20, "a burst of twice the rate");
        assert!(!rate.allow(start + Duration::from_millis(50)));
        assert!(
            rate.allow(start + Duration::from_millis(150)),
            "refilled at 10/s"
        );
        let later = start + Duration::from_secs(100);
        let allowed = (0..100).filter(|_| rate.allow(later)).count();
        assert_eq!(allowed, 20, "never more than the burst");
    }
}
