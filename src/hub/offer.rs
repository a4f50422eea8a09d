//! Handing one item to one member without ever waiting for it: the hub's only way of
//! sending. A member that cannot take an item is a slow consumer and is closed.

use std::sync::atomic::Ordering;

use crossbeam_channel::TrySendError;

use super::rooms::Room;
use super::{ConnId, Counters, Member, Notice, Outgoing};
use crate::protocol::close::CloseReason;

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
    member.request_close(CloseReason::SlowConsumer);
}
