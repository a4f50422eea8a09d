//! The hub: one thread that owns every room and fans messages out to the members.
//!
//! Like gorilla's chat example, nothing else touches the room table: connections
//! join, leave and publish by sending a [`Command`] over a channel, and the hub applies
//! the commands one at a time. No locks, no races between a join and a publish.
//!
//! The hub never waits for a client. It hands each member its copy with `try_send`;
//! a member whose queue is full is a *slow consumer*: it is removed from its room and
//! asked to close with 1008 (policy violation) at once, dropping what is queued to it,
//! and everyone else keeps receiving. At shutdown every member is asked to close with
//! 1001 (going away) *after* what is queued to it, by the server's drain deadline: a
//! queued message was accepted and acknowledged to its publisher, so it is owed.
//!
//! Each room also keeps its history ([`crate::room::History`]); because the hub does a
//! join and the replay of missed messages in one step, no publish can fall between
//! them: a resuming client sees every message exactly once.
//!
//! Each member's queue is bounded in bytes as well as in items (`queue.rs`), and
//! every message the hub holds is on the memory budget ([`crate::budget`]). When the
//! budget runs high the hub frees memory itself: it closes the members that are far
//! behind (1008), then trims the oldest messages across all rooms' histories
//! (`Hub::relieve`).
//!
//! With a link to other instances (Redis, see [`crate::hub::cluster`]) the hub numbers
//! nothing itself while the link is up: publishes go out to the link, and messages
//! come back numbered ([`Command::Link`]), from this instance and every other. That
//! part of the hub has a file of its own, `src/hub/sharing.rs`.
//!
//! With a store on disk (`--data-dir`, [`crate::store`]) a publish is written before it
//! is delivered or acknowledged: the hub stages publishes and commits each group with
//! one fsync (`src/hub/durable.rs`). Who is in each room is in `presence.rs`, and what
//! the operator's API asks of the hub in `operator.rs`.

use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::budget::Budget;
use crate::hub::cluster::Outbound;
use crate::room::HistoryLimits;
use crate::store::{Changes, Store};

pub mod cluster;
mod command;
mod counters;
mod durable;
mod handle;
mod joining;
mod loading;
mod member;
mod offer;
mod operator;
mod outgoing;
mod presence;
mod pressure;
mod queue;
mod rooms;
mod sharing;
mod shutdown;

#[cfg(feature = "redis")]
pub use command::HUB_QUEUE;
pub use command::{Command, LinkEnd, Published, Reply, RoomStats};
pub use counters::Counters;
pub use handle::{Handle, Membership, Unanswered, channel};
pub use member::{CloseSignal, Member, Queued};
use offer::{acknowledge, offer, slow_consumer};
pub use operator::OperatorRequest;
pub use outgoing::{ConnId, Echo, Inspection, Joined, Notice, Outgoing};
pub use queue::{Backlog, QueueEnd};
use rooms::Room;
use sharing::forward;

/// Member-count updates are sent while a room has at most this many members; above
/// it every join would cost a message to every member (quadratic traffic).
pub const PRESENCE_MAX_MEMBERS: usize = 100;

/// How often the hub wakes for its own work when it has some (`--history-ttl`,
/// `--fsync never`).
pub const TICK: Duration = Duration::from_secs(1);

/// How long shutdown lets connections finish their close handshakes.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);

/// Starts the hub thread. It runs until it gets [`Command::Shutdown`] or every sender
/// of `commands` is gone.
pub fn spawn(
    commands: Receiver<Command>,
    counters: Arc<Counters>,
    setup: Setup,
    link: Option<LinkEnd>,
    budget: Arc<Budget>,
) -> thread::JoinHandle<()> {
    let mut hub = Hub::new(setup.limits, link, budget);
    hub.max_idle_rooms = setup.max_idle_rooms;
    hub.ttl = setup.ttl;
    hub.store = setup.store;
    hub.prune_store();
    thread::Builder::new()
        .name("hub".into())
        .spawn(move || hub.run(commands, &counters))
        .expect("spawn hub thread")
}

/// How the hub keeps rooms, from the configuration.
#[derive(Debug)]
pub struct Setup {
    /// Each room's history limits (`--history`, `--history-bytes`).
    pub limits: HistoryLimits,
    /// Idle rooms kept (`--max-idle-rooms`).
    pub max_idle_rooms: usize,
    /// Messages older than this leave history (`--history-ttl`).
    pub ttl: Option<Duration>,
    /// Room histories on disk (`--data-dir`).
    pub store: Option<Store>,
}

