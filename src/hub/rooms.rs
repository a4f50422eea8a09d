//! Rooms and fan-out: joining (with the catch-up in the same step), leaving, and
//! publishing — a message kept in history and offered to every member without ever
//! waiting for one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::TrySendError;
use tungstenite::Message;

use super::sharing::{Sharing, WaitingJoin};
use super::{
    ConnId, Counters, Hub, Joined, MAX_IDLE_ROOMS, Member, Notice, Outgoing, PRESENCE_MAX_MEMBERS,
    Published, RoomStats, SLOW_CONSUMER_CODE,
};
use crate::budget::{Category, Reservation};
use crate::hub::cluster::Outbound;
use crate::room::{Duplicate, History, Resume, RoomMessage};

/// A room: its members and its history.
pub(super) struct Room {
    pub(super) members: HashMap<ConnId, Member>,
    pub(super) history: History,
    /// The hub's clock when the room was last used, to find the least recently used.
    pub(super) last_used: u64,
    /// Whether the room is shared through the link.
    pub(super) sharing: Sharing,
    /// The last shared message (epoch, id) this room's members were given, so that
    /// after an outage they get exactly what they missed.
    pub(super) served: Option<(u64, u64)>,
}

impl Room {
    pub(super) fn is_loading(&self) -> bool {
        matches!(self.sharing, Sharing::Loading { .. })
    }

    /// Offers `message` to every member without blocking; members that cannot take it
    /// are dropped as slow consumers. Returns whether any was.
    pub(super) fn broadcast(&mut self, message: &Arc<RoomMessage>, counters: &Counters) -> bool {
        let before = self.members.len();
        self.members
            .retain(|id, member| offer(*id, member, Outgoing::Room(Arc::clone(message)), counters));
        self.members.len() != before
    }

    /// No member, and nobody waiting to become one.
    pub(super) fn is_idle(&self) -> bool {
        self.members.is_empty()
            && !matches!(&self.sharing, Sharing::Loading { waiting, .. } if !waiting.is_empty())
    }
}

/// Tells the publisher, when it is an enveloped member of the room and named its
/// message (`cid`), which id the message got and whether it was a repeat.
pub(super) fn acknowledge(
    room: &Room,
    from: Option<ConnId>,
    cid: Option<String>,
    id: u64,
    duplicate: bool,
    counters: &Counters,
) {
    let (Some(from), Some(cid)) = (from, cid) else {
        return;
    };
    if let Some(member) = room.members.get(&from).filter(|m| !m.raw) {
        let ack = Notice::Ack { cid, id, duplicate };
        offer(from, member, Outgoing::Notice(Box::new(ack)), counters);
    }
}

/// Offers one item to a member without blocking. A queue full in items or in bytes
/// makes it a slow consumer: it is asked to close with 1008. Returns whether the
/// member stays.
pub(super) fn offer(id: ConnId, member: &Member, item: Outgoing, counters: &Counters) -> bool {
    let bytes = item.bytes();
    if !member.backlog.add(bytes) {
        slow_consumer(id, member, counters, "send queue bytes full");
        return false;
    }
    match member.tx.try_send(item) {
        Ok(()) => true,
        Err(TrySendError::Full(_)) => {
            member.backlog.remove(bytes);
            slow_consumer(id, member, counters, "send queue full");
            false
        }
        // Its writer has ended; its reader's Leave is on its way.
        Err(TrySendError::Disconnected(_)) => {
            member.backlog.remove(bytes);
            false
        }
    }
}

/// Closes a member that fell too far behind with 1008, dropping what is queued to it.
pub(super) fn slow_consumer(id: ConnId, member: &Member, counters: &Counters, why: &str) {
    log::warn!("connection {id} is a slow consumer ({why}); closing it with 1008");
    counters.slow_consumers.fetch_add(1, Ordering::Relaxed);
    member.request_close(SLOW_CONSUMER_CODE);
}

impl Hub {
    pub(super) fn room(&mut self, name: String) -> &mut Room {
        let clock = self.clock;
        let limits = self.limits;
        let room = self.rooms.entry(name).or_insert_with(|| Room {
            members: HashMap::new(),
            history: History::new(limits),
            last_used: clock,
            sharing: Sharing::Alone,
            served: None,
        });
        room.last_used = clock;
        room
    }

    /// Adds the member and queues its catch-up in the same step, so the replay and the
    /// live stream meet with no gap and no duplicate.
    pub(super) fn join(
        &mut self,
        name: String,
        id: ConnId,
        member: Member,
        resume: &Resume,
        counters: &Counters,
    ) {
        let link_up = self.link_up;
        let room = self.room(name.clone());
        // A shared room's history comes from the link: the join waits for it.
        let waiting = WaitingJoin {
            id,
            member,
            resume: resume.clone(),
        };
        match &mut room.sharing {
            Sharing::Alone if link_up => {
                room.sharing = Sharing::Loading {
                    early: Vec::new(),
                    waiting: vec![waiting],
                };
                self.request_load(name, counters);
            }
            Sharing::Loading { waiting: w, .. } => w.push(waiting),
            _ => self.join_now(name, waiting, counters),
        }
    }

