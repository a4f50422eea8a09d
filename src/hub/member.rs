//! The hub's handle on one connection ([`Member`]): its queue, its backlog in
//! bytes, and the flag the server uses to close it from outside ([`CloseSignal`]),
//! with the reason it closes for ([`CloseReason`]).

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crossbeam_channel::Sender;

use super::queue::{Backlog, QueueEnd};
use super::{Counters, Outgoing};
use crate::protocol::close::CloseReason;
use crate::protocol::person::Person;

/// What a close the server asks for does with the items already in the connection's
/// queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queued {
    /// Drop them and close at once. For a slow consumer: its queue is exactly what is
    /// full, and it resumes from the room's history when it comes back.
    Drop,
    /// Send them first and close when the queue is empty, but give up on whatever is
    /// left at this deadline (the server's drain deadline). For a shutdown: each of
    /// them was accepted, and acknowledged to its publisher, so the member is owed it.
    SendBy(Instant),
}

/// A close the server asked of a connection: why, and what happens to the queue.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CloseRequest {
    /// Why (a slow consumer, a shutdown, …): the code and words of the close frame.
    reason: CloseReason,
    /// Whether what is queued is dropped or sent first.
    queued: Queued,
}

/// A close the server asks of a connection from outside its own threads (slow
/// consumer, shutdown). A flag rather than a queued message, because the reason we
/// close a slow consumer is precisely that its queue is full. Set once: the first
/// request wins.
///
/// It also holds when the connection's signed token expires, if it has one: the
/// writer (or the SSE stream) wakes up then and closes it with 4001.
#[derive(Debug, Default)]
pub struct CloseSignal {
    request: OnceLock<CloseRequest>,
    expires: OnceLock<Instant>,
}

impl CloseSignal {
    /// Ask for a close for `reason` at once, dropping whatever is still queued.
    pub fn request(&self, reason: CloseReason) {
        let _ = self.request.set(CloseRequest {
            reason,
            queued: Queued::Drop,
        });
    }

    /// The connection's token stops being valid at `at`: close it then (4001).
    pub fn expire_at(&self, at: Instant) {
        let _ = self.expires.set(at);
    }

    /// When the connection's token expires, if it has one.
    pub fn expiry(&self) -> Option<Instant> {
        self.expires.get().copied()
    }

    /// `true`, with a close for [`CloseReason::TokenExpired`] asked for, once the
    /// token has expired.
    pub fn expired(&self, now: Instant) -> bool {
        let expired = self.expiry().is_some_and(|at| now >= at);
        if expired {
            self.request(CloseReason::TokenExpired);
        }
        expired
    }

    /// Ask for a close for `reason` once everything queued so far is sent, giving up on
    /// the rest at `deadline`. Whoever queues to this connection must queue nothing
    /// more (the hub stops at shutdown), or the queue might never be empty.
    pub fn request_after_queue(&self, reason: CloseReason, deadline: Instant) {
        let _ = self.request.set(CloseRequest {
            reason,
            queued: Queued::SendBy(deadline),
        });
    }

    /// Why the server asked for a close, if it did.
    pub fn requested(&self) -> Option<&CloseReason> {
        self.request.get().map(|request| &request.reason)
    }

    /// What the close asked for does with the queue; `None` while none is asked for.
    pub fn queued(&self) -> Option<Queued> {
        self.request.get().map(|request| request.queued)
    }
}

/// The hub's handle on one connection: the queue to its writer, its close flag, and
/// whether it wants payloads only (raw) or the envelope and control notices.
#[derive(Clone, Debug)]
pub struct Member {
    /// The connection's bounded outgoing queue.
    pub tx: Sender<Outgoing>,
    /// The bytes waiting in that queue, and how many may.
    pub backlog: Arc<Backlog>,
    /// A receiving end of the same queue, to drop what is queued when the connection
    /// is closed at once (its memory is free then, not when its writer gets to it).
    unsent: QueueEnd,
    /// Where the hub asks the connection to close.
    pub close: Arc<CloseSignal>,
    /// Raw mode: no catch-up, no notices, payloads exactly as published.
    pub raw: bool,
    /// Who the connection is, if it has a name: the operator can disconnect them,
    /// and it counts in the room's presence when `listed`.
    pub person: Option<Arc<Person>>,
    /// Whether it counts in the room's presence (not a long poll, which is a member
    /// only while its request waits).
    pub listed: bool,
}

impl Member {
    /// A member with a fresh queue of `capacity` items and `bytes` bytes (its
    /// backlog counted into `counters.queued_bytes`); returns the receiving end too.
    pub fn new(
        capacity: usize,
        bytes: usize,
        raw: bool,
        counters: &Counters,
    ) -> (Member, QueueEnd) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let backlog = Arc::new(Backlog::new(bytes, Arc::clone(&counters.queued_bytes)));
        let end = QueueEnd::new(rx, Arc::clone(&backlog));
        (
            Member {
                tx,
                backlog,
                unsent: end.clone(),
                close: Arc::new(CloseSignal::default()),
                raw,
                person: None,
                listed: true,
            },
            end,
        )
    }

    /// Ask this connection to close for `reason` at once, dropping what is queued to it
    /// (right here: its memory is free at once, even while the writer is stuck in a
    /// write to a peer that does not read), and wake its writer if it is idle.
    pub fn request_close(&self, reason: CloseReason) {
        self.close.request(reason);
        if self.close.queued() == Some(Queued::Drop) {
            self.unsent.try_iter().for_each(drop);
        }
        self.wake();
    }

    /// Ask this connection to close for `reason` after what is queued to it, by
    /// `deadline`, and wake its writer if it is idle. The caller queues nothing more.
    pub fn request_close_after_queue(&self, reason: CloseReason, deadline: Instant) {
        self.close.request_after_queue(reason, deadline);
        self.wake();
    }

    /// Makes an idle writer look at the close signal. If the queue is full the writer
    /// is busy and will see the flag anyway; if it has ended, there is nobody to wake.
    fn wake(&self) {
        let _ = self.tx.try_send(Outgoing::Wake);
    }
}
