//! A charge on the budget ([`Reservation`]): taken before the bytes are allocated,
//! given back when it is dropped.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{Budget, Category};

/// Bytes charged to the budget, given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    pub(super) budget: Arc<Budget>,
    pub(super) category: Category,
    pub(super) bytes: usize,
}

impl Reservation {
    /// Bytes charged.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Charges `more` bytes too, if they fit; `false` (and nothing more charged) if not.
    pub fn try_grow(&mut self, more: usize) -> bool {
        let fits = self.budget.charge(self.category, more);
        if fits {
            self.bytes += more;
        }
        fits
    }

    /// Charges `more` bytes, asking the hub to free memory and waiting up to `wait`
    /// when they do not fit at once. A refusal is counted.
    pub fn grow_within(&mut self, more: usize, wait: Duration) -> bool {
        if self.try_grow(more) {
            return true;
        }
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            // Asked again each round: what the hub freed may have gone to others.
            self.budget.ask_reclaim();
            self.budget.wait_for_release(deadline);
            if self.try_grow(more) {
                return true;
            }
        }
        self.budget.refused.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Gives back all but `bytes` (no-op when it holds fewer).
    pub fn shrink_to(&mut self, bytes: usize) {
        if bytes < self.bytes {
            self.budget.release(self.category, self.bytes - bytes);
            self.bytes = bytes;
        }
    }

    /// Makes this charge exactly `bytes`: gives back the difference, or charges it
    /// whether or not it fits (a few bytes of framing for bytes that exist already).
    pub fn settle(&mut self, bytes: usize) {
        if bytes < self.bytes {
            self.shrink_to(bytes);
        } else if bytes > self.bytes {
            let extra = self.budget.force(self.category, bytes - self.bytes);
            self.bytes = bytes;
            std::mem::forget(extra); // now part of this charge
        }
    }

    /// Moves `bytes` of this charge to `category` as a reservation of its own (what
    /// was being read is now a message). The total does not change, so only the two
    /// categories' counts are touched. If this holds fewer, the rest is charged anyway:
    /// the bytes exist already.
    pub fn split_into(&mut self, category: Category, bytes: usize) -> Reservation {
        let moved = bytes.min(self.bytes);
        let counts = &self.budget.by_category;
        counts[self.category.index()].fetch_sub(moved, Ordering::Relaxed);
        counts[category.index()].fetch_add(moved, Ordering::Relaxed);
        self.bytes -= moved;
        let mut split = Reservation {
            budget: Arc::clone(&self.budget),
            category,
            bytes: moved,
        };
        split.settle(bytes);
        split
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.release(self.category, self.bytes);
    }
}