/// The hub's state: only the hub thread ever sees it.
struct Hub {
    rooms: HashMap<String, Room>,
    /// Connections in no room (echo); the hub knows them only to close them at shutdown.
    loners: HashMap<ConnId, Member>,
    limits: HistoryLimits,
    /// Idle rooms kept with their history (`--max-idle-rooms`).
    max_idle_rooms: usize,
    /// Counts commands; a cheap clock for "least recently used".
    clock: u64,
    /// The link to other instances, if any, and whether it is up right now.
    link: Option<LinkEnd>,
    link_up: bool,
    /// The memory budget every message is charged to.
    budget: Arc<Budget>,
    /// Room histories on disk (`--data-dir`), and what waits for the next commit:
    /// publishes (`durable.rs`), history that left, rooms that went.
    store: Option<Store>,
    staged: Vec<durable::Staged>,
    pending: Changes,
    /// `--history-ttl`: messages older than this leave history.
    ttl: Option<Duration>,
    /// When the hub next does its own work (`tick`).
    next_tick: Instant,
}

impl Hub {
    fn new(limits: HistoryLimits, link: Option<LinkEnd>, budget: Arc<Budget>) -> Self {
        Hub {
            rooms: HashMap::new(),
            loners: HashMap::new(),
            limits,
            max_idle_rooms: crate::config::defaults::DEFAULT_MAX_IDLE_ROOMS,
            clock: 0,
            link,
            link_up: false,
            budget,
            store: None,
            staged: Vec::new(),
            pending: Changes::default(),
            ttl: None,
            next_tick: Instant::now(),
        }
    }

    fn run(mut self, commands: Receiver<Command>, counters: &Counters) {
        while let Some(command) = self.next_command(&commands, counters) {
            if !self.step(command, &commands, counters) {
                return;
            }
            // Group commit (`--data-dir`): publishes staged by that command wait while
            // more are queued, then are written to disk together.
            while !self.staged.is_empty() {
                let Ok(command) = commands.try_recv() else {
                    break;
                };
                if !self.step(command, &commands, counters) {
                    return;
                }
            }
            self.flush(counters);
        }
    }

    /// Handles one command; `false` once it was the shutdown.
    fn step(
        &mut self,
        command: Command,
        commands: &Receiver<Command>,
        counters: &Counters,
    ) -> bool {
        self.clock += 1;
        if let Command::Shutdown(deadline) = command {
            self.flush(counters);
            self.sync_store();
            self.close_everyone(deadline);
            self.drain(commands, counters, deadline);
            return false;
        }
        // A bug in handling one command must not end every room: the hub logs it
        // and goes on with the next command. (Its state is plain maps, consistent
        // between statements, so carrying on is safe.)
        let handled = panic::catch_unwind(AssertUnwindSafe(|| self.apply(command, counters)));
        if handled.is_err() {
            log::error!("the hub caught a panic while handling a command; it keeps serving");
        }
        true
    }

