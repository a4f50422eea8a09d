//! Joining and leaving a room. A join adds the member and queues its catch-up in the
//! same step, so the replay and the live messages meet with no gap and no duplicate;
//! small rooms tell their members how many they are.

use super::offer::offer;
use super::sharing::{Sharing, WaitingJoin};
use super::{ConnId, Counters, Hub, Joined, Member, Notice, Outgoing, PRESENCE_MAX_MEMBERS};
use std::sync::Arc;

use crate::room::Resume;

impl Hub {
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
        let first = member
            .person
            .as_ref()
            .filter(|person| member.listed && room.presence.arrive(id, person));
        if !member.raw {
            let plan = room.history.catch_up(&resume, room.members.len());
            let users = room.users_for_welcome();
            let joined = Joined {
                room: name.clone(),
                plan,
                users,
            };
            if !offer(id, &member, Outgoing::Joined(Box::new(joined)), counters) {
                room.members.remove(&id);
            }
        }
        // The others hear of a person's first connection only; the joiner's welcome
        // already lists them.
        if let Some(person) = first {
            room.announce(&Notice::Join(Arc::clone(person)), id, counters);
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
        // A slow consumer was taken out of `members` already, but it was connected
        // until now: its person leaves with this.
        if let Some(person) = room.presence.depart(id) {
            room.announce(&Notice::Leave(person), id, counters);
        }
        if room.members.remove(&id).is_some() {
            self.announce_members(name, counters);
        }
        self.tidy(name);
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
}
