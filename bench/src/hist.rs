//! A small log-linear latency histogram (about 1.6 % relative precision),
//! in nanoseconds. Exact below `LINEAR_LIMIT`, then `SUB_BUCKETS` buckets per
//! power of two. The maximum is tracked exactly.

const SUB_BUCKET_BITS: u32 = 6;
const SUB_BUCKETS: usize = 1 << SUB_BUCKET_BITS; // 64 per power of two
const LINEAR_LIMIT: u64 = 2 * SUB_BUCKETS as u64; // 128 ns: exact below this
const FIRST_LOG_EXPONENT: u32 = SUB_BUCKET_BITS + 1; // 2^7 = LINEAR_LIMIT
const BUCKETS: usize = LINEAR_LIMIT as usize + (64 - FIRST_LOG_EXPONENT as usize) * SUB_BUCKETS;

pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Histogram { counts: vec![0; BUCKETS], total: 0, max: 0 }
    }

    fn index(v: u64) -> usize {
        if v < LINEAR_LIMIT {
            return v as usize;
        }
        let exp = 63 - v.leading_zeros(); // >= FIRST_LOG_EXPONENT
        let sub = (v >> (exp - SUB_BUCKET_BITS)) as usize & (SUB_BUCKETS - 1);
        LINEAR_LIMIT as usize + (exp - FIRST_LOG_EXPONENT) as usize * SUB_BUCKETS + sub
    }

    /// Upper edge of a bucket, so reported percentiles never understate.
    fn bucket_high(i: usize) -> u64 {
        if i < LINEAR_LIMIT as usize {
            return i as u64;
        }
        let j = i - LINEAR_LIMIT as usize;
        let exp = FIRST_LOG_EXPONENT + (j / SUB_BUCKETS) as u32;
        let sub = (j % SUB_BUCKETS) as u64;
        let step = 1u64 << (exp - SUB_BUCKET_BITS);
        (1u64 << exp) + sub * step + (step - 1)
    }

    pub fn record(&mut self, v: u64) {
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.max = self.max.max(v);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// Value at quantile `q` in [0, 1]; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::bucket_high(i).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_close() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 / 50_000_000.0 - 1.0).abs() < 0.02, "{p50}");
        assert!((p99 / 99_000_000.0 - 1.0).abs() < 0.02, "{p99}");
        assert_eq!(h.max(), 100_000_000);
        assert_eq!(h.quantile(1.0), 100_000_000);
        for v in [0u64, 1, 127, 128, 129, 1 << 20, u64::MAX / 2] {
            assert!(Histogram::bucket_high(Histogram::index(v)) >= v);
        }
    }
}
