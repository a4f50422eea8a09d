//! One run of a feed's command: its shell in a process group of its own, a watchdog
//! that kills the group if the server dies by any means, and the threads that read
//! its output. Everything here ends with the run.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command as Process, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::{self};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::lines::{log_lines, publish_lines};
use super::{OUTPUT_DRAIN_TIMEOUT, Publisher};

/// The script of a run's watchdog (see [`Run`]). It ignores SIGTERM, which a graceful
/// shutdown sends the whole group, because it must last as long as the feed's own
/// processes; it waits for its standard input to end, which happens only when the
/// server's end of that pipe closes, the server having exited or died; then it
/// SIGKILLs its process group, itself included.
pub(super) const WATCHDOG_SCRIPT: &str = "trap '' TERM; read -r line; kill -s KILL 0";

/// The watchdog's `$0`, so that `ps` says what the process is for.
pub(super) const WATCHDOG_NAME: &str = "threadcast-feed-watchdog";

/// The process group of a command feed's current run, if one is running: where
/// [`Feeds::stop`](super::Feeds::stop) sends its signals. A run clears it, under the lock, before it reaps
/// the group's leader, so no signal can reach a group whose id was given to another.
pub(super) type GroupSlot = Mutex<Option<libc::pid_t>>;

/// Runs the command once: publishes its output until its shell exits, then ends the
/// run (what is left of its process group is killed) and returns how the shell exited.
///
/// The run lasts as long as the shell, not as long as its output: a child the shell
/// left behind may hold the output open for ever, and the feed must still restart.
pub(super) fn run_once(
    command: &str,
    room: &str,
    hub: &Publisher,
    slot: &GroupSlot,
) -> io::Result<ExitStatus> {
    let mut run = Run::start(command, slot)?;
    log::info!("feed '{room}': started `{command}`");
    let output = Output::start(&mut run.shell, room, hub)?;
    let status = run.shell.wait()?;
    drop(run); // kills the rest of the group, which closes its copies of the output
    output.finish(room);
    Ok(status)
}

/// One run of a feed command, built so that none of its processes outlives the run or
/// the server, on any exit path of the server: a clean exit, a panic that aborts, a
/// crash, or SIGKILL (which runs no code of ours at all, so the kernel must do the work).
///
/// - The **shell**, `sh -c COMMAND`, is the feed: the run lasts as long as it does. On
///   Linux it asks the kernel to SIGKILL it when the server dies (`PR_SET_PDEATHSIG`,
///   see [`die_with_server`]).
/// - That request is not inherited by the processes the shell starts (`fork` clears
///   it), so each run also has a process group of its own, led by a **watchdog**: a
///   second `sh` running [`WATCHDOG_SCRIPT`], whose standard input is a pipe that only
///   the server holds open for writing, and never writes. When the server ends, however
///   it ends, the kernel closes that pipe, the watchdog's read returns, and it SIGKILLs
///   the group: the shell and every process still in it (`tail -f x | grep y` included).
///   The watchdog starts first and the shell joins its group, so the shell never runs
///   unguarded. It costs one idle `sh` per command feed.
/// - When the shell exits while the server runs, dropping the `Run` SIGKILLs the group
///   and reaps both processes.
///
/// The limit: a process that leaves the group, by `setsid` (as a daemon that
/// double-forks does) or a shell's job control (`set -m`), leaves this net too. That is
/// the command's choice, and it has to stop that process itself.
pub(super) struct Run<'a> {
    /// `sh -c COMMAND`, the server's child.
    pub(super) shell: Child,
    /// The group's leader, also the server's child.
    pub(super) watchdog: Child,
    /// The run's process group: the watchdog's pid.
    pub(super) group: libc::pid_t,
    /// Where [`Feeds::stop`](super::Feeds::stop) finds `group`, cleared when the run ends.
    pub(super) slot: &'a GroupSlot,
}

impl<'a> Run<'a> {
    /// Starts the watchdog, then the shell in the watchdog's process group, and puts the
    /// group in `slot`.
    pub(super) fn start(command: &str, slot: &'a GroupSlot) -> io::Result<Run<'a>> {
        let mut watchdog = spawn_watchdog()?;
        let group = process_id(&watchdog);
        let shell = match spawn_shell(command, group) {
            Ok(shell) => shell,
            Err(e) => {
                let _ = watchdog.kill();
                let _ = watchdog.wait();
                return Err(e);
            }
        };
        *lock(slot) = Some(group);
        Ok(Run {
            shell,
            watchdog,
            group,
            slot,
        })
    }
}

impl Drop for Run<'_> {
    /// Kills what is left of the run and reaps its two processes. The group is killed
    /// and the slot cleared under the slot's lock, before the watchdog is reaped: until
    /// then the watchdog's pid, which is the group's id, cannot be given to another
    /// process, so neither this signal nor one from [`Feeds::stop`](super::Feeds::stop) can go astray.
    fn drop(&mut self) {
        let mut slot = lock(self.slot);
        signal_group(self.group, libc::SIGKILL);
        *slot = None;
        drop(slot);
        // The shell is in the group; this is for a shell that left it.
        let _ = self.shell.kill();
        let _ = self.shell.wait();
        let _ = self.watchdog.wait();
    }
}

