//! Live feeds: push a stream of lines into a room, the tutorials' "Twitter stream".
//!
//! - `--feed ROOM=COMMAND` runs COMMAND with `sh -c`, broadcasts every line it prints
//!   into ROOM, logs what it writes to stderr, and restarts it with backoff when its
//!   shell exits. None of its processes outlives the server, however the server ends:
//!   see `Run`.
//! - `--feed ROOM=-` reads lines from the server's own standard input, so
//!   `tail -f app.log | threadcast --feed logs=-` shows a live log in the browser.
//! - The demo feed (on unless `--no-demo-feed`) puts a line every second into
//!   `ticker`: the time and a few live figures, so the page shows a stream out of the box.

use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command as Process, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use tungstenite::Message;

use crate::budget::{Budget, Category, RECLAIM_WAIT};
use crate::config::{DEMO_FEED_ROOM, Feed, FeedSource};
use crate::context::Shared;
use crate::hub::Command;
use crate::room::{MESSAGE_OVERHEAD_BYTES, now_millis};

/// First wait before restarting a command that exited.
pub const RESTART_BACKOFF_MIN: Duration = Duration::from_millis(500);
/// Longest wait between restarts (a command that keeps failing costs little).
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A command that ran this long was healthy: the next restart waits the minimum again.
pub const STABLE_RUN: Duration = Duration::from_secs(10);
/// How often the demo feed speaks.
pub const DEMO_INTERVAL: Duration = Duration::from_secs(1);
/// How long shutdown waits for a stopped command's output to end.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest line a feed may send; longer lines are cut (memory stays bounded).
pub const MAX_LINE_BYTES: usize = 64 * 1024;
/// Longest line of a feed's standard error that is logged. The rest of a longer line is
/// read and counted, never kept: a log line is for a person to read, 4 KiB is already a
/// long error message, and a line without end (a binary written to stderr by mistake)
/// must cost neither memory nor the log's disk.
pub const MAX_STDERR_LINE_BYTES: usize = 4 * 1024;
/// How long a run that ended waits for the end of its output. Killing its process group
/// closes every copy of its pipes at once, so this is reached only when a process that
/// left the group still holds them; the feed restarts without waiting for it.
pub const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// The script of a run's watchdog (see [`Run`]). It ignores SIGTERM, which a graceful
/// shutdown sends the whole group, because it must last as long as the feed's own
/// processes; it waits for its standard input to end, which happens only when the
/// server's end of that pipe closes, the server having exited or died; then it
/// SIGKILLs its process group, itself included.
const WATCHDOG_SCRIPT: &str = "trap '' TERM; read -r line; kill -s KILL 0";
/// The watchdog's `$0`, so that `ps` says what the process is for.
const WATCHDOG_NAME: &str = "threadcast-feed-watchdog";

/// The process group of a command feed's current run, if one is running: where
/// [`Feeds::stop`] sends its signals. A run clears it, under the lock, before it reaps
/// the group's leader, so no signal can reach a group whose id was given to another.
type GroupSlot = Mutex<Option<libc::pid_t>>;

/// The running feeds. Dropping `stop` wakes every feed thread that is waiting.
pub struct Feeds {
    stop: Option<Sender<()>>,
    /// The process group of each command feed's current run.
    groups: Vec<Arc<GroupSlot>>,
    /// Threads we wait for at shutdown (the stdin reader is not among them: a read
    /// from a terminal cannot be interrupted, and it ends with the process).
    threads: Vec<JoinHandle<()>>,
    /// Disconnects when every thread in `threads` has ended (each holds a sender).
    finished: Receiver<()>,
}

