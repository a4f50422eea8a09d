//! The memory budget: one ceiling for every byte a client can make the server hold.
//!
//! Limits per connection and per room are not enough on their own: multiplied by a
//! thousand connections and a thousand rooms they add up to far more memory than a
//! small machine has. So every large buffer is also counted here, against one number
//! (`--memory-limit`), and a buffer that would pass it is not allocated:
//!
//! | category | what | charged by |
//! |---|---|---|
//! | `messages` | every message the server holds: in room histories, in the hub's queue, in connections' send queues (each message once, however many hold it) | the reader that received it |
//! | `reading` | message bytes still arriving: partial WebSocket frames, request bodies | the reader, as the bytes come in |
//! | `replay` | the buffers of SSE streams and long polls writing a large batch | the stream, while the batch is written |
//!
//! A charge is a [`Reservation`]: taken before the bytes are allocated, given back
//! when it is dropped (with the buffer it pays for), so nothing can be forgotten.
//!
//! When the budget runs short the server degrades in this order (the hub does the
//! first two, see `Hub::relieve` in `src/hub/pressure.rs`): members that are far behind are closed as slow
//! consumers (1008; they resume from history), the oldest messages across all room
//! histories are trimmed (a client resuming from before them is told of the gap),
//! and only then is new work refused: a publish gets 503 (HTTP) or close 1013 (a
//! WebSocket publisher), a new connection 503.
//!
//! What the budget does not count is fixed per connection (its threads' stacks and
//! small buffers): see [`fixed_overhead`] and README, "Capacity and memory".

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

mod machine;
mod reservation;
mod size;

pub use machine::{Source, fixed_overhead, machine_limit, return_large_buffers_to_the_system};
pub use reservation::Reservation;
pub use size::{Size, parse_size};

/// The three kinds of memory the budget counts (see the module's table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// Messages held anywhere: histories, the hub's queue, send queues.
    Messages,
    /// Bytes of messages and request bodies still arriving.
    Reading,
    /// Buffers of SSE streams and long polls writing a large batch.
    Replay,
}

impl Category {
    /// Every category, in the order `/metrics` lists them.
    pub const ALL: [Category; 3] = [Category::Messages, Category::Reading, Category::Replay];

    /// The name `/metrics` and the logs use.
    pub fn name(self) -> &'static str {
        match self {
            Category::Messages => "messages",
            Category::Reading => "reading",
            Category::Replay => "replay",
        }
    }

    /// The largest share of the budget this category may take on its own. Bytes still
    /// arriving and replay buffers are capped, so that a crowd of clients holding half
    /// a frame each (or never reading a replay) cannot leave no room for messages.
    fn share(self, limit: usize) -> usize {
        match self {
            Category::Messages => limit,
            Category::Reading => limit / 2,
            Category::Replay => limit / 8,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Above this fraction of the budget the hub starts to free memory (slow consumers,
/// then the oldest history), and new connections are refused with 503.
pub const HIGH_WATER: (usize, usize) = (7, 8);

/// The hub frees memory until the budget is back at this fraction.
pub const LOW_WATER: (usize, usize) = (3, 4);

/// How long a reader whose bytes do not fit waits for the hub to free memory before
/// it refuses them (503, or close 1013).
pub const RECLAIM_WAIT: Duration = Duration::from_secs(2);

/// The smallest budget `--memory-limit` accepts.
pub const MIN_LIMIT: usize = 4 << 20;

/// The budget: what is charged, by category, against one limit. Shared by every
/// thread (atomics; a mutex only for readers waiting for memory to be freed).
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
    by_category: [AtomicUsize; 3],
    /// Charges refused because the budget was short (each a 503 or a close 1013).
    refused: AtomicU64,
    /// Readers waiting for memory: a release wakes them only when there are any.
    waiting: AtomicUsize,
    freed: (Mutex<()>, Condvar),
    /// Asks the hub to free memory (set once at start-up); `false` if it could not.
    reclaimer: OnceLock<Box<dyn Fn() -> bool + Send + Sync>>,
    /// A request to free memory is on its way to the hub: one at a time is enough.
    reclaim_asked: AtomicBool,
}

impl fmt::Debug for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Budget")
            .field("limit", &self.limit)
            .field("used", &self.used())
            .finish_non_exhaustive()
    }
}

