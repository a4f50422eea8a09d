//! A room's history: ids counting up from one under an epoch, the newest messages
//! within the room's limits (count and bytes), and the client ids they carried, so a
//! resent message is recognised as a duplicate.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tungstenite::Message;

use super::{CatchUp, Resume, RoomMessage, Tag, now_millis};

/// Limits on one room's history.
#[derive(Clone, Copy, Debug)]
pub struct HistoryLimits {
    /// Most messages kept.
    pub messages: usize,
    /// Most bytes kept (see [`RoomMessage::cost`]).
    pub bytes: usize,
}

/// What publishing with a client id the room has already seen produced.
#[derive(Debug, PartialEq, Eq)]
pub struct Duplicate {
    /// The id the first copy got.
    pub id: u64,
}

/// One room's history and sequence.
#[derive(Debug)]
pub struct History {
    epoch: u64,
    next_id: u64,
    messages: VecDeque<Arc<RoomMessage>>,
    bytes: usize,
    /// Client id → the id its message got, for every message still in history.
    seen_cids: HashMap<String, u64>,
    limits: HistoryLimits,
    /// The epoch this one continued ([`History::continue_as`]): its ids still apply.
    previous_epoch: Option<u64>,
}

impl History {
    /// An empty history with a fresh random epoch.
    pub fn new(limits: HistoryLimits) -> Self {
        History::with_epoch(new_epoch(), limits)
    }

    /// An empty history with the given epoch.
    pub fn with_epoch(epoch: u64, limits: HistoryLimits) -> Self {
        History {
            epoch,
            next_id: 1,
            messages: VecDeque::new(),
            bytes: 0,
            seen_cids: HashMap::new(),
            limits,
            previous_epoch: None,
        }
    }

    /// The room's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Newest id assigned (0 if none).
    pub fn last_id(&self) -> u64 {
        self.next_id - 1
    }

    /// Messages kept.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Bytes kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Gives `payload` the next id, keeps it, and evicts the oldest messages beyond the
    /// limits. A `cid` seen before is refused as a [`Duplicate`].
    pub fn append(&mut self, payload: Message, tag: Tag) -> Result<Arc<RoomMessage>, Duplicate> {
        if let Some(id) = tag.cid.as_ref().and_then(|c| self.seen_cids.get(c)) {
            return Err(Duplicate { id: *id });
        }
        let message = Arc::new(RoomMessage::new(
            self.next_id,
            self.epoch,
            now_millis(),
            tag,
            payload,
        ));
        self.keep(Arc::clone(&message));
        Ok(message)
    }

    /// Keeps a message whose id was given elsewhere (by Redis, for a room shared by
    /// several instances). Ids must grow: an id at or below [`History::last_id`] is a
    /// copy already kept and is refused with `false`.
    pub fn insert(&mut self, message: Arc<RoomMessage>) -> bool {
        if message.id <= self.last_id() {
            return false;
        }
        self.keep(message);
        true
    }

    fn keep(&mut self, message: Arc<RoomMessage>) {
        self.next_id = message.id + 1;
        if let Some(cid) = &message.cid {
            self.seen_cids.insert(cid.clone(), message.id);
        }
        self.bytes += message.cost();
        self.messages.push_back(message);
        self.evict();
    }

    /// Goes on under a fresh epoch: new ids continue after the old ones, and a client
    /// that resumes with the old epoch is still served from what is kept. Used when a
    /// shared room loses Redis and carries on alone (its next ids are this instance's
    /// own, so they must not pass for the shared sequence's).
    pub fn continue_as(&mut self, epoch: u64) {
        self.previous_epoch = Some(self.epoch);
        self.epoch = epoch;
    }

    fn evict(&mut self) {
        while self.messages.len() > self.limits.messages
            || (self.bytes > self.limits.bytes && !self.messages.is_empty())
        {
            self.drop_oldest();
        }
    }

