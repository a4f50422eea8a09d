//! A value handed from one thread to another, once: a slot behind a `Mutex`, and a
//! `Condvar` the receiving thread sleeps on until the slot is filled. No spinning and
//! no `sched_yield` before it sleeps (crossbeam's channels do both; see
//! `spare_threads`), and no channel buffer to allocate.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// One value on its way from one thread to another.
#[derive(Debug)]
pub struct OneShot<T> {
    value: Mutex<Option<T>>,
    filled: Condvar,
}

impl<T> Default for OneShot<T> {
    fn default() -> Self {
        OneShot {
            value: Mutex::new(None),
            filled: Condvar::new(),
        }
    }
}

impl<T> OneShot<T> {
    /// Puts the value in and wakes the thread waiting for it.
    pub fn put(&self, value: T) {
        *self.lock() = Some(value);
        self.filled.notify_one();
    }

    /// Waits for the value and takes it.
    pub fn take(&self) -> T {
        let mut value = self.lock();
        loop {
            if let Some(taken) = value.take() {
                return taken;
            }
            value = self
                .filled
                .wait(value)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Waits for the value until `deadline`; `None` if it has not come by then.
    pub fn take_until(&self, deadline: Instant) -> Option<T> {
        let mut value = self.lock();
        loop {
            if let Some(taken) = value.take() {
                return Some(taken);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            value = self
                .filled
                .wait_timeout(value, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The slot, locked. Whoever holds the lock only moves a value in or out, so a
    /// panic elsewhere cannot leave it half-changed: poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Option<T>> {
        self.value.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_value_put_on_one_thread_is_taken_on_another() {
        let shot = Arc::new(OneShot::default());
        let sender = Arc::clone(&shot);
        let putter = std::thread::spawn(move || sender.put(7));
        assert_eq!(shot.take(), 7);
        putter.join().unwrap();
    }

    #[test]
    fn waiting_until_a_deadline_gives_none_when_nothing_came() {
        let shot = OneShot::<u8>::default();
        let deadline = Instant::now() + Duration::from_millis(20);
        assert_eq!(shot.take_until(deadline), None);
        assert!(Instant::now() >= deadline);
        shot.put(1);
        assert_eq!(shot.take_until(deadline), Some(1));
    }
}