/// Starts a run's watchdog (see [`Run`]) as the leader of a new process group.
pub(super) fn spawn_watchdog() -> io::Result<Child> {
    Process::new("sh")
        .args(["-c", WATCHDOG_SCRIPT, WATCHDOG_NAME])
        // std's pipes are close-on-exec on our side, so no other child inherits our
        // end: it closes exactly when the server's process ends, or at `wait`.
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
}

/// Starts `sh -c COMMAND` in process group `group`, its output piped to us.
pub(super) fn spawn_shell(command: &str, group: libc::pid_t) -> io::Result<Child> {
    let server = std::process::id() as libc::pid_t; // a pid_t that std made a u32
    let mut shell = Process::new("sh");
    shell
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(group);
    // SAFETY: the closure runs in the child, between fork and exec, where only
    // async-signal-safe functions may be called: `die_with_server` makes two system
    // calls and allocates nothing.
    unsafe {
        shell.pre_exec(move || die_with_server(server));
    }
    shell.spawn()
}

/// In the shell, between fork and exec: asks the kernel to SIGKILL this process when
/// its parent, the server, dies. The request survives the exec of `sh`. (To the kernel
/// the parent is the *thread* that forked: the feed's thread, which outlives its runs.)
///
/// The classic race: if the server died before the request was made, the child has
/// already been handed to another parent and will never get the signal. `getppid`
/// tells, and the child then gives up: std ends it with `_exit` when this fails.
#[cfg(target_os = "linux")]
pub(super) fn die_with_server(server: libc::pid_t) -> io::Result<()> {
    // SAFETY: prctl(2) with PR_SET_PDEATHSIG takes a signal number and touches no memory.
    // The argument is passed as the unsigned long the kernel reads.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getppid(2) only returns our parent's pid.
    if unsafe { libc::getppid() } != server {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// Elsewhere there is no parent-death signal: the watchdog alone guards the run.
#[cfg(not(target_os = "linux"))]
pub(super) fn die_with_server(_server: libc::pid_t) -> io::Result<()> {
    Ok(())
}

/// The two threads that read a run's output: standard output into the room, standard
/// error into the log. Each ends when every copy of its pipe's writing end is closed.
pub(super) struct Output {
    /// Disconnects when both threads have ended (each holds a sender).
    pub(super) ended: Receiver<()>,
}

impl Output {
    /// Starts reading `shell`'s standard output and standard error.
    pub(super) fn start(shell: &mut Child, room: &str, hub: &Publisher) -> io::Result<Output> {
        let (done, ended) = crossbeam_channel::bounded::<()>(0);
        if let Some(stdout) = shell.stdout.take() {
            let (room, hub, done) = (room.to_string(), hub.clone(), done.clone());
            thread::Builder::new()
                .name(format!("feed-out-{room}"))
                .spawn(move || {
                    publish_lines(stdout, &room, &hub);
                    drop(done);
                })?;
        }
        if let Some(stderr) = shell.stderr.take() {
            let room = room.to_string();
            thread::Builder::new()
                .name(format!("feed-err-{room}"))
                .spawn(move || {
                    log_lines(stderr, &room);
                    drop(done);
                })?;
        }
        Ok(Output { ended })
    }

    /// Waits, at most [`OUTPUT_DRAIN_TIMEOUT`], for both threads to reach the end of
    /// their pipe, so a run's last lines go out before the next run's first.
    pub(super) fn finish(self, room: &str) {
        if let Err(RecvTimeoutError::Timeout) = self.ended.recv_timeout(OUTPUT_DRAIN_TIMEOUT) {
            log::warn!(
                "feed '{room}': a process that left the command's process group still holds \
                 its output; its lines still reach the room until it lets go"
            );
        }
    }
}

/// Sends `signal` to process group `group`: a run's whole group, since `sh -c "a | b"`
/// starts several processes and stopping only `sh` would leave the others running.
pub(super) fn signal_group(group: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill(2) with a negative pid signals that process group; it touches no
    // memory of ours.
    unsafe {
        libc::kill(-group, signal);
    }
}

/// The process id of `child`, as the system calls take it.
pub(super) fn process_id(child: &Child) -> libc::pid_t {
    child.id() as libc::pid_t // a pid_t that std made a u32
}

/// Locks a group slot. A panic elsewhere while it was held leaves a plain pid behind,
/// still valid, so a poisoned lock is used as it is.
pub(super) fn lock(slot: &GroupSlot) -> MutexGuard<'_, Option<libc::pid_t>> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}
