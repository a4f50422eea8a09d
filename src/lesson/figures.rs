//! Each WebSocket connection's own figures — its two threads, bytes and messages each
//! way, its last ping's round trip — and the registry `/stats?connections=1` lists
//! them from. A few relaxed atomic additions per system call; nothing per byte.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::hub::ConnId;
use crate::protocol::json::JsonObject;

/// One connection's figures.
#[derive(Debug)]
pub struct ConnFigures {
    /// The connection.
    pub id: ConnId,
    /// The client's address.
    pub peer: String,
    /// Its room (empty for `/echo`).
    pub room: String,
    /// When it opened (the clock for ping times).
    pub opened: Instant,
    /// The reader's and the writer's OS thread ids (0 until they run).
    pub reader_tid: AtomicU64,
    /// See `reader_tid`.
    pub writer_tid: AtomicU64,
    /// Bytes read from the socket.
    pub bytes_in: AtomicU64,
    /// Bytes written to the socket.
    pub bytes_out: AtomicU64,
    /// Data messages read.
    pub messages_in: AtomicU64,
    /// Data messages written.
    pub messages_out: AtomicU64,
    /// When the last ping went out, in microseconds since `opened` (0: none yet).
    pub ping_sent: AtomicU64,
    /// The last ping's round trip, in microseconds (0: none yet).
    pub rtt_micros: AtomicU64,
    /// Items waiting in the writer's queue, as last seen.
    pub queue: AtomicU64,
}

fn add(figure: &AtomicU64, n: u64) {
    figure.fetch_add(n, Ordering::Relaxed);
}

impl ConnFigures {
    /// Figures for connection `id` from `peer`, in `room`.
    pub fn new(id: ConnId, peer: String, room: String) -> ConnFigures {
        let zero = || AtomicU64::new(0);
        ConnFigures {
            id,
            peer,
            room,
            opened: Instant::now(),
            reader_tid: zero(),
            writer_tid: zero(),
            bytes_in: zero(),
            bytes_out: zero(),
            messages_in: zero(),
            messages_out: zero(),
            ping_sent: zero(),
            rtt_micros: zero(),
            queue: zero(),
        }
    }

    /// The calling thread is the connection's reader.
    pub fn on_reader_thread(&self) {
        self.reader_tid.store(super::thread_id(), Ordering::Relaxed);
    }

    /// `n` bytes were read.
    pub fn read(&self, n: usize) {
        add(&self.bytes_in, n as u64);
    }

    /// `n` bytes were written.
    pub fn wrote(&self, n: usize) {
        add(&self.bytes_out, n as u64);
    }

    /// A ping went out now.
    pub fn pinged(&self) {
        let now = self.opened.elapsed().as_micros() as u64;
        self.ping_sent.store(now.max(1), Ordering::Relaxed);
    }

    /// A pong came back now: the round trip since the last ping.
    pub fn ponged(&self) {
        let sent = self.ping_sent.load(Ordering::Relaxed);
        if sent > 0 {
            let now = self.opened.elapsed().as_micros() as u64;
            self.rtt_micros
                .store(now.saturating_sub(sent), Ordering::Relaxed);
        }
    }

    /// The figures as JSON fields of `json`.
    pub fn write(&self, json: &mut JsonObject) {
        let read = |figure: &AtomicU64| figure.load(Ordering::Relaxed);
        json.number("queue", read(&self.queue))
            .number("rtt_micros", read(&self.rtt_micros))
            .number("bytes_in", read(&self.bytes_in))
            .number("bytes_out", read(&self.bytes_out))
            .number("messages_in", read(&self.messages_in))
            .number("messages_out", read(&self.messages_out));
    }

    /// The `figures` inspect event.
    pub fn event_json(&self) -> String {
        let mut json = JsonObject::new();
        json.string("type", "inspect").string("event", "figures");
        self.write(&mut json);
        json.finish()
    }

    /// This connection's line in `/stats?connections=1`.
    pub fn stats_json(&self) -> String {
        let read = |figure: &AtomicU64| figure.load(Ordering::Relaxed);
        let mut json = JsonObject::new();
        json.number("id", self.id)
            .string("peer", &self.peer)
            .string("room", &self.room)
            .number("reader_tid", read(&self.reader_tid))
            .number("writer_tid", read(&self.writer_tid));
        self.write(&mut json);
        json.finish()
    }
}

/// Every open WebSocket connection's figures.
#[derive(Debug, Default)]
pub struct Registry(Mutex<HashMap<ConnId, Arc<ConnFigures>>>);

/// A connection's place in the [`Registry`]; it leaves when this is dropped.
#[derive(Debug)]
pub struct Registered<'a> {
    registry: &'a Registry,
    id: ConnId,
}

impl Registry {
    /// Lists `figures` until the returned guard is dropped.
    pub fn register(&self, figures: &Arc<ConnFigures>) -> Registered<'_> {
        let mut all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        all.insert(figures.id, Arc::clone(figures));
        Registered {
            registry: self,
            id: figures.id,
        }
    }

    /// Every connection's line, by id.
    pub fn json(&self) -> String {
        let all = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut ids: Vec<_> = all.keys().copied().collect();
        ids.sort_unstable();
        let lines: Vec<String> = ids.iter().map(|id| all[id].stats_json()).collect();
        format!("[{}]", lines.join(","))
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut all = self
            .registry
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        all.remove(&self.id);
    }
}