    /// The next command, waiting for it. With `--history-ttl` or `--fsync never` the
    /// hub also wakes every [`TICK`] for its own work (`tick`). `None`: every sender
    /// is gone.
    fn next_command(
        &mut self,
        commands: &Receiver<Command>,
        counters: &Counters,
    ) -> Option<Command> {
        let ticks = self.ttl.is_some() || self.store.as_ref().is_some_and(|s| s.syncs_later());
        if !ticks {
            return commands.recv().ok();
        }
        loop {
            // On time even while commands keep coming.
            if Instant::now() >= self.next_tick {
                self.tick(counters);
                self.next_tick = Instant::now() + TICK;
            }
            match commands.recv_deadline(self.next_tick) {
                Ok(command) => return Some(command),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    fn apply(&mut self, command: Command, counters: &Counters) {
        // Whatever is staged is written before any other kind of command is handled.
        if !matches!(command, Command::Publish { .. }) {
            self.flush(counters);
        }
        match command {
            Command::Join {
                id,
                room: Some(name),
                member,
                resume,
            } => self.join(name, id, member, &resume, counters),
            // Connections in no room (echo): known only to be closed at shutdown.
            Command::Join { id, member, .. } => drop(self.loners.insert(id, member)),
            command @ Command::Leave { .. } => self.apply_leave(command, counters),
            Command::Publish {
                room,
                message,
                tag,
                from,
                reply,
                charge,
            } => {
                let outbound = Outbound::new(room, message, tag, from, reply, charge);
                // With a link to other instances, the shared store numbers it; with
                // a store on disk, it is written before it is delivered.
                match &self.link {
                    Some(link) => forward(link, outbound),
                    None if self.store.is_some() => self.stage(outbound, counters),
                    None => self.publish_here(outbound, counters),
                }
            }
            // Everything the link to other instances sends: `sharing.rs`.
            Command::Link(event) => self.apply_link(event, counters),
            Command::Stats(reply) => drop(reply.send(self.stats())),
            Command::Operator(request) => self.operate(request, counters),
            Command::Reclaim => self.relieve(counters),
            Command::Shutdown(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    use tungstenite::Message;

    use crate::budget::Category;
    use crate::protocol::close::CloseReason;
    use crate::room::{Resume, Tag};

    #[test]
    fn the_first_close_request_wins() {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let slow = CloseSignal::default();
        assert_eq!(slow.queued(), None);
        slow.request(CloseReason::SlowConsumer);
        slow.request_after_queue(CloseReason::GoingAway, deadline);
        assert_eq!(slow.queued(), Some(Queued::Drop));
        assert_eq!(slow.requested(), Some(&CloseReason::SlowConsumer));

        let stopping = CloseSignal::default();
        stopping.request_after_queue(CloseReason::GoingAway, deadline);
        stopping.request(CloseReason::SlowConsumer);
        assert_eq!(stopping.queued(), Some(Queued::SendBy(deadline)));
        assert_eq!(stopping.requested(), Some(&CloseReason::GoingAway));
    }

    #[test]
    fn a_close_asked_for_any_reason_goes_out_with_that_reason_s_code() {
        // Every reason keeps its own code on its way to the writer: an internal error
        // is 1011, never mistaken for a shutdown's 1001.
        let signal = CloseSignal::default();
        signal.request(CloseReason::Internal("a bug".into()));
        let frame = signal.requested().map(CloseReason::frame).unwrap();
        assert_eq!(u16::from(frame.code), 1011);
        assert_eq!(frame.reason.as_str(), "internal error: a bug");

        let later = CloseSignal::default();
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        later.request_after_queue(CloseReason::TryAgainLater, deadline);
        let frame = later.requested().map(CloseReason::frame).unwrap();
        assert_eq!(u16::from(frame.code), 1013);
    }

    #[test]
    fn a_budget_running_high_closes_far_behind_members_then_trims_the_oldest_history() {
        let budget = Budget::new(10_000);
        let limits = HistoryLimits {
            messages: 100,
            bytes: 1 << 20,
        };
        let mut hub = Hub::new(limits, None, Arc::clone(&budget));
        let counters = Counters::default();
        // A member that never reads, allowed 8000 bytes: far behind past 4000.
        let (behind, _never_read) = Member::new(100, 8_000, true, &counters);
        hub.join("busy".into(), 1, behind.clone(), &Resume::Live, &counters);
        let publish = |hub: &mut Hub, room: &str, n: usize| {
            let charge = budget.try_reserve(Category::Messages, n).unwrap();
            let message = (Message::binary(vec![0; n]), charge);
            hub.publish(room.into(), message, Tag::default(), None, &counters);
        };
        publish(&mut hub, "old", 4_000);
        publish(&mut hub, "busy", 2_000);
        assert_eq!(behind.close.queued(), None, "below the high-water mark");
        publish(&mut hub, "busy", 3_000); // over 7/8 of the budget

        assert_eq!(behind.close.queued(), Some(Queued::Drop), "closed first");
        assert_eq!(behind.backlog.bytes(), 0, "its queue dropped at once");
        assert!(hub.rooms["busy"].members.is_empty());
        // Its messages are still in history: the oldest message of all rooms went.
        assert_eq!(hub.rooms["old"].history.len(), 0);
        assert_eq!(hub.rooms["busy"].history.len(), 2);
        assert_eq!(counters.history_trimmed.load(Ordering::Relaxed), 1);
        assert!(budget.used() <= 7_500, "back at the low-water mark");
    }

    #[test]
    fn shutdown_asks_every_member_to_close_after_its_queue() {
        let limits = HistoryLimits {
            messages: 16,
            bytes: 1 << 20,
        };
        let budget = Budget::new(64 << 20);
        let mut hub = Hub::new(limits, None, Arc::clone(&budget));
        let counters = Counters::default();
        let (member, queue) = Member::new(4, 1 << 20, true, &counters);
        hub.join("r".into(), 1, member.clone(), &Resume::Live, &counters);
        let (loner, _loner_queue) = Member::new(4, 1 << 20, true, &counters);
        hub.loners.insert(2, loner.clone());
        let owed = (Message::text("owed"), budget.force(Category::Messages, 4));
        hub.publish("r".into(), owed, Tag::default(), None, &counters);

        let deadline = Instant::now() + DRAIN_TIMEOUT;
        hub.close_everyone(deadline);
        for signal in [&member.close, &loner.close] {
            assert_eq!(signal.queued(), Some(Queued::SendBy(deadline)));
        }
        // The message stays queued ahead of the wake-up: it is still to be sent.
        assert!(matches!(queue.try_recv(), Ok(Outgoing::Room(_))));
        assert!(matches!(queue.try_recv(), Ok(Outgoing::Wake)));
    }
}