impl Feeds {
    /// Starts every configured feed, and the demo feed if enabled.
    pub fn start(shared: &Arc<Shared>) -> Feeds {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let (finished_tx, finished) = crossbeam_channel::bounded::<()>(0);
        let mut feeds = Feeds {
            stop: Some(stop_tx),
            groups: Vec::new(),
            threads: Vec::new(),
            finished,
        };
        for Feed { room, source } in &shared.config.feeds {
            let hub = Publisher {
                commands: shared.hub.clone(),
                budget: Arc::clone(&shared.budget),
            };
            let room = room.clone();
            match source {
                FeedSource::Stdin => {
                    let spawned = thread::Builder::new()
                        .name("feed-stdin".into())
                        .spawn(move || publish_lines(std::io::stdin().lock(), &room, &hub));
                    if let Err(e) = spawned {
                        log::error!("cannot start the stdin feed: {e}");
                    }
                }
                FeedSource::Command(command) => {
                    let slot = Arc::new(Mutex::new(None));
                    feeds.groups.push(Arc::clone(&slot));
                    let (command, stop, finished) =
                        (command.clone(), stop_rx.clone(), finished_tx.clone());
                    // This thread starts every run of the command and must outlive
                    // each: a run's shell is killed when the thread that forked it ends
                    // (see `die_with_server`).
                    let thread =
                        thread::Builder::new()
                            .name(format!("feed-{room}"))
                            .spawn(move || {
                                supervise(&command, &room, &hub, &slot, &stop);
                                drop(finished);
                            });
                    feeds.threads.extend(
                        thread
                            .map_err(|e| log::error!("cannot start feed: {e}"))
                            .ok(),
                    );
                }
            }
        }
        if shared.config.demo_feed {
            let (shared, stop, finished) = (Arc::clone(shared), stop_rx, finished_tx);
            let thread = thread::Builder::new()
                .name("feed-demo".into())
                .spawn(move || {
                    demo(&shared, &stop);
                    drop(finished);
                });
            feeds.threads.extend(
                thread
                    .map_err(|e| log::error!("cannot start the demo feed: {e}"))
                    .ok(),
            );
        }
        feeds
    }

