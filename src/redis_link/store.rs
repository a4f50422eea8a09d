//! The link's work against Redis's store: publishing a message through the publish
//! script (which numbers it, keeps it in the room's stream and broadcasts it), keeping
//! what is published while Redis is away, and loading a room's history.

use std::sync::atomic::Ordering;

use redis::Value;

use super::link::Link;
use super::wire::{self, RoomKeys};
use crate::hub::Published;
use crate::hub::cluster::{Arrival, FromLink, Outbound};
use crate::protocol::envelope::{format_epoch, parse_epoch};
use crate::room;

/// How long a client id is remembered for de-duplication across instances.
pub const CLIENT_ID_LIFETIME_SECS: u64 = 3600;

impl Link {
    /// Up: Redis numbers and broadcasts the message, and the hub tells the publisher.
    /// Down: the hub delivers it here at once, and a copy waits for Redis.
    pub(super) fn publish(&mut self, outbound: Outbound) {
        if self.connection.is_some() {
            match self.store(&outbound) {
                Ok(outcome) => {
                    let stored = FromLink::Stored(Box::new(outbound), outcome);
                    let _ = self.settings.hub.link(stored);
                    return;
                }
                Err(e) if e.is_io_error() || e.is_connection_dropped() => {
                    self.went_down(&e.to_string());
                }
                Err(e) => {
                    // Redis answered but refused (out of memory, …): nothing went out.
                    log::error!("Redis refused a message for room '{}': {e}", outbound.room);
                    self.settings.status.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        self.keep_for_later(&outbound);
        let _ = self
            .settings
            .hub
            .link(FromLink::PublishHere(Box::new(outbound)));
    }

    pub(super) fn keep_for_later(&mut self, outbound: &Outbound) {
        let status = &self.settings.status;
        if self.outbox.len() >= self.settings.queue {
            status.dropped.fetch_add(1, Ordering::Relaxed);
            if self.dropped_in_outage == 0 {
                log::warn!(
                    "--redis-queue is full ({} messages): further messages are delivered on this instance only until Redis is back",
                    self.settings.queue
                );
            }
            self.dropped_in_outage += 1;
            return;
        }
        self.outbox.push_back(Outbound {
            room: outbound.room.clone(),
            message: outbound.message.clone(),
            tag: outbound.tag.clone(),
            from: None,
            reply: None,
            ts: outbound.ts,
            late: true,
            charge: None,
        });
        self.show_queue();
    }

    /// `/stats`' `queued`: what the outbox holds now.
    pub(super) fn show_queue(&self) {
        let queued = self.outbox.len() as u64;
        self.settings.status.queued.store(queued, Ordering::Relaxed);
    }

    /// One round trip: the publish script numbers, keeps and broadcasts the message.
    pub(super) fn store(&mut self, outbound: &Outbound) -> redis::RedisResult<Published> {
        let connection = self.connection.as_mut().ok_or_else(not_connected)?;
        let keys = RoomKeys::new(&outbound.room);
        let cid = outbound.tag.cid.as_deref().unwrap_or("");
        let (epoch, id, duplicate): (String, u64, u8) = self
            .publish
            .key(&keys.epoch)
            .key(&keys.seq)
            .key(&keys.log)
            .key(&keys.channel)
            .key(keys.client_id(cid))
            .arg(format_epoch(room::new_epoch()))
            .arg(outbound.ts)
            .arg(wire::kind(&outbound.message))
            .arg(wire::format_origin(self.settings.origin))
            .arg(u8::from(outbound.late))
            .arg(cid)
            .arg(outbound.message.clone().into_data().as_ref())
            .arg(self.settings.history)
            .arg(CLIENT_ID_LIFETIME_SECS)
            .arg(wire::tag_line(&outbound.tag))
            .invoke(connection)?;
        Ok(Published {
            delivered: 0,
            id,
            epoch: parse_epoch(&epoch).unwrap_or_default(),
            duplicate: duplicate == 1,
        })
    }

    /// Reads a room's epoch and history and hands them to the hub.
    pub(super) fn load(&mut self, room: &str) {
        let Some(connection) = self.connection.as_mut() else {
            return; // the hub learns the link is down and stops waiting
        };
        let keys = RoomKeys::new(room);
        let answer: redis::RedisResult<Value> = self
            .load
            .key(&keys.epoch)
            .key(&keys.log)
            .arg(format_epoch(room::new_epoch()))
            .arg(self.settings.history)
            .invoke(connection);
        match answer {
            Ok(value) => match parse_history(room, value, self.settings.origin) {
                Ok((epoch, messages)) => {
                    let _ = self.settings.hub.link(FromLink::Loaded {
                        room: room.to_string(),
                        epoch,
                        messages,
                    });
                }
                Err(e) => {
                    log::error!("cannot read room '{room}' from Redis: {e}");
                    self.went_down(&e);
                }
            },
            Err(e) => self.went_down(&e.to_string()),
        }
    }
}

fn not_connected() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::NotConnected))
}

/// `[epoch, [[stream id, ["m", message]], …]]`, newest first, into the room's epoch
/// and its messages oldest first.
fn parse_history(room: &str, value: Value, me: u64) -> Result<(u64, Vec<Arrival>), String> {
    let Value::Array(mut parts) = value else {
        return Err("the load script answered with no array".into());
    };
    let (Some(Value::Array(entries)), Some(Value::BulkString(epoch))) = (parts.pop(), parts.pop())
    else {
        return Err("the load script's answer has the wrong shape".into());
    };
    let epoch = std::str::from_utf8(&epoch)
        .ok()
        .and_then(parse_epoch)
        .ok_or("the room's epoch in Redis is not 16 hex digits")?;
    let mut messages = Vec::with_capacity(entries.len());
    for entry in entries.into_iter().rev() {
        let Value::Array(mut entry) = entry else {
            continue;
        };
        let Some(Value::Array(fields)) = entry.pop() else {
            continue;
        };
        if let [Value::BulkString(name), Value::BulkString(bytes)] = &fields[..] {
            if name == b"m" {
                match wire::decode(room, bytes, me) {
                    Ok(arrival) => messages.push(arrival),
                    Err(e) => {
                        log::warn!("skipped a malformed message in room '{room}' history: {e}")
                    }
                }
            }
        }
    }
    Ok((epoch, messages))
}
