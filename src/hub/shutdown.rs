//! The hub's part of a shutdown: every member is asked to close once it has sent what
//! is queued to it, and the hub answers their leaving until the drain deadline.

use std::time::Instant;

use crossbeam_channel::Receiver;

use super::sharing::Sharing;
use super::{Command, Counters, Hub};
use crate::protocol::close::CloseReason;

impl Hub {
    /// After asking everyone to close: keep answering `Leave`s (their senders wait for
    /// the answer) until every connection has left or `deadline` passes. A
    /// connection that joins now is asked to close too (no room has queued it
    /// anything, so at once). Nothing is queued to anyone any more: a member's queue
    /// only empties, so its writer can tell when it has sent everything it was owed.
    pub(super) fn drain(
        &mut self,
        commands: &Receiver<Command>,
        counters: &Counters,
        deadline: Instant,
    ) {
        while !self.loners.is_empty() || self.rooms.values().any(|r| !r.members.is_empty()) {
            match commands.recv_deadline(deadline) {
                Ok(Command::Join { id, member, .. }) => {
                    member.request_close_after_queue(CloseReason::GoingAway, deadline);
                    self.loners.insert(id, member);
                }
                Ok(command @ Command::Leave { .. }) => self.apply_leave(command, counters),
                Ok(Command::Stats(reply)) => {
                    let _ = reply.send(self.stats());
                }
                Ok(_) => {} // publishes are refused: their reply channel closes
                Err(_) => break,
            }
        }
        // Answer whatever is still queued, so no connection waits on a closed hub: a
        // join that came too late is asked to close (1001) like everyone else.
        for command in commands.try_iter() {
            match command {
                Command::Join { member, .. } => {
                    member.request_close_after_queue(CloseReason::GoingAway, deadline);
                }
                command => self.apply_leave(command, counters),
            }
        }
    }

    pub(super) fn apply_leave(&mut self, command: Command, counters: &Counters) {
        if let Command::Leave { id, room, done } = command {
            match room {
                Some(name) => self.leave(&name, id, counters),
                None => {
                    self.loners.remove(&id);
                }
            }
            if let Some(done) = done {
                let _ = done.send(());
            }
        }
    }

    /// Shutdown's first step: asks every member and every connection in no room to
    /// close with 1001 once it has sent what is queued to it (each queued message was
    /// accepted and acknowledged to its publisher), giving up on the rest at
    /// `deadline`. Room members are asked first, then the connections in no room.
    pub(super) fn close_everyone(&mut self, deadline: Instant) {
        // Joins still waiting for their room's history become members, so that their
        // `Leave` finds them while the hub drains.
        for room in self.rooms.values_mut() {
            if let Sharing::Loading { waiting, .. } = std::mem::take(&mut room.sharing) {
                for w in waiting {
                    room.members.insert(w.id, w.member);
                }
            }
        }
        let everyone = self
            .rooms
            .values()
            .flat_map(|r| r.members.values())
            .chain(self.loners.values());
        for member in everyone {
            member.request_close_after_queue(CloseReason::GoingAway, deadline);
        }
    }
}
