//! Rooms and fan-out: a room is its members and its history; publishing keeps a
//! message in history and offers it to every member without ever waiting for one.
//! Joining and leaving are in `joining.rs`, the offer itself in `offer.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use tungstenite::Message;

use super::offer::{acknowledge, offer};
use super::presence::Presence;
use super::sharing::Sharing;
use super::{ConnId, Counters, Hub, Member, Outgoing, Published, RoomStats};
use crate::budget::{Category, Reservation};
use crate::hub::cluster::Outbound;
use crate::protocol::rights::owner_of;
use crate::room::{Duplicate, History, RoomMessage, Tag};

/// A repeat of a message the room has (client id `cid`, first copy `id`): nothing is
/// broadcast, and the publisher is told which id the first copy got.
pub(super) fn duplicate(
    room: &Room,
    (from, cid): (Option<ConnId>, Option<String>),
    id: u64,
    counters: &Counters,
) -> Published {
    acknowledge(room, from, cid, id, true, counters);
    Published {
        delivered: 0,
        id,
        epoch: room.history.epoch(),
        duplicate: true,
    }
}

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
    /// Who is in the room (named connections only).
    pub(super) presence: Presence,
    /// Whether the store has this room (`--data-dir`): dropping it then drops it there.
    pub(super) on_disk: bool,
    /// Its publishes numbered but not yet written (`--data-dir`): the next one's id
    /// comes after them, and the room is not idle while there are any.
    pub(super) unwritten: u64,
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

    /// No member, nobody waiting to become one, and no message on its way to the disk.
    pub(super) fn is_idle(&self) -> bool {
        self.members.is_empty()
            && self.unwritten == 0
            && !matches!(&self.sharing, Sharing::Loading { waiting, .. } if !waiting.is_empty())
    }
}

impl Hub {
    /// Room `name`, made if there is none: from the store if it has the room
    /// (`--data-dir`), else empty with a fresh epoch.
    pub(super) fn room(&mut self, name: String) -> &mut Room {
        let clock = self.clock;
        if !self.rooms.contains_key(&name) {
            let restored = self.restore(&name);
            let on_disk = restored.is_some();
            let history = restored.unwrap_or_else(|| History::new(self.limits));
            let room = Room {
                members: HashMap::new(),
                history,
                last_used: clock,
                sharing: Sharing::Alone,
                served: None,
                presence: Presence::default(),
                on_disk,
                unwritten: 0,
            };
            self.rooms.insert(name.clone(), room);
        }
        let room = self.rooms.get_mut(&name).expect("just made");
        room.last_used = clock;
        room
    }

    /// Forgets room `name` with its history, on disk too.
    pub(super) fn drop_room(&mut self, name: &str) -> Option<Room> {
        let room = self.rooms.remove(name)?;
        if room.on_disk {
            self.pending.dropped.push(name.to_string());
        }
        Some(room)
    }

    /// Publishes into this instance's own sequence (no link, or the link is down).
    pub(super) fn publish_here(&mut self, outbound: Outbound, counters: &Counters) {
        let Outbound {
            room,
            message,
            tag,
            from,
            reply,
            charge,
            ..
        } = outbound;
        let charge = charge.unwrap_or_else(|| self.budget.force(Category::Messages, 0));
        let published = self.publish(room, (message, charge), tag, from, counters);
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
        tag: Tag,
        from: Option<ConnId>,
        counters: &Counters,
    ) -> Published {
        let cid = tag.cid.clone();
        let room = self.room(name.clone());
        let message = match room.history.append(message, tag) {
            Ok(message) => message,
            Err(Duplicate { id }) => return duplicate(room, (from, cid), id, counters),
        };
        message.charge(charge);
        self.fan_out(&name, &message, from, counters)
    }

    /// Offers a message the room's history holds to every member without ever
    /// blocking, and acknowledges it to its publisher. Members that cannot take it are
    /// dropped as slow consumers.
    pub(super) fn fan_out(
        &mut self,
        name: &str,
        message: &Arc<RoomMessage>,
        from: Option<ConnId>,
        counters: &Counters,
    ) -> Published {
        let room = self.room(name.to_string());
        let dropped = room.broadcast(message, counters);
        let delivered = room.members.len();
        acknowledge(room, from, message.cid.clone(), message.id, false, counters);
        if dropped {
            self.announce_members(name, counters);
        }
        self.tidy(name);
        self.relieve(counters);
        Published {
            delivered,
            id: message.id,
            epoch: message.epoch,
            duplicate: false,
        }
    }

    /// Drops a room nobody needs, and the least recently used idle room when there
    /// are more than `--max-idle-rooms` of them. A personal room holding messages is
    /// never dropped for that: they are waiting for its one reader, and only the
    /// operator and its owner can create one. Its history is bounded like any other
    /// (`--history`, `--history-bytes`, and the memory budget trimming the oldest
    /// messages of all rooms); once empty, it counts like any idle room.
    pub(super) fn tidy(&mut self, name: &str) {
        if self
            .rooms
            .get(name)
            .is_some_and(|r| r.is_idle() && r.history.is_empty() && !r.is_loading())
        {
            self.drop_room(name);
        }
        let max = self.max_idle_rooms;
        let droppable = |(name, r): &(&String, &Room)| {
            r.is_idle() && (owner_of(name).is_none() || r.history.is_empty())
        };
        // Counting idle rooms is a scan, so only when there could be too many.
        if self.rooms.len() > max && self.rooms.iter().filter(droppable).count() > max {
            let oldest = self
                .rooms
                .iter()
                .filter(droppable)
                .min_by_key(|(_, r)| r.last_used)
                .map(|(n, _)| n.clone());
            if let Some(oldest) = oldest {
                log::debug!(
                    "dropping idle room '{oldest}' and its history ({max} idle rooms kept)"
                );
                self.drop_room(&oldest);
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
                last_id: room.history.last_id(),
                epoch: room.history.epoch(),
            })
            .collect();
        stats.sort_by(|a, b| a.name.cmp(&b.name));
        stats
    }
}
