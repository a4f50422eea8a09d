//! Rooms shared with other instances through a link (see [`crate::hub::cluster`]): the
//! hub's side. A room is *alone* (this instance numbers its messages), *loading* (the
//! link's copy of its history is on its way; joins wait for it) or *shared* (the link's
//! store numbers its messages, which arrive here like everyone else's).
//!
//! The rules, each one a method below:
//! - a join to a room not yet shared asks the link for its history and waits;
//! - a message from the link is kept and delivered, once, in id order (history and
//!   broadcast may overlap; ids already here are dropped);
//! - the link going down turns every room alone under a fresh epoch, so local delivery
//!   goes on with ids that cannot be mistaken for the shared sequence's;
//! - the link coming back reloads every room with members, who get what they missed as
//!   one catch-up, minus what this instance delivered itself meanwhile.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{ConnId, Counters, Hub, LinkEnd, Member, Published, acknowledge};
use crate::hub::cluster::{Arrival, FromLink, Outbound, ToLink};
use crate::room::{self, History, Resume};

/// How a room relates to the link.
#[derive(Debug, Default)]
pub(super) enum Sharing {
    /// This instance numbers the room's messages (no link, or the link is down).
    #[default]
    Alone,
    /// Waiting for the link's copy of the room ([`FromLink::Loaded`]). Joins wait with
    /// it, and messages arriving meanwhile are kept to be merged with the copy.
    Loading {
        /// Arrivals while the copy is on its way, merged with it.
        early: Vec<Arrival>,
        /// Joins held until the copy is here.
        waiting: Vec<WaitingJoin>,
    },
    /// Numbered by the link's store: arrivals are delivered as they come.
    Shared,
}

/// A join held until its room is loaded.
#[derive(Debug)]
pub(super) struct WaitingJoin {
    pub(super) id: ConnId,
    pub(super) member: Member,
    pub(super) resume: Resume,
}

impl Hub {
    /// Ends a room's wait for the link: it goes on alone, under an epoch of its own
    /// (ids this instance gives must not pass for the shared sequence's), and the
    /// joins that waited are served from what it has.
    pub(super) fn settle_alone(&mut self, name: &str, counters: &Counters) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let waiting = match std::mem::take(&mut room.sharing) {
            Sharing::Alone => return,
            Sharing::Shared => Vec::new(),
            Sharing::Loading { waiting, .. } => waiting,
        };
        room.history.continue_as(room::new_epoch());
        for join in waiting {
            self.join_now(name.to_string(), join, counters);
        }
    }

    /// A message from the link, numbered by its store. Only rooms with members here
    /// (or waiting to have some) want it: a room nobody has joined on this instance is
    /// loaded from the store when somebody does.
    pub(super) fn arrive(&mut self, arrival: Arrival, counters: &Counters) {
        if !self.link_up {
            return; // the history loaded once the link is up will hold it
        }
        let name = arrival.room.clone();
        let limits = self.limits;
        let Some(room) = self.rooms.get_mut(&name) else {
            return;
        };
        let idle = room.is_idle();
        match &mut room.sharing {
            Sharing::Alone if idle => {}
            Sharing::Alone => {
                // It could not ask for its history before; ask again now.
                room.sharing = Sharing::Loading {
                    early: vec![arrival],
                    waiting: Vec::new(),
                };
                self.request_load(name, counters);
            }
            Sharing::Loading { early, .. } => early.push(arrival),
            Sharing::Shared => {
                if arrival.message.epoch != room.history.epoch() {
                    // The store lost the room (flushed, or a new Redis) while we
                    // stayed connected: its ids start again under a new epoch.
                    room.history = History::with_epoch(arrival.message.epoch, limits);
                }
                self.deliver(&name, arrival, counters);
            }
        }
    }

    /// What the link to other instances tells the hub (every command but the ones a
    /// single instance needs too).
    pub(super) fn apply_link(&mut self, event: FromLink, counters: &Counters) {
        match event {
            FromLink::PublishHere(outbound) => self.publish_here(*outbound, counters),
            FromLink::Stored(outbound, outcome) => self.stored(*outbound, outcome, counters),
            FromLink::Remote(arrival) => self.arrive(*arrival, counters),
            FromLink::Loaded {
                room,
                epoch,
                messages,
            } => self.loaded(room, epoch, messages, counters),
            FromLink::Up => self.link_up(counters),
            FromLink::Down => self.link_down(counters),
        }
    }

    /// The link's store numbered a message published here: its publisher is told
    /// (the ack, and the reply of an HTTP publish).
    pub(super) fn stored(
        &mut self,
        outbound: Outbound,
        mut outcome: Published,
        counters: &Counters,
    ) {
        let Outbound {
            room,
            from,
            tag,
            reply,
            ..
        } = outbound;
        if let Some(room) = self.rooms.get(&room) {
            acknowledge(room, from, tag.cid, outcome.id, outcome.duplicate, counters);
            if !outcome.duplicate {
                outcome.delivered = room.members.len();
            }
        }
        if let Some(reply) = reply {
            let _ = reply.send(outcome);
        }
    }

    /// Keeps a shared message and gives it to the members, unless this instance
    /// delivered it already (during an outage) or has it (history and broadcast overlap).
    pub(super) fn deliver(&mut self, name: &str, arrival: Arrival, counters: &Counters) {
        let Some(room) = self.rooms.get_mut(name) else {
            return;
        };
        let message = arrival.message;
        if !room.history.insert(Arc::clone(&message)) {
            return;
        }
        // Numbered by the shared store already: it cannot be refused, so it is
        // charged whether or not it fits, and the hub frees memory if need be.
        message.charge(self.budget.force(crate::budget::Category::Messages, 0));
        room.served = Some((message.epoch, message.id));
        if arrival.delivered_here {
            return;
        }
        if room.broadcast(&message, counters) {
            self.announce_members(name, counters);
        }
        self.relieve(counters);
    }

    /// The link is connected and subscribed. Rooms nobody is in are forgotten (their
    /// history lives in the store); the others load the shared copy.
    pub(super) fn link_up(&mut self, counters: &Counters) {
        self.link_up = true;
        self.rooms.retain(|_, room| !room.is_idle());
        let names: Vec<String> = self.rooms.keys().cloned().collect();
        for name in names {
            if let Some(room) = self.rooms.get_mut(&name) {
                room.sharing = Sharing::Loading {
                    early: Vec::new(),
                    waiting: Vec::new(),
                };
            }
            self.request_load(name, counters);
        }
    }

    /// The link is lost: every room carries on alone.
    pub(super) fn link_down(&mut self, counters: &Counters) {
        self.link_up = false;
        let names: Vec<String> = self.rooms.keys().cloned().collect();
        for name in names {
            self.settle_alone(&name, counters);
        }
    }
}