    pub(super) fn join_now(&mut self, name: String, join: WaitingJoin, counters: &Counters) {
        let WaitingJoin { id, member, resume } = join;
        let room = self.room(name.clone());
        room.members.insert(id, member.clone());
        if !member.raw {
            let plan = room.history.catch_up(&resume, room.members.len());
            if !offer(
                id,
                &member,
                Outgoing::Joined(Box::new(Joined {
                    room: name.clone(),
                    plan,
                })),
                counters,
            ) {
                room.members.remove(&id);
            }
        }
        self.announce_members(&name, counters);
    }

    pub(super) fn leave(&mut self, name: &str, id: ConnId, counters: &Counters) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        if let Sharing::Loading { waiting, .. } = &mut room.sharing {
            waiting.retain(|w| w.id != id);
        }
        if room.members.remove(&id).is_some() {
            self.announce_members(name, counters);
        }
        self.tidy(name);
    }

    /// Publishes into this instance's own sequence (no link, or the link is down).
    pub(super) fn publish_here(&mut self, outbound: Outbound, counters: &Counters) {
        let Outbound {
            room,
            message,
            cid,
            from,
            reply,
            charge,
            ..
        } = outbound;
        let charge = charge.unwrap_or_else(|| self.budget.force(Category::Messages, 0));
        let published = self.publish(room, (message, charge), cid, from, counters);
        if let Some(reply) = reply {
            let _ = reply.send(published);
        }
    }

    /// Keeps the message in history and offers it to every member without ever
    /// blocking. Members that cannot take it are dropped as slow consumers.
    pub(super) fn publish(
        &mut self,
        name: String,
        (message, charge): (Message, Reservation),
        cid: Option<String>,
        from: Option<ConnId>,
        counters: &Counters,
    ) -> Published {
        let room = self.room(name.clone());
        let epoch = room.history.epoch();
        let message = match room.history.append(message, cid.clone()) {
            Ok(message) => {
                message.charge(charge);
                message
            }
            Err(Duplicate { id }) => {
                acknowledge(room, from, cid, id, true, counters);
                return Published {
                    delivered: 0,
                    id,
                    epoch,
                    duplicate: true,
                };
            }
        };
        let dropped = room.broadcast(&message, counters);
        let delivered = room.members.len();
        acknowledge(room, from, cid, message.id, false, counters);
        if dropped {
            self.announce_members(&name, counters);
        }
        self.tidy(&name);
        self.relieve(counters);
        Published {
            delivered,
            id: message.id,
            epoch,
            duplicate: false,
        }
    }

    /// Tells enveloped members the room's new size (small rooms only).
    pub(super) fn announce_members(&mut self, name: &str, counters: &Counters) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let count = room.members.len();
        if count == 0 || count > PRESENCE_MAX_MEMBERS {
            return;
        }
        room.members.retain(|id, member| {
            member.raw
                || offer(
                    *id,
                    member,
                    Outgoing::Notice(Box::new(Notice::Members(count))),
                    counters,
                )
        });
    }

    /// Drops a room nobody needs, and the least recently used idle room when there
    /// are too many of them.
    pub(super) fn tidy(&mut self, name: &str) {
        if self
            .rooms
            .get(name)
            .is_some_and(|r| r.is_idle() && r.history.is_empty() && !r.is_loading())
        {
            self.rooms.remove(name);
        }
        // Counting idle rooms is a scan, so only when there could be too many.
        if self.rooms.len() > MAX_IDLE_ROOMS
            && self.rooms.values().filter(|r| r.is_idle()).count() > MAX_IDLE_ROOMS
        {
            let oldest = self
                .rooms
                .iter()
                .filter(|(_, r)| r.is_idle())
                .min_by_key(|(_, r)| r.last_used)
                .map(|(n, _)| n.clone());
            if let Some(oldest) = oldest {
                log::debug!(
                    "dropping idle room '{oldest}' and its history ({MAX_IDLE_ROOMS} idle rooms kept)"
                );
                self.rooms.remove(&oldest);
            }
        }
    }

    pub(super) fn stats(&self) -> Vec<RoomStats> {
        let mut stats: Vec<_> = self
            .rooms
            .iter()
            .map(|(name, room)| RoomStats {
                name: name.clone(),
                members: room.members.len(),
                history_messages: room.history.len(),
                history_bytes: room.history.bytes(),
            })
            .collect();
        stats.sort_by(|a, b| a.name.cmp(&b.name));
        stats
    }
}
