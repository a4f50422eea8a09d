//! The one way into the hub from other threads: a [`Handle`] (a clone of the hub's
//! command channel) with a method for each thing a connection or the HTTP side asks,
//! and the [`Membership`] a join returns.
//!
//! A membership leaves its room when it is dropped, so a connection that ends in any
//! way — a normal close, an error, even a panic unwinding its reader thread — is taken
//! out of its room. A WebSocket leaves with [`Membership::leave_and_wait`] instead: it
//! waits until the hub confirms, so the close frame it queues next cannot overtake a
//! message the peer is owed.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use tungstenite::Message;

use super::cluster::FromLink;
use super::command::{Command, HUB_QUEUE, HUB_REPLY_TIMEOUT, Published, Reply, RoomStats};
use super::member::Member;
use super::operator::{OperatorRequest, RoomPresence};
use super::outgoing::ConnId;
use crate::budget::Reservation;
use crate::room::{Resume, Tag};

/// Why the hub gave no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// The hub has stopped: the server is shutting down.
    Stopped,
    /// The hub did not answer within [`HUB_REPLY_TIMEOUT`].
    TimedOut,
    /// The hub let go of the request without doing it: a publish it could not store
    /// (`--data-dir`: disk full, I/O error), or a request whose handling failed.
    NotDone,
}

/// A way to send the hub its commands. Cheap to clone: every connection holds one.
#[derive(Clone, Debug)]
pub struct Handle {
    commands: Sender<Command>,
}

/// The hub's bounded command queue: the handle for everyone, the receiving end for
/// [`super::spawn`]. When readers publish faster than the hub fans out they wait on
/// this queue (back-pressure) instead of growing memory without bound.
pub fn channel() -> (Handle, Receiver<Command>) {
    let (commands, receiver) = crossbeam_channel::bounded(HUB_QUEUE);
    (Handle { commands }, receiver)
}

impl Handle {
    /// Joins `room` (`None`: no room, for echo and for sockets still showing their
    /// token, which the hub only knows to close them at shutdown). `None` when the hub
    /// has stopped.
    pub fn join(
        &self,
        id: ConnId,
        room: Option<String>,
        member: Member,
        resume: Resume,
    ) -> Option<Membership> {
        let join = Command::Join {
            id,
            room: room.clone(),
            member,
            resume,
        };
        self.send(join).then(|| Membership {
            id,
            room,
            hub: self.clone(),
            left: false,
        })
    }

    /// Hands a message to the hub without waiting: a reader's (`from`, which gets the
    /// ack when its tag has a `cid`) or a feed's. `false` when the hub has stopped.
    pub fn post(
        &self,
        room: String,
        (message, charge): (Message, Reservation),
        tag: Tag,
        from: Option<ConnId>,
    ) -> bool {
        self.send(Command::Publish {
            room,
            message,
            tag,
            from,
            reply: None,
            charge,
        })
    }

    /// Publishes a message and waits for what it produced (HTTP publish, Rust code).
    ///
    /// # Errors
    /// [`Unanswered`] when the hub has stopped or does not answer in time.
    pub fn publish(
        &self,
        room: String,
        (message, charge): (Message, Reservation),
        tag: Tag,
    ) -> Result<Published, Unanswered> {
        self.ask(|reply| Command::Publish {
            room,
            message,
            tag,
            from: None,
            reply: Some(reply),
            charge,
        })
    }

    /// Every room's figures, sorted by name.
    ///
    /// # Errors
    /// [`Unanswered`] when the hub has stopped or does not answer in time.
    pub fn stats(&self) -> Result<Vec<RoomStats>, Unanswered> {
        self.ask(Command::Stats)
    }

    /// Who is in `room` (`None`: this instance has no such room).
    ///
    /// # Errors
    /// [`Unanswered`] when the hub has stopped or does not answer in time.
    pub fn presence(&self, room: String) -> Result<Option<RoomPresence>, Unanswered> {
        self.ask(|reply| Command::Operator(OperatorRequest::Presence { room, reply }))
    }

    /// Deletes `room` with its history, closing its members with 4004; how many
    /// (`None`: this instance has no such room).
    ///
    /// # Errors
    /// [`Unanswered`] when the hub has stopped or does not answer in time.
    pub fn delete_room(&self, room: String) -> Result<Option<usize>, Unanswered> {
        self.ask(|reply| Command::Operator(OperatorRequest::DeleteRoom { room, reply }))
    }

    /// Closes every connection of user `sub` with 4003; how many there were.
    ///
    /// # Errors
    /// [`Unanswered`] when the hub has stopped or does not answer in time.
    pub fn disconnect(&self, sub: String) -> Result<usize, Unanswered> {
        self.ask(|reply| Command::Operator(OperatorRequest::Disconnect { sub, reply }))
    }

    /// The memory budget runs short: asks the hub to free what it can, without
    /// waiting. `false` when the request could not be queued.
    pub fn reclaim(&self) -> bool {
        self.commands.try_send(Command::Reclaim).is_ok()
    }

    /// Asks the hub to close every connection by `deadline` and stop.
    pub fn shutdown(&self, deadline: Instant) {
        self.send(Command::Shutdown(deadline));
    }

    /// Passes on what the link to other instances (Redis) has to say; `false` when
    /// the hub has stopped.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub fn link(&self, event: FromLink) -> bool {
        self.send(Command::Link(event))
    }

    /// Sends one command; `false` when the hub has stopped.
    fn send(&self, command: Command) -> bool {
        self.commands.send(command).is_ok()
    }

    /// Sends the command `make` builds around a reply channel, and waits for the answer.
    fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, Unanswered> {
        let (reply, answer) = mpsc::sync_channel(1);
        if !self.send(make(reply)) {
            return Err(Unanswered::Stopped);
        }
        answer.recv_timeout(HUB_REPLY_TIMEOUT).map_err(|e| match e {
            RecvTimeoutError::Timeout => Unanswered::TimedOut,
            RecvTimeoutError::Disconnected => Unanswered::NotDone,
        })
    }
}

/// A connection's place in the hub: in a room, or known to the hub only to be closed
/// at shutdown. Leaves when dropped.
#[derive(Debug)]
pub struct Membership {
    id: ConnId,
    room: Option<String>,
    hub: Handle,
    left: bool,
}

impl Membership {
    /// The member's connection id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Leaves and waits until the hub confirms. Every message published before that
    /// moment is then already in this member's queue, so a close frame queued next
    /// cannot overtake a message the peer is owed.
    pub fn leave_and_wait(mut self) {
        self.left = true;
        let (id, room) = (self.id, self.room.take());
        let _ = self.hub.ask(|done| Command::Leave {
            id,
            room,
            done: Some(done),
        });
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if !self.left {
            let room = self.room.take();
            self.hub.send(Command::Leave {
                id: self.id,
                room,
                done: None,
            });
        }
    }
}
