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

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use tungstenite::Message;

use crate::budget::{Budget, Category};
use crate::config::defaults::DEMO_FEED_ROOM;
use crate::config::{Feed, FeedSource};
use crate::context::Shared;
use crate::hub;
use crate::room::{Tag, now_millis};

mod lines;
mod process;

use lines::publish_lines;
use process::{GroupSlot, lock, run_once, signal_group};

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

/// How long a run that ended waits for the end of its output. Killing its process group
/// closes every copy of its pipes at once, so this is reached only when a process that
/// left the group still holds them; the feed restarts without waiting for it.
pub const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

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
        let (stop_tx, stop) = crossbeam_channel::bounded::<()>(0);
        let (finished_tx, finished) = crossbeam_channel::bounded::<()>(0);
        let mut feeds = Feeds {
            stop: Some(stop_tx),
            groups: Vec::new(),
            threads: Vec::new(),
            finished,
        };
        for Feed { room, source } in &shared.config.feeds {
            let hub = Publisher {
                hub: shared.hub.clone(),
                budget: Arc::clone(&shared.budget),
            };
            match source {
                FeedSource::Stdin => start_stdin(room.clone(), hub),
                FeedSource::Command(command) => {
                    let ends = (stop.clone(), finished_tx.clone());
                    feeds.start_command(command.clone(), room.clone(), hub, ends);
                }
            }
        }
        if shared.config.demo_feed {
            let shared = Arc::clone(shared);
            let thread = thread::Builder::new()
                .name("feed-demo".into())
                .spawn(move || {
                    demo(&shared, &stop);
                    drop(finished_tx);
                });
            feeds.keep(thread, "the demo feed");
        }
        feeds
    }

    /// Starts the thread that runs `command` again and again, publishing its lines into
    /// `room`. It holds `stop` to hear of shutdown, and `finished` until it ends.
    fn start_command(
        &mut self,
        command: String,
        room: String,
        hub: Publisher,
        (stop, finished): (Receiver<()>, Sender<()>),
    ) {
        let slot = Arc::new(Mutex::new(None));
        self.groups.push(Arc::clone(&slot));
        // This thread starts every run of the command and must outlive each: a run's
        // shell is killed when the thread that forked it ends (see `die_with_server`).
        let thread = thread::Builder::new()
            .name(format!("feed-{room}"))
            .spawn(move || {
                supervise(&command, &room, &hub, &slot, &stop);
                drop(finished);
            });
        self.keep(thread, "feed");
    }

    /// Keeps a started feed thread to wait for at shutdown; logs one that did not start.
    fn keep(&mut self, thread: io::Result<JoinHandle<()>>, what: &str) {
        match thread {
            Ok(thread) => self.threads.push(thread),
            Err(e) => log::error!("cannot start {what}: {e}"),
        }
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

/// Publishes standard input's lines into `room` (`--feed ROOM=-`). Not waited for at
/// shutdown: a read from standard input cannot be interrupted.
fn start_stdin(room: String, hub: Publisher) {
    let spawned = thread::Builder::new()
        .name("feed-stdin".into())
        .spawn(move || publish_lines(std::io::stdin().lock(), &room, &hub));
    if let Err(e) = spawned {
        log::error!("cannot start the stdin feed: {e}");
    }
}

/// Whether the server is stopping (it dropped the sending end of `stop`).
fn stopping(stop: &Receiver<()>) -> bool {
    matches!(stop.try_recv(), Err(TryRecvError::Disconnected))
}

/// Where a feed's lines go: the hub, with each line charged to the memory budget.
#[derive(Clone, Debug)]
struct Publisher {
    hub: hub::Handle,
    budget: Arc<Budget>,
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
        let message = (Message::text(line), charge);
        if !shared
            .hub
            .post(DEMO_FEED_ROOM.into(), message, Tag::default(), None)
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::BufReader;

    use super::lines::{Line, next_line, skip_rest_of_line};

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