    /// When the oldest message kept was accepted (`None` when none is kept): the hub
    /// trims the oldest history across all rooms first when memory runs short.
    pub fn oldest_accepted(&self) -> Option<std::time::Instant> {
        self.messages.front().map(|m| m.accepted)
    }

    /// Forgets the oldest message kept and returns its cost (0 when none is kept). A
    /// client resuming from before it is then told of a gap, as for any eviction.
    pub fn drop_oldest(&mut self) -> usize {
        let Some(old) = self.messages.pop_front() else {
            return 0;
        };
        self.bytes -= old.cost();
        if let Some(cid) = &old.cid {
            self.seen_cids.remove(cid);
        }
        old.cost()
    }

    /// What a client resuming with `resume` gets: the gap it must be told about, and
    /// the messages to replay.
    ///
    /// An id at or beyond the room's newest — up to `u64::MAX`, the largest a client
    /// can name — is the live edge: nothing to replay and no gap (the welcome's
    /// `last_id` tells the client where the room really is). Only another epoch makes
    /// the id meaningless, and then the whole history follows, as for any id.
    pub fn catch_up(&self, resume: &Resume, members: usize) -> CatchUp {
        let mut plan = CatchUp {
            epoch: self.epoch,
            last_id: self.last_id(),
            members,
            ..CatchUp::default()
        };
        let after = match *resume {
            Resume::Live => return plan,
            Resume::Since {
                epoch: Some(epoch), ..
            } if epoch != self.epoch && Some(epoch) != self.previous_epoch => {
                plan.epoch_changed = true;
                0 // the old ids mean nothing here: everything in this epoch is new
            }
            Resume::Since { id, .. } => id,
        };
        // The first id the client has not seen. There is none after the largest id:
        // `after + 1` would wrap to 0 and report everything as a gap.
        let Some(first_unseen) = after.checked_add(1) else {
            return plan;
        };
        let oldest_kept = self.messages.front().map_or(self.next_id, |m| m.id);
        if first_unseen < oldest_kept {
            // `oldest_kept` is at least 1 here (it is above `first_unseen`).
            plan.gap = Some((first_unseen, oldest_kept - 1));
        }
        plan.replay = self
            .messages
            .iter()
            .filter(|m| m.id > after)
            .cloned()
            .collect();
        plan
    }
}