impl Budget {
    /// A budget of `limit` bytes, nothing charged yet.
    pub fn new(limit: usize) -> Arc<Budget> {
        Arc::new(Budget {
            limit,
            used: AtomicUsize::new(0),
            by_category: Default::default(),
            refused: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            freed: (Mutex::new(()), Condvar::new()),
            reclaimer: OnceLock::new(),
            reclaim_asked: AtomicBool::new(false),
        })
    }

    /// Sets what [`Budget::reserve_within`] calls when it finds the budget short
    /// (the server asks its hub to free memory; `false` if the request could not be
    /// sent). Only the first call counts.
    pub fn set_reclaimer(&self, reclaim: impl Fn() -> bool + Send + Sync + 'static) {
        let _ = self.reclaimer.set(Box::new(reclaim));
    }

    /// Asks for memory to be freed, unless a request is already on its way.
    fn ask_reclaim(&self) {
        if !self.reclaim_asked.swap(true, Ordering::AcqRel) {
            let sent = self.reclaimer.get().is_some_and(|reclaim| reclaim());
            if !sent {
                self.reclaim_asked.store(false, Ordering::Release);
            }
        }
    }

    /// The hub took the request to free memory: the next shortage may ask again.
    pub fn reclaimed(&self) {
        self.reclaim_asked.store(false, Ordering::Release);
    }

    /// The limit in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes charged now, all categories together.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Bytes charged now to `category`.
    pub fn used_by(&self, category: Category) -> usize {
        self.by_category[category.index()].load(Ordering::Relaxed)
    }

    /// Charges refused so far because the budget was short.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Whether more than `HIGH_WATER` of the budget is used: the hub should free
    /// memory, and new connections are refused.
    pub fn is_high(&self) -> bool {
        self.used() > self.limit / HIGH_WATER.1 * HIGH_WATER.0
    }

    /// How many bytes must be freed to be back at `LOW_WATER` (0 when below it).
    pub fn excess(&self) -> usize {
        self.used()
            .saturating_sub(self.limit / LOW_WATER.1 * LOW_WATER.0)
    }