/// Hands a publish to the link without waiting. When its queue is full (Redis far
/// behind), the publisher is told nothing went out (its reply channel closes) and the
/// drop is counted and logged.
pub(super) fn forward(link: &LinkEnd, outbound: Outbound) {
    if let Err(e) = link.tx.try_send(ToLink::Publish(Box::new(outbound))) {
        let room = match e.into_inner() {
            ToLink::Publish(outbound) => outbound.room,
            ToLink::Load { room } => room,
        };
        link.status.dropped.fetch_add(1, Ordering::Relaxed);
        log::warn!("message for room '{room}' dropped: the Redis link's queue is full");
    }
}

#[cfg(test)]
mod tests {
    //! The hub's side of sharing rooms, driven through its real command channel with
    //! the test playing the link (no Redis needed: the link is only a channel here).
    use super::*;
    use std::thread;
    use std::time::Duration;

    use crate::room::Tag;
    use crossbeam_channel::{Receiver, Sender};
    use tungstenite::Message;

    use crate::hub::cluster::LinkStatus;
    use crate::hub::command::HUB_QUEUE;
    use crate::hub::{Command, Outgoing, QueueEnd, spawn};
    use crate::room::{HistoryLimits, RoomMessage};

    const EPOCH: u64 = 0x5eed;
    const WAIT: Duration = Duration::from_secs(5);

    struct Rig {
        hub: Sender<Command>,
        link: Receiver<ToLink>,
        thread: Option<thread::JoinHandle<()>>,
    }

    impl Rig {
        fn new() -> Rig {
            let (hub, commands) = crossbeam_channel::bounded(HUB_QUEUE);
            let (link_tx, link) = crossbeam_channel::bounded(HUB_QUEUE);
            let limits = HistoryLimits {
                messages: 100,
                bytes: 1 << 20,
            };
            let end = LinkEnd {
                tx: link_tx,
                status: Arc::new(LinkStatus::default()),
            };
            let budget = crate::budget::Budget::new(64 << 20);
            let thread = spawn(
                commands,
                Arc::default(),
                super::super::Setup {
                    limits,
                    max_idle_rooms: 1024,
                    ttl: None,
                    store: None,
                },
                Some(end),
                budget,
            );
            Rig {
                hub,
                link,
                thread: Some(thread),
            }
        }

        fn send(&self, command: Command) {
            self.hub.send(command).unwrap();
        }

        fn join(&self, id: ConnId, resume: Resume) -> QueueEnd {
            let counters = Counters::default();
            let (member, queue) = Member::new(64, 1 << 20, false, &counters);
            self.send(Command::Join {
                id,
                room: Some("r".into()),
                member,
                resume,
            });
            queue
        }

        fn expect_load(&self) {
            match self.link.recv_timeout(WAIT) {
                Ok(ToLink::Load { room }) => assert_eq!(room, "r"),
                other => panic!("expected a load request, got {other:?}"),
            }
        }

        /// A live member of room "r", shared, whose history holds ids 1..=last.
        fn member_of_shared_room(&self, last: u64) -> QueueEnd {
            self.send(Command::Link(FromLink::Up));
            let member = self.join(1, Resume::Live);
            self.expect_load();
            self.send(Command::Link(FromLink::Loaded {
                room: "r".into(),
                epoch: EPOCH,
                messages: (1..=last).map(|id| arrival(id, EPOCH, false)).collect(),
            }));
            member
        }