/// A random epoch from the operating system's generator; never 0.
pub fn new_epoch() -> u64 {
    match getrandom::u64() {
        Ok(0) | Err(_) => now_millis() | 1, // still distinct across restarts
        Ok(n) => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::room::MESSAGE_OVERHEAD_BYTES;

    const ROOMY: HistoryLimits = HistoryLimits {
        messages: 1000,
        bytes: 1 << 30,
    };

    fn ids(messages: &[Arc<RoomMessage>]) -> Vec<u64> {
        messages.iter().map(|m| m.id).collect()
    }

    fn filled(n: u64, limits: HistoryLimits) -> History {
        let mut h = History::with_epoch(7, limits);
        for i in 1..=n {
            h.append(Message::text(format!("m{i}")), Tag::default())
                .unwrap();
        }
        h
    }

    #[test]
    fn trimming_the_oldest_message_is_reported_as_a_gap() {
        let mut h = filled(3, ROOMY);
        let cost = h.drop_oldest();
        assert!(cost > MESSAGE_OVERHEAD_BYTES);
        assert_eq!(h.len(), 2);
        let plan = h.catch_up(&Resume::Since { id: 0, epoch: None }, 1);
        assert_eq!(plan.gap, Some((1, 1)));
        assert_eq!(ids(&plan.replay), vec![2, 3]);
        h.drop_oldest();
        h.drop_oldest();
        assert_eq!(
            (h.drop_oldest(), h.bytes(), h.oldest_accepted()),
            (0, 0, None)
        );
    }

    #[test]
    fn ids_count_up_from_one_without_holes() {
        let h = filled(3, ROOMY);
        assert_eq!(h.last_id(), 3);
        assert_eq!(
            ids(&h.catch_up(&Resume::Since { id: 0, epoch: None }, 1).replay),
            vec![1, 2, 3]
        );
    }

    #[test]
    fn a_repeated_client_id_is_a_duplicate_of_the_first() {
        let mut h = History::with_epoch(7, ROOMY);
        let first = h.append(Message::text("a"), Tag::cid("c1")).unwrap();
        assert_eq!(
            h.append(Message::text("a again"), Tag::cid("c1"))
                .unwrap_err(),
            Duplicate { id: first.id }
        );
        assert_eq!(h.len(), 1);
        assert!(h.append(Message::text("b"), Tag::cid("c2")).is_ok());
        assert!(h.append(Message::text("no id"), Tag::default()).is_ok());
        assert!(
            h.append(Message::text("no id"), Tag::default()).is_ok(),
            "messages without ids are never duplicates"
        );
    }

    #[test]
    fn history_keeps_the_newest_n_messages() {
        let h = filled(
            10,
            HistoryLimits {
                messages: 4,
                bytes: 1 << 30,
            },
        );
        assert_eq!(h.len(), 4);
        assert_eq!(
            ids(&h
                .catch_up(
                    &Resume::Since {
                        id: 0,
                        epoch: Some(7)
                    },
                    1
                )
                .replay),
            vec![7, 8, 9, 10]
        );
    }

    #[test]
    fn the_byte_cap_evicts_old_messages() {
        let mut h = History::with_epoch(
            7,
            HistoryLimits {
                messages: 1000,
                bytes: 10_000,
            },
        );
        for _ in 0..100 {
            h.append(Message::binary(vec![0u8; 1000]), Tag::default())
                .unwrap();
        }
        assert!(h.bytes() <= 10_000, "{} bytes kept", h.bytes());
        assert!(h.len() >= 8, "kept only {}", h.len());
        assert_eq!(h.last_id(), 100);
    }

    #[test]
    fn client_ids_are_forgotten_with_the_messages_that_carried_them() {
        let mut h = History::with_epoch(
            7,
            HistoryLimits {
                messages: 2,
                bytes: 1 << 30,
            },
        );
        h.append(Message::text("a"), Tag::cid("old")).unwrap();
        h.append(Message::text("b"), Tag::default()).unwrap();
        h.append(Message::text("c"), Tag::default()).unwrap();
        assert!(
            h.append(Message::text("a"), Tag::cid("old")).is_ok(),
            "outside the window it is new again"
        );
    }

    #[test]
    fn resuming_replays_only_what_came_after() {
        let h = filled(5, ROOMY);
        let plan = h.catch_up(
            &Resume::Since {
                id: 3,
                epoch: Some(7),
            },
            2,
        );
        assert_eq!(ids(&plan.replay), vec![4, 5]);
        assert_eq!(
            (plan.gap, plan.epoch_changed, plan.last_id, plan.members),
            (None, false, 5, 2)
        );
        assert!(
            h.catch_up(
                &Resume::Since {
                    id: 5,
                    epoch: Some(7)
                },
                1
            )
            .replay
            .is_empty()
        );
        assert!(h.catch_up(&Resume::Live, 1).replay.is_empty());
    }

    #[test]
    fn resuming_past_the_history_reports_the_gap() {
        let h = filled(
            10,
            HistoryLimits {
                messages: 3,
                bytes: 1 << 30,
            },
        );
        let plan = h.catch_up(
            &Resume::Since {
                id: 2,
                epoch: Some(7),
            },
            1,
        );
        assert_eq!(plan.gap, Some((3, 7)));
        assert_eq!(ids(&plan.replay), vec![8, 9, 10]);
    }

    #[test]
    fn another_epoch_gets_the_whole_history_and_is_told_so() {
        let h = filled(
            10,
            HistoryLimits {
                messages: 3,
                bytes: 1 << 30,
            },
        );
        let plan = h.catch_up(
            &Resume::Since {
                id: 9,
                epoch: Some(99),
            },
            1,
        );
        assert!(plan.epoch_changed);
        assert_eq!(plan.gap, Some((1, 7)));
        assert_eq!(ids(&plan.replay), vec![8, 9, 10]);
    }

    #[test]
    fn resuming_from_the_largest_id_is_the_live_edge() {
        let evicted = HistoryLimits {
            messages: 3,
            bytes: 1 << 30,
        };
        for h in [filled(0, ROOMY), filled(5, ROOMY), filled(10, evicted)] {
            for epoch in [None, Some(7)] {
                let plan = h.catch_up(
                    &Resume::Since {
                        id: u64::MAX,
                        epoch,
                    },
                    1,
                );
                assert_eq!(
                    (plan.gap, plan.replay.len(), plan.epoch_changed),
                    (None, 0, false),
                    "{} messages kept, epoch {epoch:?}",
                    h.len()
                );
                assert_eq!(plan.last_id, h.last_id());
            }
        }
    }

    #[test]
    fn any_id_beyond_the_newest_is_the_live_edge_too() {
        let h = filled(
            10,
            HistoryLimits {
                messages: 3,
                bytes: 1 << 30,
            },
        );
        for id in [10, 11, 1000, u64::MAX - 1, u64::MAX] {
            let plan = h.catch_up(&Resume::Since { id, epoch: Some(7) }, 1);
            assert_eq!((plan.gap, plan.replay.len()), (None, 0), "since {id}");
        }
    }

    #[test]
    fn the_largest_id_from_another_epoch_still_gets_the_whole_history() {
        let h = filled(
            10,
            HistoryLimits {
                messages: 3,
                bytes: 1 << 30,
            },
        );
        let plan = h.catch_up(
            &Resume::Since {
                id: u64::MAX,
                epoch: Some(99),
            },
            1,
        );
        assert!(plan.epoch_changed);
        assert_eq!(plan.gap, Some((1, 7)));
        assert_eq!(ids(&plan.replay), vec![8, 9, 10]);
    }

    #[test]
    fn the_largest_id_of_a_continued_epoch_is_the_live_edge() {
        let mut h = filled(3, ROOMY);
        h.continue_as(8);
        h.append(Message::text("m4"), Tag::default()).unwrap();
        let plan = h.catch_up(
            &Resume::Since {
                id: u64::MAX,
                epoch: Some(7),
            },
            1,
        );
        assert_eq!(
            (plan.gap, plan.replay.len(), plan.epoch_changed),
            (None, 0, false)
        );
    }

    #[test]
    fn messages_numbered_elsewhere_are_kept_in_order_once() {
        let mut h = History::with_epoch(7, ROOMY);
        let numbered = |id| {
            Arc::new(RoomMessage::new(
                id,
                7,
                0,
                Tag::default(),
                Message::text("x"),
            ))
        };
        assert!(h.insert(numbered(4)));
        assert!(h.insert(numbered(9)));
        assert!(!h.insert(numbered(9)), "a copy is refused");
        assert!(!h.insert(numbered(5)), "so is anything older");
        assert_eq!(h.last_id(), 9);
        let plan = h.catch_up(
            &Resume::Since {
                id: 4,
                epoch: Some(7),
            },
            1,
        );
        assert_eq!(ids(&plan.replay), vec![9]);
    }

    #[test]
    fn a_continued_history_still_serves_the_old_epoch() {
        let mut h = filled(3, ROOMY);
        h.continue_as(8);
        h.append(Message::text("m4"), Tag::default()).unwrap();
        let old = h.catch_up(
            &Resume::Since {
                id: 2,
                epoch: Some(7),
            },
            1,
        );
        assert!(!old.epoch_changed);
        assert_eq!(ids(&old.replay), vec![3, 4]);
        assert_eq!(old.epoch, 8);
        let stranger = h.catch_up(
            &Resume::Since {
                id: 2,
                epoch: Some(99),
            },
            1,
        );
        assert!(stranger.epoch_changed);
    }

    #[test]
    fn epochs_are_random() {
        assert_ne!(History::new(ROOMY).epoch(), History::new(ROOMY).epoch());
    }
}
