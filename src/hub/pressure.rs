//! What the hub does when the memory budget runs high: it closes the members that are
//! far behind, then trims the oldest history across all rooms (see `budget/mod.rs` for
//! the whole policy).

use std::sync::atomic::Ordering;

use super::{Counters, Hub, slow_consumer};

/// When the memory budget runs high, members with more than this fraction of their
/// `--send-queue-bytes` waiting count as far behind, and are closed first. (Not
/// less than a half: a member that keeps up with messages of the largest size may
/// have one or two of them waiting at any moment.)
pub const BEHIND_FRACTION: usize = 2;

impl Hub {
    /// Frees memory when the budget runs high, in the documented order: first the
    /// members that are far behind (more than 1/[`BEHIND_FRACTION`] of their queue's
    /// bytes) are closed as slow consumers — what is queued to them is freed, and they
    /// resume from history — then the oldest messages across every room's history are
    /// trimmed until the budget is back at its low-water mark (a client that resumes
    /// from before a trimmed message is told of the gap). If that is not enough, the
    /// memory is in bytes being read and in queues of members that keep up: new work
    /// is refused (503, 1013) until it is freed.
    pub(super) fn relieve(&mut self, counters: &Counters) {
        self.budget.reclaimed(); // a reader short of memory may ask again
        if !self.budget.is_high() {
            return;
        }
        let mut shrunk = Vec::new();
        for (name, room) in &mut self.rooms {
            let before = room.members.len();
            room.members.retain(|id, member| {
                let behind = member.backlog.bytes() > member.backlog.limit() / BEHIND_FRACTION;
                if behind {
                    slow_consumer(*id, member, counters, "memory budget running short");
                }
                !behind
            });
            if room.members.len() != before {
                shrunk.push(name.clone());
            }
        }
        for name in shrunk {
            self.announce_members(&name, counters);
        }
        let mut trimmed = 0u64;
        while self.budget.excess() > 0 {
            let oldest = self
                .rooms
                .values_mut()
                .filter_map(|room| room.history.oldest_accepted().map(|at| (at, room)))
                .min_by_key(|(at, _)| *at);
            let Some((_, room)) = oldest else { break };
            room.history.drop_oldest();
            trimmed += 1;
        }
        if trimmed > 0 {
            counters
                .history_trimmed
                .fetch_add(trimmed, Ordering::Relaxed);
            // A room whose whole history went keeps its epoch and its ids (a few bytes;
            // the idle-room limit still bounds them), so a client resuming there is
            // told of the gap instead of finding a new room.
            log::warn!(
                "memory budget running high: trimmed the {trimmed} oldest messages from room histories"
            );
        }
    }
}
