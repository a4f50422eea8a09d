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
//! Each waiting thread has a slot of its own for its next job; the slots of the
//! waiting threads are kept on a stack. Handing a job over is: take the slot on top
//! (the thread that finished last, whose stack and caches are still warm), put the
//! job in, wake that one thread. The threads at the bottom are the ones that wait
//! longest, and when churn calms down they are the first to leave.
//!
//! Each slot is a `OneShot` (`net::one_shot`). Why not a channel: crossbeam's receivers spin and then give up the CPU several
//! times (`sched_yield`) before they sleep, and a zero-capacity channel wakes the
//! receiver before the job is written, so it spins again; with hundreds of threads
//! on a few cores every `sched_yield` is a switch to another thread. A `Condvar` just
//! sleeps.

use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::limit::THREAD_STACK_BYTES;
use super::one_shot::OneShot;

/// At most this many finished threads of each [`Kind`] wait for work at once; the
/// others exit. Their stacks stay resident while they wait (as deep as they once
/// reached), so this is also a bound on memory: counted in
/// `net::capacity::RESERVED_THREADS`.
pub const MAX_SPARE_THREADS: usize = 64;

/// How long a finished thread waits for another connection before it exits: long
/// enough to catch a page reload or a reconnect, short enough that an idle server is
/// back to its few threads within seconds.
pub const SPARE_LINGER: Duration = Duration::from_secs(2);

/// A connection's work, as handed to a thread.
type Job = Box<dyn FnOnce() + Send>;

/// Where one waiting thread receives its next job.
type Slot = OneShot<Job>;

/// The kinds of work a thread does. A spare thread is only handed work of the kind it
/// started with, because the kinds run at different priorities (a thread may lower
/// its own priority, but raising it back needs privileges).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A connection's own thread: the request, then a WebSocket's reader, an SSE
    /// stream, a poll; also a file answer.
    Connection,
    /// A WebSocket's writer, at [`WRITER_NICE`].
    Writer,
}

/// The writers' nice value (the normal is 0; higher is lower priority). The hub
/// wakes writers by the thousand: one message to a room of 1,000 wakes 1,000 of
/// them. At equal priority each woken writer may take the CPU from the hub at once,
/// and the last member's copy waits for all of that; slightly lower, they let the
/// hub hand the message out first (bench/ANALYSIS.md: fan-out p99 to 1,000, median of
/// 3, 35.7 ms at 0, 27.8 at 2; at 5 echo with 100 connections lost 15 %, at 2 nothing
/// measurable). Readers and the hub keep the normal priority.
pub const WRITER_NICE: i32 = 2;

/// How many [`Kind`]s there are: one stack of spare threads each.
const KINDS: usize = 2;

/// At most this many spare threads wait in all.
pub const MAX_SPARE_THREADS_IN_ALL: usize = KINDS * MAX_SPARE_THREADS;

/// The slots of the threads waiting for work, one stack per [`Kind`], the last to
/// finish on top.
static WAITING: [Mutex<Vec<Arc<Slot>>>; KINDS] = [const { Mutex::new(Vec::new()) }; KINDS];

impl Kind {
    fn waiting(self) -> &'static Mutex<Vec<Arc<Slot>>> {
        &WAITING[self as usize]
    }

    /// Readies a new thread for this kind of work.
    fn prepare(self) {
        if self == Kind::Writer {
            // On Linux the nice value is each thread's own; `0` is the calling thread.
            // SAFETY: setpriority takes plain integers and changes no memory.
            #[cfg(target_os = "linux")]
            unsafe {
                libc::setpriority(libc::PRIO_PROCESS, 0, WRITER_NICE);
            }
        }
    }
}

/// Runs `job` on a spare thread if one is waiting, otherwise on a new thread. `name`
/// is the thread's name while it runs this job (`top -H`, the inspector, panics).
/// Fails only when a new thread is needed and the system refuses one.
pub fn run(kind: Kind, name: String, job: impl FnOnce() + Send + 'static) -> io::Result<()> {
    let job: Job = Box::new(move || {
        name_this_thread(&name);
        job();
    });
    if let Some(slot) = lock(kind.waiting()).pop() {
        // Taken off the stack: that thread now waits for this job and nothing else.
        slot.put(job);
        return Ok(());
    }
    thread::Builder::new()
        .stack_size(THREAD_STACK_BYTES)
        .spawn(move || work(kind, job))
        .map(drop)
}

/// How many finished threads are waiting for work now (`/metrics`).
pub fn waiting() -> usize {
    WAITING.iter().map(|stack| lock(stack).len()).sum()
}

/// A thread's life: its first job, then the jobs handed to it while it waits, until
/// none comes within [`SPARE_LINGER`] or enough others are already waiting.
fn work(kind: Kind, first: Job) {
    kind.prepare();
    let mut job = first;
    loop {
        job();
        match next_job(kind) {
            Some(next) => job = next,
            None => return,
        }
    }
}

/// Waits on the stack for a job; `None` when there is no room on it or no job came.
#[inline(never)] // its locks and slot are not on the stack while a job runs
fn next_job(kind: Kind) -> Option<Job> {
    let slot = Arc::new(Slot::default());
    {
        let mut waiting = lock(kind.waiting());
        if waiting.len() >= MAX_SPARE_THREADS {
            return None;
        }
        waiting.push(Arc::clone(&slot));
    }
    if let Some(job) = slot.take_until(Instant::now() + SPARE_LINGER) {
        return Some(job);
    }
    // Leave the stack, unless a job was handed over just now: whoever took this slot
    // off the stack is about to fill it, so wait for that.
    let mut waiting = lock(kind.waiting());
    if let Some(at) = waiting.iter().position(|s| Arc::ptr_eq(s, &slot)) {
        waiting.remove(at);
        return None;
    }
    drop(waiting);
    Some(slot.take())
}

/// Locks the stack of waiting threads; whoever holds it only pushes or pops, so a
/// panic elsewhere cannot leave it half-changed.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
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
    use crossbeam_channel::bounded;
    use std::time::Instant;

    /// Runs a job that reports its thread and that thread's name as the kernel has it.
    fn run_and_report(name: &str) -> (thread::ThreadId, String) {
        let (report, reported) = bounded(1);
        run(Kind::Connection, name.into(), move || {
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
