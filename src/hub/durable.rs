//! Publishing with `--data-dir`: nothing is acknowledged before it is on disk.
//!
//! Without a store the hub numbers, keeps and delivers a message in one step
//! (`rooms.rs`). With one, a publish is *staged* instead: numbered, but neither kept
//! nor delivered. The hub goes on taking publishes from its queue, and when the queue
//! is empty (or [`MAX_GROUP`] are staged, or another kind of command comes) it writes
//! them all in one transaction with one fsync — *group commit* — and only then keeps,
//! delivers and acknowledges each one, in order. Under load many publishes share one
//! fsync; alone, a publish waits for one.
//!
//! If the commit fails (a full disk, an I/O error) none of them is kept or delivered:
//! HTTP publishers get `503`, WebSocket publishers an `error` frame, and the next
//! publish tries again — a disk that has room again works again.
//!
//! A join that arrives while publishes are staged waits for their commit (every other
//! kind of command first commits what is staged), so a joining client never sees a
//! message in its catch-up that is then delivered to it again.

use std::sync::Arc;

use super::cluster::Outbound;
use super::offer::offer;
use super::rooms::duplicate;
use super::{ConnId, Counters, Hub, Notice, Outgoing, Published, Reply};
use crate::budget::Reservation;
use crate::room::{RoomMessage, now_millis};

/// Most publishes written in one commit.
pub const MAX_GROUP: usize = 256;

/// What a WebSocket publisher hears when its message could not be stored.
pub const NOT_STORED: &str = "not stored: the server could not write it to disk; try again";

/// A publish numbered and waiting for its commit.
pub(super) struct Staged {
    room: String,
    message: Arc<RoomMessage>,
    from: Option<ConnId>,
    reply: Option<Reply<Published>>,
    charge: Reservation,
}

impl Hub {
    /// Numbers a publish and stages it for the next commit (a repeat of a message the
    /// room has is answered at once, as without a store).
    pub(super) fn stage(&mut self, outbound: Outbound, counters: &Counters) {
        let Outbound {
            room: name,
            message,
            tag,
            from,
            reply,
            charge,
            ..
        } = outbound;
        // A repeat of a message still waiting for its commit waits for it too.
        if tag.cid.is_some()
            && self
                .staged
                .iter()
                .any(|s| s.room == name && s.message.cid == tag.cid)
        {
            self.flush(counters);
        }
        let room = self.room(name.clone());
        if let Some(id) = tag.cid.as_deref().and_then(|cid| room.history.seen(cid)) {
            let published = duplicate(room, (from, tag.cid), id, counters);
            if let Some(reply) = reply {
                let _ = reply.send(published);
            }
            return;
        }
        // Ids follow the room's messages still waiting for the commit; a room with
        // such messages is never idle, so never dropped before they are kept.
        let id = room.history.next_id() + room.unwritten;
        room.unwritten += 1;
        let epoch = room.history.epoch();
        let message = Arc::new(RoomMessage::new(id, epoch, now_millis(), tag, message));
        let charge =
            charge.unwrap_or_else(|| self.budget.force(crate::budget::Category::Messages, 0));
        self.staged.push(Staged {
            room: name,
            message,
            from,
            reply,
            charge,
        });
        if self.staged.len() >= MAX_GROUP || self.store.as_ref().is_some_and(|s| s.commit_each()) {
            self.flush(counters);
        }
    }

    /// Writes what is staged (and history that left, rooms that went) in one commit,
    /// then keeps, delivers and acknowledges each staged publish — or refuses them all
    /// if the commit failed.
    pub(super) fn flush(&mut self, counters: &Counters) {
        // History that left alone waits for a commit that writes something else (or
        // the next tick): a message past the limits costs nothing until then.
        if self.staged.is_empty() && self.pending.dropped.is_empty() {
            return;
        }
        self.commit(counters);
    }

    /// [`Hub::flush`], whatever is waiting.
    fn commit(&mut self, counters: &Counters) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        if self.staged.is_empty() && self.pending.is_empty() {
            return;
        }
        let staged = std::mem::take(&mut self.staged);
        let mut changes = std::mem::take(&mut self.pending);
        for s in &staged {
            changes
                .messages
                .push((s.room.clone(), Arc::clone(&s.message)));
            changes.rooms.retain(|(room, ..)| *room != s.room);
            changes
                .rooms
                .push((s.room.clone(), s.message.epoch, s.message.id + 1));
        }
        match store.commit(&changes) {
            Ok(()) => staged
                .into_iter()
                .for_each(|s| self.keep_and_deliver(s, counters)),
            Err(e) => {
                store
                    .figures
                    .failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                log::error!(
                    "could not store {} messages, refused them: {e}",
                    staged.len()
                );
                // What left history or went is written with the next commit.
                self.pending.trims = changes.trims;
                self.pending.dropped = changes.dropped;
                staged.into_iter().for_each(|s| self.refuse(s, counters));
            }
        }
    }

    /// A staged publish is on disk: keep it, deliver it, acknowledge it.
    fn keep_and_deliver(&mut self, staged: Staged, counters: &Counters) {
        let Staged {
            room: name,
            message,
            from,
            reply,
            charge,
        } = staged;
        let room = self.room(name.clone());
        room.unwritten -= 1;
        room.history.insert(Arc::clone(&message));
        room.on_disk = true;
        message.charge(charge);
        // History it pushed out leaves the disk with the next commit.
        let oldest = room.history.oldest_id();
        // One trim per room per commit: a later one covers an earlier one.
        self.pending.trims.retain(|(room, _)| *room != name);
        self.pending.trims.push((name.clone(), oldest));
        let published = self.fan_out(&name, &message, from, counters);
        if let Some(reply) = reply {
            let _ = reply.send(published);
        }
    }

    /// A staged publish could not be stored: its publisher is told, nobody else.
    fn refuse(&mut self, staged: Staged, counters: &Counters) {
        // An HTTP publisher's reply channel is dropped unanswered: `503`.
        let Staged { room, from, .. } = staged;
        let Some(room) = self.rooms.get_mut(&room) else {
            return;
        };
        room.unwritten -= 1;
        let Some(from) = from else {
            return;
        };
        if let Some(member) = room.members.get(&from) {
            let refusal = Outgoing::Notice(Box::new(Notice::Error(NOT_STORED)));
            if !offer(from, member, refusal, counters) {
                room.members.remove(&from);
            }
        }
    }

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
        self.commit(counters);
        self.sync_store();
    }

    /// Forces to disk what was committed without fsync (`--fsync never`).
    pub(super) fn sync_store(&mut self) {
        if let Some(Err(e)) = self.store.as_mut().map(crate::store::Store::sync) {
            log::error!("could not force the store to disk: {e}");
        }
    }

    /// At start-up: the idle-room limit applies to the rooms on disk too (all of them
    /// are idle now), least recently used first. Personal rooms are kept: their
    /// messages wait for their one reader.
    pub(super) fn prune_store(&mut self) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
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
        let loaded = match self.store.as_mut()?.load(name) {
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
