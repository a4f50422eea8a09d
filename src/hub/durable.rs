//! Publishing with `--data-dir`: nothing is acknowledged before it is on disk.
//!
//! Without a store the hub numbers, keeps and delivers a message in one step
//! (`rooms.rs`). With one, a publish is *staged* instead: numbered, but neither kept
//! nor delivered. The hub goes on taking publishes from its queue, and when the queue
//! is empty (or [`MAX_GROUP`] are staged) it hands them all to the commit thread
//! (`committer.rs`), which writes them in one transaction with one fsync — *group
//! commit*. While that commit runs, the hub stages the next group. When the commit
//! returns, the hub keeps, delivers and acknowledges each of its publishes, in order,
//! and hands over the next group. Under load many publishes share one fsync; alone, a
//! publish waits for one.
//!
//! If the commit fails (a full disk, an I/O error) none of them is kept or delivered:
//! HTTP publishers get `503`, WebSocket publishers an `error` frame, and the next
//! publish tries again — a disk that has room again works again.
//!
//! Every other kind of command (a join, a leave, the operator's) first waits until
//! everything staged is written, so a joining client never sees a message in its
//! catch-up that is then delivered to it again.

use std::sync::Arc;

use super::cluster::Outbound;
use super::committer::{Committer, Written};
use super::offer::offer;
use super::rooms::duplicate;
use super::{ConnId, Counters, Hub, Notice, Outgoing, Published};
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
    reply: Option<crossbeam_channel::Sender<Published>>,
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
                .chain(&self.in_flight)
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
        // Ids follow the messages of this room still on their way to the disk.
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
        // A full group does not wait for the queue to empty: it goes as soon as the
        // commit under way returns.
        if self.staged.len() >= self.group_limit() {
            self.await_commit(counters);
            self.write_staged(false);
        }
    }

    /// Most publishes in one commit: one under `--fsync always`, else [`MAX_GROUP`].
    fn group_limit(&self) -> usize {
        let each = self.store.as_ref().is_some_and(|c| c.store().commit_each());
        if each { 1 } else { MAX_GROUP }
    }

    /// Hands the next group to the commit thread, unless a commit is under way: what
    /// is staged (up to the group limit) and history that left or rooms that went.
    /// History that left alone waits for a commit that writes something else, unless
    /// `trims_too` (the tick): a message past the limits costs nothing until then.
    pub(super) fn write_staged(&mut self, trims_too: bool) {
        let Some(committer) = self.store.as_ref() else {
            return;
        };
        let worth_it = !self.staged.is_empty()
            || !self.pending.dropped.is_empty()
            || (trims_too && !self.pending.is_empty());
        if committer.busy() || !worth_it {
            return;
        }
        let take = self.staged.len().min(self.group_limit());
        self.in_flight.extend(self.staged.drain(..take));
        let mut changes = std::mem::take(&mut self.pending);
        for s in &self.in_flight {
            changes
                .messages
                .push((s.room.clone(), Arc::clone(&s.message)));
            changes.rooms.retain(|(room, ..)| *room != s.room);
            changes
                .rooms
                .push((s.room.clone(), s.message.epoch, s.message.id + 1));
        }
        if let Some(committer) = self.store.as_mut() {
            committer.send(changes);
        }
    }

    /// Waits for the commit under way, if any, and acts on how it went.
    fn await_commit(&mut self, counters: &Counters) {
        if let Some(written) = self.store.as_mut().and_then(Committer::wait) {
            self.committed(written, counters);
        }
    }

    /// Writes everything staged, and waits until it is written: every other kind of
    /// command sees the rooms as they are on disk. (History that left alone waits, as
    /// in [`Hub::write_staged`], unless `trims_too`.)
    pub(super) fn settle(&mut self, counters: &Counters, trims_too: bool) {
        self.await_commit(counters);
        while !self.staged.is_empty() {
            self.write_staged(trims_too);
            self.await_commit(counters);
        }
        self.write_staged(trims_too);
        self.await_commit(counters);
    }

    /// [`Hub::settle`] for every command but a publish.
    pub(super) fn flush(&mut self, counters: &Counters) {
        self.settle(counters, false);
    }

    /// A commit returned: keep, deliver and acknowledge its publishes in order — or,
    /// if it failed, refuse them and everything staged behind them (their ids came
    /// after ids that will now never exist), and start the next commit.
    pub(super) fn committed(&mut self, written: Written, counters: &Counters) {
        let in_flight = std::mem::take(&mut self.in_flight);
        match written.result {
            Ok(()) => in_flight
                .into_iter()
                .for_each(|s| self.keep_and_deliver(s, counters)),
            Err(e) => {
                if let Some(committer) = &self.store {
                    let failures = &committer.store().figures.failures;
                    failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let refused: Vec<Staged> =
                    in_flight.into_iter().chain(self.staged.drain(..)).collect();
                log::error!(
                    "could not store {} messages, refused them: {e}",
                    refused.len()
                );
                // What left history or went is written with the next commit.
                self.pending.trims.extend(written.changes.trims);
                self.pending.dropped.extend(written.changes.dropped);
                refused.into_iter().for_each(|s| self.refuse(s, counters));
            }
        }
        self.write_staged(false);
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
}
