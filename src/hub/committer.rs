//! The commit thread (`--data-dir`): it writes one group of publishes to the store
//! while the hub goes on numbering the next.
//!
//! A commit — the write and its fsync — takes about a millisecond on a good disk and
//! much longer on a slow one. If the hub wrote itself, it would stand still for that
//! time: nothing numbered, nothing delivered, nothing read from its queue. With this
//! thread the two overlap, like a pipeline of two stages:
//!
//! ```text
//! hub:        stage 1 2 3 | send ─┐ stage 4 5 6 7 8 ... | ┌─ deliver 1 2 3, send 4..8
//! committer:              └───────▶ write 1 2 3, fsync ─┘
//! ```
//!
//! At most one group is being written at a time, so the longer a commit takes, the
//! more publishes the next group collects and the fewer fsyncs each message costs.
//! The hub still delivers and acknowledges a message only after its group's commit
//! returned (`durable.rs`).

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};

use crate::store::{Changes, Store};

/// A commit that has returned: what it was asked to write, and whether it did.
pub(super) struct Written {
    /// The changes it was given, back to the hub (on a failure, what left history
    /// and rooms that went are written with the next commit).
    pub changes: Changes,
    /// `Ok` once the changes are in the store (and on disk, as `--fsync` says).
    pub result: Result<(), String>,
}

/// The hub's end of the commit thread, and the store both share.
pub(super) struct Committer {
    /// The store. The commit thread holds the lock while it writes; the hub takes it
    /// to read a room back, to force the disk (`--fsync never`) and at start-up.
    store: Arc<Mutex<Store>>,
    groups: Option<Sender<Changes>>,
    written: Receiver<Written>,
    /// Whether a group was sent and its [`Written`] not taken yet.
    busy: bool,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    /// Starts the commit thread with the store.
    pub fn start(store: Store) -> Committer {
        let store = Arc::new(Mutex::new(store));
        let (groups, to_write) = crossbeam_channel::bounded::<Changes>(1);
        let (done, written) = crossbeam_channel::bounded(1);
        let shared = Arc::clone(&store);
        let thread = thread::Builder::new()
            .name("commit".into())
            .spawn(move || {
                for changes in to_write {
                    let result = write(&shared, &changes);
                    if done.send(Written { changes, result }).is_err() {
                        return;
                    }
                }
            })
            .expect("spawn the commit thread");
        Committer {
            store,
            groups: Some(groups),
            written,
            busy: false,
            thread: Some(thread),
        }
    }

    /// The store, for the hub's own reads and syncs (waits while a commit writes).
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a commit is under way.
    pub fn busy(&self) -> bool {
        self.busy
    }

    /// Hands a group to the commit thread. Only when it is not [`busy`](Self::busy).
    pub fn send(&mut self, changes: Changes) {
        debug_assert!(!self.busy, "one commit at a time");
        let groups = self.groups.as_ref().expect("open until dropped");
        // The thread ends only when this end is dropped, so the send succeeds.
        let _ = groups.send(changes);
        self.busy = true;
    }

    /// Where the commit thread reports, for the hub to wait on it and its queue at once.
    pub fn reports(&self) -> &Receiver<Written> {
        &self.written
    }

    /// The commit under way, if it has returned.
    pub fn try_written(&mut self) -> Option<Written> {
        if !self.busy {
            return None;
        }
        let written = self.written.try_recv().ok()?;
        self.busy = false;
        Some(written)
    }

    /// Waits for the commit under way, if there is one.
    pub fn wait(&mut self) -> Option<Written> {
        if !self.busy {
            return None;
        }
        self.busy = false;
        Some(self.written.recv().unwrap_or_else(|_| Written {
            changes: Changes::default(),
            result: Err("the commit thread stopped".into()),
        }))
    }
}

impl Drop for Committer {
    /// Closing the way in ends the thread once it has written what it has.
    fn drop(&mut self) {
        self.groups = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One commit, on the commit thread. A bug inside the store is a failed commit (its
/// publishers are refused), not a dead thread that would leave the hub waiting.
fn write(store: &Mutex<Store>, changes: &Changes) -> Result<(), String> {
    let mut store = store.lock().unwrap_or_else(PoisonError::into_inner);
    panic::catch_unwind(AssertUnwindSafe(|| store.commit(changes)))
        .unwrap_or_else(|_| Err("the store panicked while writing".into()))
}
