//! The store apart from publishing (`--data-dir`): reading a room back when it is
//! first used, applying the idle-room limit to the file at start-up, and the hub's
//! once-a-second tick (`--history-ttl`, `--fsync never`).

use std::sync::Arc;

use super::{Counters, Hub};
use crate::room::now_millis;

impl Hub {
    /// The hub's own work, every [`super::TICK`] when it has some: messages past
    /// `--history-ttl` leave history (in memory now, on disk with the next commit),
    /// and under `--fsync never` the disk is forced.
    pub(super) fn tick(&mut self, counters: &Counters) {
        if let Some(ttl) = self.ttl {
            let cutoff = now_millis().saturating_sub(ttl.as_millis() as u64);
            let mut emptied = Vec::new();
            for (name, room) in &mut self.rooms {
                if room.history.expire(cutoff) > 0 {
                    if self.store.is_some() {
                        self.pending
                            .trims
                            .push((name.clone(), room.history.oldest_id()));
                    }
                    emptied.push(name.clone());
                }
            }
            emptied.iter().for_each(|name| self.tidy(name));
        }
        self.settle(counters, true);
        self.sync_store();
    }

    /// Forces to disk what was committed without fsync (`--fsync never`).
    pub(super) fn sync_store(&mut self) {
        if let Some(Err(e)) = self.store.as_ref().map(|c| c.store().sync()) {
            log::error!("could not force the store to disk: {e}");
        }
    }

    /// At start-up: the idle-room limit applies to the rooms on disk too (all of them
    /// are idle now), least recently used first. Personal rooms are kept: their
    /// messages wait for their one reader.
    pub(super) fn prune_store(&mut self) {
        let Some(committer) = self.store.as_ref() else {
            return;
        };
        let mut store = committer.store();
        let rooms = match store.rooms_by_age() {
            Ok(rooms) => rooms,
            Err(e) => return log::error!("could not list the stored rooms: {e}"),
        };
        let shared: Vec<String> = rooms
            .into_iter()
            .map(|(name, _)| name)
            .filter(|name| crate::protocol::rights::owner_of(name).is_none())
            .collect();
        let excess = shared.len().saturating_sub(self.max_idle_rooms);
        let changes = crate::store::Changes {
            dropped: shared.into_iter().take(excess).collect(),
            ..Default::default()
        };
        if let Err(e) = store.commit(&changes) {
            log::error!("could not drop {excess} rooms past --max-idle-rooms from the store: {e}");
        }
    }

    /// A room the store had, as it was (`None`: the store has no such room, or no
    /// store). Its messages are charged to the memory budget again.
    pub(super) fn restore(&mut self, name: &str) -> Option<crate::room::History> {
        let loaded = match self.store.as_ref()?.store().load(name) {
            Ok(loaded) => loaded?,
            Err(e) => {
                log::error!("could not read room '{name}' from the store ({e}); it starts empty");
                return None;
            }
        };
        let messages = loaded
            .messages
            .into_iter()
            .map(|message| {
                let message = Arc::new(message);
                message.charge(self.budget.force(crate::budget::Category::Messages, 0));
                message
            })
            .collect();
        let mut history =
            crate::room::History::restored(self.limits, loaded.epoch, loaded.next_id, messages);
        if let Some(ttl) = self.ttl {
            history.expire(now_millis().saturating_sub(ttl.as_millis() as u64));
        }
        Some(history)
    }
}
