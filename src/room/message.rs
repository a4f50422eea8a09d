//! One stored room message: its id, epoch, time, client id and payload, shared by
//! every member's queue and the history (one `Arc`, however many members), with its
//! bytes charged to the memory budget while anyone holds it.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tungstenite::Message;

use crate::budget::Reservation;
use crate::protocol::envelope;
use crate::protocol::person::Person;

/// Bookkeeping cost of one stored message besides its bytes (the struct, the queue
/// slot, the client-id entry), counted against the byte cap so that a flood of empty
/// messages is bounded too.
pub const MESSAGE_OVERHEAD_BYTES: usize = 128;

/// What a publisher attaches to a message besides its payload: its own id for it,
/// and who the server knows it to be. Both go into the message's header line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tag {
    /// The publisher's own id for the message (`cid:` line, `?cid=`), to drop repeats.
    pub cid: Option<String>,
    /// Who published it, as the server knows them (the header's `from`); never taken
    /// from what the client sent.
    pub sender: Option<Arc<Person>>,
}

#[cfg(test)]
impl Tag {
    /// A tag with a client id and no sender.
    pub fn cid(cid: impl Into<String>) -> Tag {
        Tag {
            cid: Some(cid.into()),
            sender: None,
        }
    }
}

/// A message as broadcast into a room: its id and the two forms members receive.
/// Built once per publish and shared (`Arc`) by every member and the history.
#[derive(Debug)]
pub struct RoomMessage {
    /// Position in the room's sequence, from 1.
    pub id: u64,
    /// The room's epoch when it was published.
    pub epoch: u64,
    /// When the server accepted it, milliseconds since 1970 (UTC).
    pub ts: u64,
    /// When this server built it (for the delivery-latency histogram; a monotonic
    /// clock, unlike `ts`).
    pub accepted: std::time::Instant,
    /// The publisher's own id for it, if it gave one.
    pub cid: Option<String>,
    /// Who published it, if the server knows (the header's `from`).
    pub sender: Option<Arc<Person>>,
    /// Header line + `\n` + payload: what enveloped WebSocket members receive.
    pub framed: Message,
    /// The payload exactly as published (shares `framed`'s buffer): what raw members get.
    pub raw: Message,
    /// Its bytes on the memory budget, given back when the last holder (history, a
    /// send queue) drops it. Set once, by the hub.
    charge: OnceLock<Reservation>,
}

impl RoomMessage {
    /// Frames `payload` as message `id` of `epoch`: both forms built once, here.
    pub fn new(id: u64, epoch: u64, ts: u64, tag: Tag, payload: Message) -> Self {
        let Tag { cid, sender } = tag;
        let header = envelope::Header {
            id,
            epoch,
            ts,
            cid: cid.as_deref(),
            from: sender.as_deref(),
        };
        let (framed, raw) = envelope::frame_room_message(header, payload);
        RoomMessage {
            id,
            epoch,
            ts,
            accepted: std::time::Instant::now(),
            cid,
            sender,
            framed,
            raw,
            charge: OnceLock::new(),
        }
    }

    /// Puts this message on the memory budget with `charge` (what its reader charged,
    /// settled to [`RoomMessage::cost`]). A message charged already keeps its charge.
    pub fn charge(&self, mut charge: Reservation) {
        if self.charge.get().is_none() {
            charge.settle(self.cost());
            let _ = self.charge.set(charge);
        }
    }

    /// The fields its header, JSON and SSE event id are made of.
    pub fn header(&self) -> envelope::Header<'_> {
        envelope::Header {
            id: self.id,
            epoch: self.epoch,
            ts: self.ts,
            cid: self.cid.as_deref(),
            from: self.sender.as_deref(),
        }
    }

    /// Bytes this message costs in history.
    pub fn cost(&self) -> usize {
        self.framed.len() + self.cid.as_ref().map_or(0, String::len) + MESSAGE_OVERHEAD_BYTES
    }
}

/// Milliseconds since 1970 (UTC).
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