    /// Counts one refusal that did not come from a failed charge (a new connection
    /// refused because [`Budget::is_high`]).
    pub fn count_refusal(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Charges `bytes` to `category` if they fit under the limit (and the category's
    /// share of it); `None` if they do not, and nothing is charged.
    pub fn try_reserve(self: &Arc<Self>, category: Category, bytes: usize) -> Option<Reservation> {
        self.charge(category, bytes).then(|| Reservation {
            budget: Arc::clone(self),
            category,
            bytes,
        })
    }

    /// As [`Budget::try_reserve`], but when the bytes do not fit it asks the hub to
    /// free memory and waits up to `wait` for them to fit. A refusal is counted.
    pub fn reserve_within(
        self: &Arc<Self>,
        category: Category,
        bytes: usize,
        wait: Duration,
    ) -> Option<Reservation> {
        let mut reservation = self.try_reserve(category, 0)?;
        reservation.grow_within(bytes, wait).then_some(reservation)
    }

    /// Charges `bytes` whether or not they fit. Only for bytes the server cannot
    /// refuse (a message another instance already numbered); the hub frees memory
    /// right after.
    pub fn force(self: &Arc<Self>, category: Category, bytes: usize) -> Reservation {
        self.used.fetch_add(bytes, Ordering::Relaxed);
        self.by_category[category.index()].fetch_add(bytes, Ordering::Relaxed);
        Reservation {
            budget: Arc::clone(self),
            category,
            bytes,
        }
    }

    /// Adds `bytes` to the totals if they fit; the check and the add are one atomic
    /// step, so two threads cannot both take the last free bytes.
    fn charge(&self, category: Category, bytes: usize) -> bool {
        let share = category.share(self.limit);
        let in_category = &self.by_category[category.index()];
        let fits_share = in_category
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                now.checked_add(bytes).filter(|after| *after <= share)
            })
            .is_ok();
        if !fits_share {
            return false;
        }
        let fits = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |now| {
                now.checked_add(bytes).filter(|after| *after <= self.limit)
            })
            .is_ok();
        if !fits {
            in_category.fetch_sub(bytes, Ordering::Relaxed);
        }
        fits
    }

    fn release(&self, category: Category, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.by_category[category.index()].fetch_sub(bytes, Ordering::Relaxed);
        self.used.fetch_sub(bytes, Ordering::Relaxed);
        if self.waiting.load(Ordering::Relaxed) > 0 {
            let _guard = self.freed.0.lock();
            self.freed.1.notify_all();
        }
    }

    /// Waits until some memory is freed or `deadline` passes.
    fn wait_for_release(&self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        if let Ok(guard) = self.freed.0.lock() {
            // A short wait even if the release came just before we slept: the caller
            // tries again either way.
            let _ = self
                .freed
                .1
                .wait_timeout(guard, left.min(Duration::from_millis(50)));
        }
        self.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_fit_under_the_limit_and_come_back_when_dropped() {
        let budget = Budget::new(1000);
        let a = budget.try_reserve(Category::Messages, 600).unwrap();
        assert!(budget.try_reserve(Category::Messages, 500).is_none());
        let b = budget.try_reserve(Category::Messages, 400).unwrap();
        assert_eq!(budget.used(), 1000);
        assert!(budget.try_reserve(Category::Messages, 1).is_none());
        drop(a);
        assert_eq!(budget.used(), 400);
        assert_eq!(budget.used_by(Category::Messages), 400);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn reading_and_replay_cannot_take_the_whole_budget() {
        let budget = Budget::new(800);
        let reading = budget.try_reserve(Category::Reading, 400).unwrap();
        assert!(
            budget.try_reserve(Category::Reading, 1).is_none(),
            "half at most"
        );
        assert!(
            budget.try_reserve(Category::Replay, 101).is_none(),
            "an eighth"
        );
        let replay = budget.try_reserve(Category::Replay, 100).unwrap();
        assert!(budget.try_reserve(Category::Messages, 300).is_some());
        assert!(budget.try_reserve(Category::Messages, 301).is_none());
        drop((reading, replay));
        assert_eq!(budget.used(), 0);
        assert_eq!(budget.used_by(Category::Reading), 0);
    }

    #[test]
    fn a_reservation_grows_shrinks_and_moves_between_categories() {
        let budget = Budget::new(1000);
        let mut reading = budget.try_reserve(Category::Reading, 100).unwrap();
        assert!(reading.try_grow(300));
        assert!(!reading.try_grow(200), "reading is capped at half");
        assert_eq!(reading.bytes(), 400);
        let message = reading.split_into(Category::Messages, 350);
        assert_eq!(reading.bytes(), 50);
        assert_eq!(budget.used_by(Category::Messages), 350);
        assert_eq!(budget.used(), 400);
        reading.shrink_to(0);
        drop(message);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_waiting_charge_fits_once_memory_is_freed_elsewhere() {
        let budget = Budget::new(1000);
        let held = budget.try_reserve(Category::Messages, 900).unwrap();
        let asked = Arc::new(AtomicUsize::new(0));
        let freer = Mutex::new(Some(held));
        let counter = Arc::clone(&asked);
        budget.set_reclaimer(move || {
            counter.fetch_add(1, Ordering::Relaxed);
            freer.lock().unwrap().take(); // the "hub" frees the old message
            true
        });
        let got = budget.reserve_within(Category::Messages, 500, Duration::from_secs(5));
        assert!(got.is_some());
        assert_eq!(asked.load(Ordering::Relaxed), 1);
        assert_eq!(budget.refused(), 0);
        budget.reclaimed(); // what the hub says when it has done its part
        // Nothing left to free: refused after the wait, and counted.
        let refused = budget.reserve_within(Category::Messages, 600, Duration::from_millis(20));
        assert!(refused.is_none());
        assert_eq!(budget.refused(), 1);
    }

    #[test]
    fn concurrent_charges_never_pass_the_limit() {
        let budget = Budget::new(10_000);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..2000 {
                        if let Some(r) = budget.try_reserve(Category::Messages, 7) {
                            assert!(budget.used() <= 10_000);
                            drop(r);
                        }
                    }
                });
            }
        });
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn water_marks_and_excess() {
        let budget = Budget::new(800);
        let r = budget.try_reserve(Category::Messages, 700).unwrap();
        assert!(!budget.is_high());
        let s = budget.try_reserve(Category::Messages, 1).unwrap();
        assert!(budget.is_high());
        assert_eq!(budget.excess(), 101);
        drop((r, s));
        assert_eq!(budget.excess(), 0);
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("256MiB"), Some(256 << 20));
        assert_eq!(parse_size("256 MiB"), Some(256 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("64KiB"), Some(64 << 10));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("12 parsecs"), None);
        assert_eq!(parse_size("99999999999999999999GiB"), None);
        assert_eq!(Size(256 << 20).to_string(), "256 MiB");
        assert_eq!(Size(3 << 29).to_string(), "1.5 GiB");
        assert_eq!(Size(300).to_string(), "300 B");
    }
}