        /// Waits until the hub has applied everything sent so far.
        fn settle(&self) {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            self.send(Command::Stats(tx));
            rx.recv_timeout(WAIT).unwrap();
        }
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            // The hub ends when its last sender goes (no drain: the members here have
            // no reader threads to leave with).
            let (unused, _) = crossbeam_channel::bounded(1);
            drop(std::mem::replace(&mut self.hub, unused));
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    fn arrival(id: u64, epoch: u64, delivered_here: bool) -> Arrival {
        Arrival {
            room: "r".into(),
            message: Arc::new(RoomMessage::new(
                id,
                epoch,
                0,
                Tag::default(),
                Message::text(format!("m{id}")),
            )),
            delivered_here,
        }
    }

    /// Room message ids and catch-ups queued for a member, as (welcome epoch or 0, ids).
    fn received(queue: &QueueEnd) -> Vec<(u64, Vec<u64>)> {
        queue
            .try_iter()
            .filter_map(|item| match item {
                Outgoing::Room(m) => Some((0, vec![m.id])),
                Outgoing::Joined(j) => {
                    Some((j.plan.epoch, j.plan.replay.iter().map(|m| m.id).collect()))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_join_waits_for_the_shared_history_and_the_overlap_is_delivered_once() {
        let rig = Rig::new();
        rig.send(Command::Link(FromLink::Up));
        let member = rig.join(
            1,
            Resume::Since {
                id: 1,
                epoch: Some(EPOCH),
            },
        );
        rig.expect_load();
        // Broadcast while the load is in flight: 3 is also in the loaded copy, 4 is not.
        rig.send(Command::Link(FromLink::Remote(Box::new(arrival(
            3, EPOCH, false,
        )))));
        rig.send(Command::Link(FromLink::Remote(Box::new(arrival(
            4, EPOCH, false,
        )))));
        rig.settle();
        assert!(received(&member).is_empty(), "nothing before the history");
        rig.send(Command::Link(FromLink::Loaded {
            room: "r".into(),
            epoch: EPOCH,
            messages: (1..=3).map(|id| arrival(id, EPOCH, false)).collect(),
        }));
        rig.send(Command::Link(FromLink::Remote(Box::new(arrival(
            4, EPOCH, false,
        ))))); // a late copy
        rig.send(Command::Link(FromLink::Remote(Box::new(arrival(
            5, EPOCH, false,
        )))));
        rig.settle();
        assert_eq!(
            received(&member),
            vec![(EPOCH, vec![2, 3, 4]), (0, vec![5])]
        );
    }

    #[test]
    fn a_publish_goes_to_the_link_and_is_delivered_only_when_it_comes_back() {
        let rig = Rig::new();
        let member = rig.member_of_shared_room(0);
        let budget = crate::budget::Budget::new(1 << 20);
        rig.send(Command::Publish {
            room: "r".into(),
            message: Message::text("hi"),
            tag: Tag::default(),
            from: Some(1),
            reply: None,
            charge: budget.force(crate::budget::Category::Messages, 2),
        });
        match rig.link.recv_timeout(WAIT) {
            Ok(ToLink::Publish(outbound)) => assert!(!outbound.late),
            other => panic!("expected the publish at the link, got {other:?}"),
        }
        rig.settle();
        assert_eq!(received(&member), vec![(EPOCH, vec![])], "only the welcome");
        rig.send(Command::Link(FromLink::Remote(Box::new(arrival(
            1, EPOCH, false,
        )))));
        rig.settle();
        assert_eq!(received(&member), vec![(0, vec![1])]);
    }

    #[test]
    fn an_outage_goes_on_alone_and_recovery_brings_only_what_was_missed() {
        let rig = Rig::new();
        let member = rig.member_of_shared_room(2);
        rig.settle();
        let _ = received(&member);

        rig.send(Command::Link(FromLink::Down));
        // The link sends a publish back to be delivered here, under an epoch of its own.
        rig.send(Command::Link(FromLink::PublishHere(Box::new(Outbound {
            room: "r".into(),
            message: Message::text("alone"),
            tag: Tag::default(),
            from: None,
            reply: None,
            ts: 0,
            late: false,
            charge: None,
        }))));
        rig.settle();
        let alone: Vec<_> = member.try_iter().collect();
        let [Outgoing::Room(m)] = &alone[..] else {
            panic!("{alone:?}");
        };
        assert_eq!(m.id, 3, "ids go on after the shared ones");
        assert_ne!(m.epoch, EPOCH, "but not as the shared sequence's");

        rig.send(Command::Link(FromLink::Up));
        rig.expect_load();
        // Meanwhile: 3 = our "alone" message forwarded late, 4 = another instance's.
        rig.send(Command::Link(FromLink::Loaded {
            room: "r".into(),
            epoch: EPOCH,
            messages: vec![
                arrival(1, EPOCH, false),
                arrival(2, EPOCH, false),
                arrival(3, EPOCH, true),
                arrival(4, EPOCH, false),
            ],
        }));
        rig.settle();
        assert_eq!(received(&member), vec![(EPOCH, vec![4])]);
    }
}