    /// Stops every feed: wakes waiting threads, stops running commands, and waits
    /// (bounded) for their threads.
    pub fn stop(&mut self) {
        drop(self.stop.take());
        self.signal_groups(libc::SIGTERM);
        // Returns as soon as the last feed thread has dropped its sender, or at the deadline.
        let _ = self.finished.recv_timeout(STOP_TIMEOUT);
        for thread in self.threads.drain(..) {
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
        // Whatever ignored SIGTERM gets SIGKILL.
        self.signal_groups(libc::SIGKILL);
    }

    /// Sends `signal` to the process group of every command feed running now.
    fn signal_groups(&self, signal: libc::c_int) {
        for slot in &self.groups {
            if let Some(group) = *lock(slot) {
                signal_group(group, signal);
            }
        }
    }
}

/// Runs `command` again and again until `stop` is dropped, with growing pauses
/// between runs while it keeps failing quickly.
fn supervise(command: &str, room: &str, hub: &Publisher, slot: &GroupSlot, stop: &Receiver<()>) {
    // The wait before the next restart: it doubles while runs keep failing quickly.
    let mut backoff = RESTART_BACKOFF_MIN;
    loop {
        let started = Instant::now();
        let outcome = run_once(command, room, hub, slot);
        if stopping(stop) {
            return; // the shutdown ended this run: there is no restart to announce
        }
        if started.elapsed() >= STABLE_RUN {
            backoff = RESTART_BACKOFF_MIN; // a healthy run: start counting again
        }
        match outcome {
            Ok(status) => {
                log::warn!("feed '{room}': command exited ({status}); restarting in {backoff:?}")
            }
            Err(e) => log::warn!("feed '{room}': cannot run command: {e}; retrying in {backoff:?}"),
        }
        // Sleep through the backoff, but wake at once when the server stops.
        if !matches!(stop.recv_timeout(backoff), Err(RecvTimeoutError::Timeout)) {
            return;
        }
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
    }
}

/// Whether the server is stopping (it dropped the sending end of `stop`).
fn stopping(stop: &Receiver<()>) -> bool {
    matches!(stop.try_recv(), Err(TryRecvError::Disconnected))
}

/// Runs the command once: publishes its output until its shell exits, then ends the
/// run (what is left of its process group is killed) and returns how the shell exited.
///
/// The run lasts as long as the shell, not as long as its output: a child the shell
/// left behind may hold the output open for ever, and the feed must still restart.
fn run_once(
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
struct Run<'a> {
    /// `sh -c COMMAND`, the server's child.
    shell: Child,
    /// The group's leader, also the server's child.
    watchdog: Child,
    /// The run's process group: the watchdog's pid.
    group: libc::pid_t,
    /// Where [`Feeds::stop`] finds `group`, cleared when the run ends.
    slot: &'a GroupSlot,
}

impl<'a> Run<'a> {
    /// Starts the watchdog, then the shell in the watchdog's process group, and puts the
    /// group in `slot`.
    fn start(command: &str, slot: &'a GroupSlot) -> io::Result<Run<'a>> {
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
    /// process, so neither this signal nor one from [`Feeds::stop`] can go astray.
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
fn spawn_watchdog() -> io::Result<Child> {
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
fn spawn_shell(command: &str, group: libc::pid_t) -> io::Result<Child> {
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
fn die_with_server(server: libc::pid_t) -> io::Result<()> {
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
fn die_with_server(_server: libc::pid_t) -> io::Result<()> {
    Ok(())
}

/// The two threads that read a run's output: standard output into the room, standard
/// error into the log. Each ends when every copy of its pipe's writing end is closed.
struct Output {
    /// Disconnects when both threads have ended (each holds a sender).
    ended: Receiver<()>,
}

impl Output {
    /// Starts reading `shell`'s standard output and standard error.
    fn start(shell: &mut Child, room: &str, hub: &Publisher) -> io::Result<Output> {
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
    fn finish(self, room: &str) {
        if let Err(RecvTimeoutError::Timeout) = self.ended.recv_timeout(OUTPUT_DRAIN_TIMEOUT) {
            log::warn!(
                "feed '{room}': a process that left the command's process group still holds \
                 its output; its lines still reach the room until it lets go"
            );
        }
    }
}

/// Where a feed's lines go: the hub, with each line charged to the memory budget.
#[derive(Clone, Debug)]
struct Publisher {
    commands: Sender<Command>,
    budget: Arc<Budget>,
}

/// Publishes each line of `input` into `room` until it ends. A line that is not
/// UTF-8 goes out as a binary message. A line longer than [`MAX_LINE_BYTES`] goes out
/// in pieces of that size: unlike a log line, every byte a feed prints is content.
fn publish_lines(input: impl Read, room: &str, hub: &Publisher) {
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    while next_line(&mut reader, MAX_LINE_BYTES, &mut line) != Line::End {
        let message = match String::from_utf8(std::mem::take(&mut line)) {
            Ok(text) => Message::text(text),
            Err(not_utf8) => Message::binary(not_utf8.into_bytes()),
        };
        // A feed waits for memory like any publisher; a line the budget cannot take
        // even then is dropped (and counted among the budget's refusals).
        let cost = message.len() + MESSAGE_OVERHEAD_BYTES;
        let Some(charge) = hub
            .budget
            .reserve_within(Category::Messages, cost, RECLAIM_WAIT)
        else {
            log::warn!(
                "feed '{room}': a line of {} bytes dropped: the memory budget is exhausted",
                message.len()
            );
            continue;
        };
        let publish = Command::Publish {
            room: room.to_string(),
            message,
            cid: None,
            from: None,
            reply: None,
            charge,
        };
        if hub.commands.send(publish).is_err() {
            return; // the hub has stopped
        }
    }
}

/// Logs each line of a feed's standard error until it ends, cut at
/// [`MAX_STDERR_LINE_BYTES`]: the rest of a longer line is read and counted, and the log
/// says how much was cut.
fn log_lines(input: impl Read, room: &str) {
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        let cut = match next_line(&mut reader, MAX_STDERR_LINE_BYTES, &mut line) {
            Line::End => return,
            Line::Whole => 0,
            Line::Cut => skip_rest_of_line(&mut reader),
        };
        // Lossy: an error message is worth reading even with a byte that is not UTF-8.
        let text = String::from_utf8_lossy(&line);
        if cut == 0 {
            log::warn!("feed '{room}' stderr: {text}");
        } else {
            log::warn!("feed '{room}' stderr: {text}… ({cut} more bytes)");
        }
    }
}

/// How the line read by [`next_line`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// At its end of line (removed), or at the end of the input.
    Whole,
    /// After `limit` bytes, with the rest of the line not read yet.
    Cut,
    /// There was no line: the input ended (or failed, which for a pipe is the same).
    End,
}

/// Reads the next line of `reader` into `line` (emptied first), keeping at most `limit`
/// bytes of it: the one bounded reader of a feed's output, so that no line, however long,
/// costs more than `limit` bytes.
fn next_line(reader: &mut impl BufRead, limit: usize, line: &mut Vec<u8>) -> Line {
    line.clear();
    match reader.by_ref().take(limit as u64).read_until(b'\n', line) {
        Ok(0) | Err(_) => Line::End,
        Ok(_) if line.ends_with(b"\n") => {
            while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                line.pop();
            }
            Line::Whole
        }
        Ok(read) if read == limit => Line::Cut,
        Ok(_) => Line::Whole, // the last line, without a newline
    }
}

/// Reads the rest of a cut line and its newline, keeping none of it (only the reader's
/// own buffer is ever filled), and returns how many bytes it had before its newline.
fn skip_rest_of_line(reader: &mut impl BufRead) -> u64 {
    let mut skipped = 0;
    loop {
        let buffer = match reader.fill_buf() {
            Ok([]) => return skipped, // the input ended inside the line
            Ok(buffer) => buffer,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return skipped,
        };
        match buffer.iter().position(|b| *b == b'\n') {
            Some(end) => {
                reader.consume(end + 1);
                return skipped + end as u64;
            }
            None => {
                let read = buffer.len();
                reader.consume(read);
                skipped += read as u64;
            }
        }
    }
}

/// The demo feed: once a second, the time and a few live figures.
fn demo(shared: &Shared, stop: &Receiver<()>) {
    while let Err(RecvTimeoutError::Timeout) = stop.recv_timeout(DEMO_INTERVAL) {
        let secs = now_millis() / 1000;
        let line = format!(
            "{:02}:{:02}:{:02} UTC · {} connections · {} messages in · up {} s",
            secs / 3600 % 24,
            secs / 60 % 60,
            secs % 60,
            shared.limit.open(),
            shared.counters.messages_in.load(Ordering::Relaxed),
            shared.started.elapsed().as_secs(),
        );
        let charge = shared.budget.force(Category::Messages, line.len());
        let publish = Command::Publish {
            room: DEMO_FEED_ROOM.into(),
            message: Message::text(line),
            cid: None,
            from: None,
            reply: None,
            charge,
        };
        if shared.hub.send(publish).is_err() {
            return;
        }
    }
}

/// Sends `signal` to process group `group`: a run's whole group, since `sh -c "a | b"`
/// starts several processes and stopping only `sh` would leave the others running.
fn signal_group(group: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill(2) with a negative pid signals that process group; it touches no
    // memory of ours.
    unsafe {
        libc::kill(-group, signal);
    }
}

/// The process id of `child`, as the system calls take it.
fn process_id(child: &Child) -> libc::pid_t {
    child.id() as libc::pid_t // a pid_t that std made a u32
}

/// Locks a group slot. A panic elsewhere while it was held leaves a plain pid behind,
/// still valid, so a poisoned lock is used as it is.
fn lock(slot: &GroupSlot) -> MutexGuard<'_, Option<libc::pid_t>> {
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads every line of `input` with `next_line` at `limit`, with how each ended.
    fn lines(input: &[u8], limit: usize) -> Vec<(String, Line)> {
        let mut reader = BufReader::new(input);
        let mut line = Vec::new();
        let mut found = Vec::new();
        loop {
            match next_line(&mut reader, limit, &mut line) {
                Line::End => return found,
                end => found.push((String::from_utf8_lossy(&line).into_owned(), end)),
            }
        }
    }

    #[test]
    fn lines_lose_their_line_ends_and_the_last_needs_none() {
        assert_eq!(
            lines(b"one\ntwo\r\nthree", 16),
            [
                ("one".into(), Line::Whole),
                ("two".into(), Line::Whole),
                ("three".into(), Line::Whole)
            ]
        );
    }

    #[test]
    fn a_long_line_is_cut_at_the_limit_and_the_rest_stays_unread() {
        assert_eq!(
            lines(b"abcdefg\nh\n", 3),
            [
                ("abc".into(), Line::Cut),
                ("def".into(), Line::Cut),
                ("g".into(), Line::Whole),
                ("h".into(), Line::Whole)
            ]
        );
    }

    #[test]
    fn skipping_a_cut_line_counts_its_bytes_and_stops_after_its_newline() {
        // A reader buffer smaller than the line, so the skip takes several fills.
        let mut reader = BufReader::with_capacity(4, &b"abcdefghij\nnext\n"[..]);
        let mut line = Vec::new();
        assert_eq!(next_line(&mut reader, 3, &mut line), Line::Cut);
        assert_eq!(skip_rest_of_line(&mut reader), 7);
        assert_eq!(next_line(&mut reader, 3, &mut line), Line::Cut);
        assert_eq!(line, b"nex");
        assert_eq!(skip_rest_of_line(&mut reader), 1);
        assert_eq!(next_line(&mut reader, 3, &mut line), Line::End);
    }

    #[test]
    fn a_cut_line_that_never_ends_is_counted_to_the_end_of_the_input() {
        let mut reader = BufReader::new(&b"abcdef"[..]);
        let mut line = Vec::new();
        assert_eq!(next_line(&mut reader, 2, &mut line), Line::Cut);
        assert_eq!(skip_rest_of_line(&mut reader), 4);
    }
}
