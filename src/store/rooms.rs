//! Reading a room back, and writing what changed: new messages, rooms' epochs and id
//! sequences, history that left (limits, `--history-ttl`), rooms that went.

use std::sync::Arc;
use std::time::Instant;

use redb::{Durability, ReadableDatabase, ReadableTable};

use super::{Fsync, MESSAGES, ROOMS, Store};
use crate::room::{RoomMessage, now_millis, stored};

/// A room as the store had it.
#[derive(Debug)]
pub struct Loaded {
    /// Its epoch.
    pub epoch: u64,
    /// The id its next message gets.
    pub next_id: u64,
    /// Its messages, oldest first.
    pub messages: Vec<RoomMessage>,
}

/// What one commit writes.
#[derive(Debug, Default)]
pub struct Changes {
    /// Rooms whose epoch and next id to record: (room, epoch, next id).
    pub rooms: Vec<(String, u64, u64)>,
    /// New messages, in order.
    pub messages: Vec<(String, Arc<RoomMessage>)>,
    /// History that left: in each room, every message below this id.
    pub trims: Vec<(String, u64)>,
    /// Rooms that go, with their history.
    pub dropped: Vec<String>,
}

impl Changes {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty()
            && self.messages.is_empty()
            && self.trims.is_empty()
            && self.dropped.is_empty()
    }
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Store {
    /// Room `name` as it was stored; `None` when the store has no such room. A message
    /// that cannot be read back is logged and left out (the client is told of a gap).
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn load(&mut self, name: &str) -> Result<Option<Loaded>, String> {
        let read = self.db()?.begin_read().map_err(text)?;
        let rooms = read.open_table(ROOMS).map_err(text)?;
        let Some(row) = rooms.get(name).map_err(text)? else {
            return Ok(None);
        };
        let (epoch, next_id, _) = row.value();
        let table = read.open_table(MESSAGES).map_err(text)?;
        let mut messages = Vec::new();
        for entry in table.range((name, 0)..=(name, u64::MAX)).map_err(text)? {
            let (key, bytes) = entry.map_err(text)?;
            let id = key.value().1;
            match stored::decode(id, epoch, bytes.value()) {
                Ok(message) => messages.push(message),
                Err(e) => {
                    log::error!("room '{name}': stored message {id} is unreadable ({e}); left out")
                }
            }
        }
        Ok(Some(Loaded {
            epoch,
            next_id,
            messages,
        }))
    }

    /// Writes `changes` in one transaction: all of them, or none. Forces the disk
    /// unless `--fsync never`.
    ///
    /// # Errors
    /// The transaction failed (disk full, I/O error): none of it was written.
    pub fn commit(&mut self, changes: &Changes) -> Result<(), String> {
        let started = Instant::now();
        let forced = self.fsync != Fsync::Never;
        let written = self.write(changes, forced);
        if written.is_err() {
            self.db = None; // opened again for the next commit
        } else {
            self.unsynced |= !forced;
            self.counted(started.elapsed().as_micros() as u64, forced);
        }
        written
    }

    /// One transaction with `changes`, forcing the disk when `forced`.
    fn write(&mut self, changes: &Changes, forced: bool) -> Result<(), String> {
        let mut write = self.db()?.begin_write().map_err(text)?;
        let durability = if forced {
            Durability::Immediate
        } else {
            Durability::None
        };
        write.set_durability(durability).map_err(text)?;
        {
            let mut rooms = write.open_table(ROOMS).map_err(text)?;
            let mut messages = write.open_table(MESSAGES).map_err(text)?;
            let now = now_millis();
            for (room, epoch, next_id) in &changes.rooms {
                rooms
                    .insert(room.as_str(), (*epoch, *next_id, now))
                    .map_err(text)?;
            }
            for (room, message) in &changes.messages {
                let bytes = stored::encode(message);
                messages
                    .insert((room.as_str(), message.id), bytes.as_slice())
                    .map_err(text)?;
            }
            for (room, below) in &changes.trims {
                let room = room.as_str();
                messages
                    .retain_in((room, 0)..(room, *below), |_, _| false)
                    .map_err(text)?;
            }
            for room in &changes.dropped {
                let room = room.as_str();
                rooms.remove(room).map_err(text)?;
                messages
                    .retain_in((room, 0)..=(room, u64::MAX), |_, _| false)
                    .map_err(text)?;
            }
        }
        write.commit().map_err(text)
    }

    /// Under `--fsync never`: forces the disk if anything was committed since the
    /// last time (the hub calls this every second).
    ///
    /// # Errors
    /// The forced commit failed.
    pub fn sync(&mut self) -> Result<(), String> {
        if !self.unsynced {
            return Ok(());
        }
        let started = Instant::now();
        let mut write = self.db()?.begin_write().map_err(text)?;
        write.set_durability(Durability::Immediate).map_err(text)?;
        write.commit().map_err(text)?;
        self.unsynced = false;
        self.counted(started.elapsed().as_micros() as u64, true);
        Ok(())
    }

    /// Whether every message gets a commit of its own (`--fsync always`).
    pub fn commit_each(&self) -> bool {
        self.fsync == Fsync::Always
    }

    /// Whether the disk must still be forced from time to time (`--fsync never`).
    pub fn syncs_later(&self) -> bool {
        self.fsync == Fsync::Never
    }

    /// Every stored room and when it was last used (ms since 1970), least recently
    /// used first: the idle-room limit applies to them at start-up.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn rooms_by_age(&mut self) -> Result<Vec<(String, u64)>, String> {
        let read = self.db()?.begin_read().map_err(text)?;
        let rooms = read.open_table(ROOMS).map_err(text)?;
        let mut all = Vec::new();
        for entry in rooms.iter().map_err(text)? {
            let (name, row) = entry.map_err(text)?;
            all.push((name.value().to_string(), row.value().2));
        }
        all.sort_by_key(|(_, used)| *used);
        Ok(all)
    }
}
