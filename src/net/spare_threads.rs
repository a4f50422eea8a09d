//! Spare threads: when a connection's thread has finished, it waits a moment for the
//! next connection instead of exiting.
//!
//! Every connection still gets its own threads (a reader and a writer for a
//! WebSocket, one thread for an HTTP request), and they still block on their socket.
//! What changes is only where a thread comes from. Starting a thread is not free:
//! the kernel maps a stack and a guard page, clones the task, and at the exit unmaps
//! them again, and each change to the process's mappings interrupts the other cores
//! to flush their address caches. A classroom whose Wi-Fi comes back, or a page
//! reloaded by everyone at once, ends and starts hundreds of connections within a
//! second: measured in bench/ANALYSIS.md, starting and ending threads was about a
//! third of the server's time in such churn.
//!
//! ```text
//!  new connection ─▶ run(job) ─┬─ a spare is waiting?  yes ─▶ it runs the job
//!                              └─ no ─▶ a new thread runs the job
//!  job done ─▶ the thread waits up to SPARE_LINGER for another job (at most
//!              MAX_SPARE_THREADS wait at once), then exits
//! ```
//!
//! The hand-over is a channel of capacity zero: `try_send` succeeds only when a spare
//! is already waiting in `recv`, so a job never sits in a queue while threads start.

use std::io;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use super::limit::THREAD_STACK_BYTES;

/// At most this many finished threads wait for work at once; the others exit. Their
/// stacks stay resident while they wait (as deep as they once reached), so this is
/// also a bound on memory: counted in `net::capacity::RESERVED_THREADS`.
pub const MAX_SPARE_THREADS: usize = 64;

/// How long a finished thread waits for another connection before it exits: long
/// enough to catch a page reload or a reconnect, short enough that an idle server is
/// back to its few threads within seconds.
pub const SPARE_LINGER: Duration = Duration::from_secs(2);

/// A connection's work, as handed to a thread.
type Job = Box<dyn FnOnce() + Send>;

/// The process's spare threads: both ends of the hand-over, and how many wait.
struct Spares {
    hand_over: Sender<Job>,
    take_over: Receiver<Job>,
    waiting: AtomicUsize,
}

static SPARES: LazyLock<Spares> = LazyLock::new(|| {
    let (hand_over, take_over) = bounded(0);
    Spares {
        hand_over,
        take_over,
        waiting: AtomicUsize::new(0),
    }
});

/// Runs `job` on a spare thread if one is waiting, otherwise on a new thread. `name`
/// is the thread's name while it runs this job (`top -H`, the inspector, panics).
/// Fails only when a new thread is needed and the system refuses one.
pub fn run(name: String, job: impl FnOnce() + Send + 'static) -> io::Result<()> {
    let job: Job = Box::new(move || {
        name_this_thread(&name);
        job();
    });
    let job = match SPARES.hand_over.try_send(job) {
        Ok(()) => return Ok(()),
        Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => job,
    };
    thread::Builder::new()
        .stack_size(THREAD_STACK_BYTES)
        .spawn(move || work(job))
        .map(drop)
}

/// How many finished threads are waiting for work now (`/metrics`).
pub fn waiting() -> usize {
    SPARES.waiting.load(Ordering::Relaxed)
}

/// A thread's life: its first job, then others handed over while it waits, until
/// none comes within [`SPARE_LINGER`] or enough others are already waiting.
fn work(first: Job) {
    first();
    loop {
        // Count this thread among the waiting, unless enough are waiting already.
        let room = SPARES
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_SPARE_THREADS).then_some(n + 1)
            });
        if room.is_err() {
            return;
        }
        let next = SPARES.take_over.recv_timeout(SPARE_LINGER);
        SPARES.waiting.fetch_sub(1, Ordering::AcqRel);
        match next {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

/// Names the calling thread, as `thread::Builder::name` does for a new one (the
/// kernel keeps 15 bytes of it).
fn name_this_thread(name: &str) {
    #[cfg(target_os = "linux")]
    {
        let mut bytes = [0u8; 16];
        let len = name.len().min(15);
        bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes
        // from a valid pointer, and `bytes` ends in at least one NUL.
        unsafe { libc::prctl(libc::PR_SET_NAME, bytes.as_ptr()) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = name;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Runs a job that reports its thread and that thread's name as the kernel has it.
    fn run_and_report(name: &str) -> (thread::ThreadId, String) {
        let (report, reported) = bounded(1);
        run(name.into(), move || {
            let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap_or_default();
            report
                .send((thread::current().id(), comm.trim().to_owned()))
                .unwrap();
        })
        .unwrap();
        reported.recv().unwrap()
    }

    #[test]
    fn a_finished_thread_runs_the_next_job_under_that_job_s_name() {
        let (first, _) = run_and_report("first");
        // The first thread waits for work once its job is done. Until it does, and
        // while other tests' spares take the jobs, a job may land elsewhere: hand
        // jobs over until one lands on it.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (thread, name) = run_and_report("second");
            if thread == first {
                assert_eq!(name, "second");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the first thread was never reused"
            );
        }
    }
}
