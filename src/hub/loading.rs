//! Loading a shared room (see `sharing.rs`): the hub asks the link for the room's
//! epoch and newest messages, and when the copy arrives it becomes the room's history.
//! Members who stayed through a link outage get what they missed as one catch-up; the
//! joins that waited for the copy are served from it.

use std::collections::HashSet;
use std::sync::Arc;

use super::rooms::Room;
use super::sharing::Sharing;
use super::{Counters, Hub, Joined, Outgoing, offer};
use crate::budget::{Budget, Category};
use crate::hub::cluster::{Arrival, ToLink};
use crate::room::{History, Resume};

impl Hub {
    /// Asks the link for a room's history. If it cannot take the request, the room
    /// carries on alone for now (the next join or arrival asks again).
    pub(super) fn request_load(&mut self, name: String, counters: &Counters) {
        let asked = self.link.as_ref().is_some_and(|link| {
            link.tx
                .try_send(ToLink::Load { room: name.clone() })
                .is_ok()
        });
        if !asked {
            log::warn!("cannot ask the link for room '{name}'; it carries on alone for now");
            self.settle_alone(&name, counters);
        }
    }

    /// The link's copy of a room we asked for: it becomes the room's history, members
    /// get what they have not seen, and the joins that waited are served.
    pub(super) fn loaded(
        &mut self,
        name: String,
        epoch: u64,
        messages: Vec<Arrival>,
        counters: &Counters,
    ) {
        let (limits, budget) = (self.limits, Arc::clone(&self.budget));
        let Some(room) = self.rooms.get_mut(&name) else {
            return;
        };
        let Sharing::Loading { early, waiting } = std::mem::take(&mut room.sharing) else {
            return; // an answer we no longer wait for (the link went down meanwhile)
        };
        room.sharing = Sharing::Shared;
        room.history = History::with_epoch(epoch, limits);
        let arrivals = messages.into_iter().chain(early).collect();
        let delivered_here = fill_history(&mut room.history, arrivals, &budget);
        catch_up_stayers(room, &name, &delivered_here, counters);
        for join in waiting {
            self.join_now(name.clone(), join, counters);
        }
        self.relieve(counters);
    }
}

/// Puts the link's copy of a room, and what arrived while it was on its way, into the
/// room's fresh history in id order; returns the ids this instance delivered itself.
fn fill_history(
    history: &mut History,
    mut arrivals: Vec<Arrival>,
    budget: &Arc<Budget>,
) -> HashSet<u64> {
    let epoch = history.epoch();
    let mut delivered_here = HashSet::new();
    arrivals.sort_by_key(|a| a.message.id);
    for arrival in arrivals.into_iter().filter(|a| a.message.epoch == epoch) {
        if arrival.delivered_here {
            delivered_here.insert(arrival.message.id);
        }
        // Numbered by the shared store already: charged whether or not it fits, then
        // the budget is relieved once the room is loaded.
        arrival.message.charge(budget.force(Category::Messages, 0));
        history.insert(arrival.message);
    }
    delivered_here
}

/// Members who stayed through an outage saw the shared sequence up to `served` (and
/// what this instance published meanwhile); the rest is news to them. They get it the
/// way a resuming client does: one catch-up, whatever its length.
fn catch_up_stayers(
    room: &mut Room,
    name: &str,
    delivered_here: &HashSet<u64>,
    counters: &Counters,
) {
    let epoch = room.history.epoch();
    let (seen, epoch_changed) = match room.served {
        Some((served_epoch, id)) if served_epoch == epoch => (id, false),
        _ => (0, true),
    };
    room.served = Some((epoch, room.history.last_id()));
    let members = room.members.len();
    let history = &room.history;
    room.members.retain(|id, member| {
        let since = Resume::Since {
            id: seen,
            epoch: Some(epoch),
        };
        let mut plan = history.catch_up(&since, members);
        plan.epoch_changed = epoch_changed;
        plan.replay.retain(|m| !delivered_here.contains(&m.id));
        if member.raw {
            return plan
                .replay
                .into_iter()
                .all(|m| offer(*id, member, Outgoing::Room(m), counters));
        }
        if !epoch_changed && plan.replay.is_empty() && plan.gap.is_none() {
            return true; // nothing they missed
        }
        let joined = Joined {
            room: name.to_string(),
            plan,
            users: None,
        };
        offer(*id, member, Outgoing::Joined(Box::new(joined)), counters)
    });
}
