//! Room histories on disk (`--data-dir DIR`), so that a restart — graceful, `kill -9`,
//! or the power going out — loses nothing that was acknowledged.
//!
//! The store is one [redb](https://docs.rs/redb) file, `DIR/rooms.redb`: an embedded
//! database with transactions. Every write is a transaction that either happens
//! whole or not at all, so a crash in the middle of one leaves the file as it was
//! after the last commit (redb repairs itself when it opens a file that was not closed).
//!
//! | table | key | value |
//! |---|---|---|
//! | `rooms` | room name | (epoch, next id, last used, ms since 1970) |
//! | `messages` | (room name, id) | the message's stored form ([`crate::room::stored`]) |
//! | `meta` | `"format"` | [`FORMAT`] |
//!
//! Only the hub thread uses the store (`src/hub/durable.rs`): it writes every publish
//! it has drained in *one* transaction with one fsync (group commit), and only then
//! delivers and acknowledges them. `--fsync` chooses how often the disk is forced:
//! see [`Fsync`].

mod open;
mod rooms;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, TableDefinition};

pub use open::open;
pub use rooms::Changes;

/// The store's file format; a file of another format is refused at start-up.
pub const FORMAT: u64 = 1;

/// The file's name in `--data-dir`.
pub const FILE_NAME: &str = "rooms.redb";

/// Where the running instance writes its process id, so that a second instance on
/// the same directory can say which process holds it.
pub const PID_FILE: &str = "threadcast.pid";

/// Most memory redb may use to cache the file's pages (its default is 1 GiB: too much
/// for a small machine; histories are in the hub's memory anyway).
pub const CACHE_BYTES: usize = 8 << 20;

const ROOMS: TableDefinition<&str, (u64, u64, u64)> = TableDefinition::new("rooms");
const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// How often the disk is forced (`--fsync`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Fsync {
    /// One fsync per group of publishes, before any of them is acknowledged or
    /// delivered: no acknowledged message is lost, whatever fails. The default.
    #[default]
    Batch,
    /// One commit and fsync per message: the same guarantee, slower; for comparison.
    Always,
    /// Commits without fsync, and a forced one every second (the hub's tick): a crash
    /// of the process or the machine may lose what was acknowledged since the last one.
    Never,
}

/// The store's figures, for `/stats` and `/metrics`.
#[derive(Debug, Default)]
pub struct StoreFigures {
    /// Transactions committed.
    pub commits: AtomicU64,
    /// Commits that forced the disk (fsync).
    pub fsyncs: AtomicU64,
    /// Microseconds spent committing, in all.
    pub commit_micros: AtomicU64,
    /// The longest commit, in microseconds.
    pub max_commit_micros: AtomicU64,
    /// Commits that failed (disk full, I/O errors): their messages were refused.
    pub failures: AtomicU64,
    /// The file's size in bytes, after the last commit.
    pub file_bytes: AtomicU64,
}

/// The store: the open database and how it syncs. Owned by the hub thread.
pub struct Store {
    /// The open database; `None` after a failed commit, until it is opened again
    /// (redb refuses every operation after an I/O error until then).
    db: Option<Database>,
    path: PathBuf,
    fsync: Fsync,
    /// Committed without fsync since the last forced commit (`--fsync never`).
    unsynced: bool,
    /// Shared with `/stats` and `/metrics`.
    pub figures: Arc<StoreFigures>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .field("fsync", &self.fsync)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The figures, to show them.
    pub fn figures(&self) -> Arc<StoreFigures> {
        Arc::clone(&self.figures)
    }

    /// The open database, opened again if a failure closed it (redb checks and
    /// repairs the file as it opens it).
    fn db(&mut self) -> Result<&Database, String> {
        if self.db.is_none() {
            let db = redb::Builder::new()
                .set_cache_size(CACHE_BYTES)
                .create(&self.path)
                .map_err(|e| format!("could not open the store again: {e}"))?;
            log::info!("the store is open again after a failure");
            self.db = Some(db);
        }
        Ok(self.db.as_ref().expect("just opened"))
    }

    /// Counts one commit of `micros` microseconds.
    fn counted(&self, micros: u64, forced: bool) {
        let figures = &self.figures;
        figures.commits.fetch_add(1, Ordering::Relaxed);
        if forced {
            figures.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        figures.commit_micros.fetch_add(micros, Ordering::Relaxed);
        figures
            .max_commit_micros
            .fetch_max(micros, Ordering::Relaxed);
        if let Ok(meta) = std::fs::metadata(&self.path) {
            figures.file_bytes.store(meta.len(), Ordering::Relaxed);
        }
    }
}
