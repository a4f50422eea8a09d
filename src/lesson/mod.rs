//! Lesson mode: the protocol and the threads, made visible (see docs/LESSONS.md).
//!
//! A connection opened with `?inspect=1` gets, on that same connection, an `inspect`
//! text frame for each thing the server sees of it: its handshake, each frame its
//! reader reads and its writer writes (decoded from the bytes themselves,
//! [`frames`]), its two threads. `--lesson` narrates the same events on the console
//! for every connection. A connection with neither has no [`Observer`] at all: its
//! reader and writer skip one `if`.
//!
//! Per-connection figures ([`ConnFigures`]: thread ids, bytes and messages each way,
//! the last ping's round trip) are kept for every connection, for
//! `/stats?connections=1`.

pub mod figures;
pub mod frames;
pub mod handshake;

use std::sync::Arc;

use frames::{FrameInfo, FrameScanner};

pub use figures::{ConnFigures, Registry};

use crate::hub::ConnId;
use crate::protocol::json::JsonObject;

/// Every inspection frame starts with this, so the writer never inspects its own.
pub const INSPECT_PREFIX: &[u8] = br#"{"type":"inspect""#;

/// How a connection is watched.
#[derive(Debug)]
pub struct Watch {
    /// The connection.
    pub id: ConnId,
    /// Its own inspector is open (`?inspect=1`): events go to it as frames.
    pub inspect: bool,
    /// `--lesson`: events are narrated on the console.
    pub narrate: bool,
    /// Its figures.
    pub figures: Arc<ConnFigures>,
    /// Events waiting for its writer to start (the handshake's).
    pub first_events: std::sync::Mutex<Vec<String>>,
}

impl Watch {
    /// Whether anyone watches: its inspector, or the console.
    pub fn watched(&self) -> bool {
        self.inspect || self.narrate
    }

    /// The connection ended with close `code`: narrated with its threads.
    pub fn ended(&self, code: &str) {
        let load =
            |tid: &std::sync::atomic::AtomicU64| tid.load(std::sync::atomic::Ordering::Relaxed);
        let (reader, writer) = (
            load(&self.figures.reader_tid),
            load(&self.figures.writer_tid),
        );
        self.narrate(&format!(
            "closed (close code {code}); its reader thread {reader} and writer thread {writer} have ended"
        ));
    }

    /// Narrates `line` (with `--lesson`).
    pub fn narrate(&self, line: &str) {
        if self.narrate {
            log::info!(target: "threadcast::lesson", "connection {}: {line}", self.id);
        }
    }
}

/// Which way a frame went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Read from the client.
    In,
    /// Written to the client.
    Out,
}

/// Watches one direction of a connection's bytes.
#[derive(Debug)]
pub struct Observer {
    scanner: FrameScanner,
    dir: Dir,
    watch: Arc<Watch>,
}

impl Observer {
    /// An observer of `dir`, when the connection is watched at all.
    pub fn of(watch: Option<&Arc<Watch>>, dir: Dir) -> Option<Observer> {
        let watch = watch.filter(|w| w.watched())?;
        Some(Observer {
            scanner: FrameScanner::default(),
            dir,
            watch: Arc::clone(watch),
        })
    }

    /// Looks at `bytes` going by: each frame found is narrated, and its event JSON
    /// handed to `to_inspector` when the inspector is open. The inspector's own
    /// frames are skipped.
    pub fn saw(&mut self, bytes: &[u8], to_inspector: &mut impl FnMut(String)) {
        let (dir, watch) = (self.dir, &self.watch);
        self.scanner.feed(bytes, &mut |frame: FrameInfo| {
            if frame.unmasked().starts_with(INSPECT_PREFIX) {
                return;
            }
            let verb = if dir == Dir::In { "read" } else { "wrote" };
            watch.narrate(&format!("{verb} {}", frame.words()));
            if watch.inspect {
                to_inspector(frame_json(dir, &frame));
            }
        });
    }
}

/// An inspect frame's JSON: `{"type":"inspect","event":…}` and `fields`.
fn event(name: &str, fields: impl FnOnce(&mut JsonObject)) -> String {
    let mut json = JsonObject::new();
    json.string("type", "inspect").string("event", name);
    fields(&mut json);
    json.finish()
}

/// The `frame` event.
pub fn frame_json(dir: Dir, frame: &FrameInfo) -> String {
    let hex = |bytes: &[u8]| data_encoding::HEXLOWER.encode(bytes);
    event("frame", |json| {
        json.string("dir", if dir == Dir::In { "in" } else { "out" })
            .bool("fin", frame.fin)
            .raw(
                "rsv",
                &format!("[{},{},{}]", frame.rsv[0], frame.rsv[1], frame.rsv[2]),
            )
            .number("opcode", u64::from(frame.opcode))
            .string("kind", frame.kind())
            .bool("masked", frame.mask.is_some());
        if let Some(mask) = frame.mask {
            json.string("mask", &hex(&mask));
        }
        json.number("len", frame.len)
            .number("len_bits", u64::from(frame.len_bits))
            .string("preview", &hex(&frame.preview))
            .string("unmasked", &hex(&frame.unmasked()));
        if let Some((code, reason)) = frame.close() {
            json.number("close_code", u64::from(code))
                .string("close_reason", &reason);
        }
        json.string("words", &frame.words());
    })
}

/// The `thread` event: a connection's reader or writer thread started or ended.
pub fn thread_json(role: &str, tid: u64, state: &str) -> String {
    event("thread", |json| {
        json.string("role", role)
            .number("tid", tid)
            .number("pid", u64::from(std::process::id()))
            .string("state", state);
    })
}

/// The `handshake` event.
pub fn handshake_json(request: &[String], response: &[String], accept: &str) -> String {
    event("handshake", |json| {
        json.raw("request", &handshake::json_lines(request))
            .raw("response", &handshake::json_lines(response))
            .raw("accept", accept);
    })
}

/// The `dropped` event: `count` events did not fit the connection's queue.
pub fn dropped_json(count: u64) -> String {
    event("dropped", |json| {
        json.number("count", count);
    })
}

/// The OS id of the calling thread (what `top -H` and `ps -L` list).
pub fn thread_id() -> u64 {
    // SAFETY: gettid(2) has no preconditions and cannot fail.
    let tid = unsafe { libc::gettid() };
    u64::try_from(tid).unwrap_or(0)
}
