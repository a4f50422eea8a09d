//! What the operator's API asks of the hub (`--admin-token`, see `src/http/operator.rs`):
//! who is in a room, deleting a room, disconnecting a user. Each is one command, so
//! it happens between two publishes, never in the middle of one.
//!
//! Closing connections here works like closing a slow consumer: the hub takes them
//! out of their rooms and raises their close flag ([`Member::request_close`]); their
//! writers send the close frame (4003 or 4004), and their `Leave`s follow.

use std::collections::HashMap;

use super::sharing::Sharing;
use super::{ConnId, Counters, Hub, Member, Reply};
use crate::protocol::close::CloseReason;

/// A request from the operator's API.
#[derive(Debug)]
pub enum OperatorRequest {
    /// Who is in `room`: `None` when this instance has no such room.
    Presence {
        /// The room.
        room: String,
        /// Where the answer goes.
        reply: Reply<Option<RoomPresence>>,
    },
    /// Drop `room` with its history and close its members with 4004; answers how
    /// many were closed, `None` when there was no such room.
    DeleteRoom {
        /// The room.
        room: String,
        /// Where the answer goes.
        reply: Reply<Option<usize>>,
    },
    /// Close every connection of user `sub`, in every room, with 4003; answers how
    /// many were closed.
    Disconnect {
        /// The user id.
        sub: String,
        /// Where the answer goes.
        reply: Reply<usize>,
    },
}

/// Who is in a room, for `GET /presence/<room>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPresence {
    /// Members (connections) right now.
    pub members: usize,
    /// The people, as JSON: `[{"sub":…,"name":…,"connections":…},…]`.
    pub users: String,
}

impl Hub {
    /// Carries out one request of the operator's.
    pub(super) fn operate(&mut self, request: OperatorRequest, counters: &Counters) {
        match request {
            OperatorRequest::Presence { room, reply } => {
                let presence = self.rooms.get(&room).map(|room| RoomPresence {
                    members: room.members.len(),
                    users: room.presence.users_json(),
                });
                let _ = reply.send(presence);
            }
            OperatorRequest::DeleteRoom { room, reply } => {
                let deleted = self.delete_room(&room);
                // A deleted room is gone from the disk before anyone hears so.
                self.flush(counters);
                let _ = reply.send(deleted);
            }
            OperatorRequest::Disconnect { sub, reply } => {
                let _ = reply.send(self.disconnect(&sub, counters));
            }
        }
    }

    /// Drops the room and its history, and closes its members (4004). Members
    /// waiting for a shared room's history are closed too.
    fn delete_room(&mut self, name: &str) -> Option<usize> {
        let room = self.drop_room(name)?;
        let waiting = match room.sharing {
            Sharing::Loading { waiting, .. } => waiting.into_iter().map(|w| w.member).collect(),
            _ => Vec::new(),
        };
        let members = room.members.into_values().chain(waiting);
        let closed = members
            .map(|member| member.request_close(CloseReason::RoomDeleted))
            .count();
        log::info!("the operator deleted room '{name}': {closed} members closed");
        Some(closed)
    }

    /// Closes every connection of user `sub` (4003): members of rooms, and
    /// connections in no room (echo).
    fn disconnect(&mut self, sub: &str, counters: &Counters) -> usize {
        let mut closed = close_theirs(&mut self.loners, sub);
        let mut changed = Vec::new();
        for (name, room) in &mut self.rooms {
            let theirs = close_theirs(&mut room.members, sub);
            if theirs > 0 {
                closed += theirs;
                changed.push(name.clone());
            }
        }
        for name in changed {
            self.announce_members(&name, counters);
        }
        log::info!("the operator disconnected user '{sub}': {closed} connections closed");
        closed
    }
}

/// Takes user `sub`'s connections out of `members` and asks them to close (4003);
/// how many there were. They leave the room's presence when their `Leave` comes.
fn close_theirs(members: &mut HashMap<ConnId, Member>, sub: &str) -> usize {
    let before = members.len();
    members.retain(|_, member| {
        let theirs = member.person.as_ref().and_then(|p| p.sub()) == Some(sub);
        if theirs {
            member.request_close(CloseReason::Disconnected);
        }
        !theirs
    });
    before - members.len()
}
