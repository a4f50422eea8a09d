//! Live feeds: push a stream of lines into a room, the tutorials' "Twitter stream".
//!
//! - `--feed ROOM=COMMAND` runs COMMAND with `sh -c`, broadcasts every line it prints
//!   into ROOM, logs what it writes to stderr, and restarts it with backoff when it
//!   exits. At shutdown its whole process group is stopped.
//! - `--feed ROOM=-` reads lines from the server's own standard input, so
//!   `tail -f app.log | threadcast --feed logs=-` shows a live log in the browser.
//! - The demo feed (on unless `--no-demo-feed`) puts a line every second into
//!   `ticker`: the time and a few live figures, so the page shows a stream out of the box.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tungstenite::Message;

use crate::config::{DEMO_FEED_ROOM, Feed, FeedSource};
use crate::hub::Command;
use crate::room::now_millis;
use crate::server::Shared;

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

/// The running feeds. Dropping `stop` wakes every feed thread that is waiting.
pub struct Feeds {
    stop: Option<Sender<()>>,
    /// Children running right now, one slot per command feed.
    children: Vec<Arc<Mutex<Option<Child>>>>,
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
            children: Vec::new(),
            threads: Vec::new(),
            finished,
        };
        for Feed { room, source } in &shared.config.feeds {
            let hub = shared.hub.clone();
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
                    feeds.children.push(Arc::clone(&slot));
                    let (command, stop, finished) =
                        (command.clone(), stop_rx.clone(), finished_tx.clone());
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
        for slot in &self.children {
            if let Some(child) = slot.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
                signal_group(child, libc::SIGTERM);
            }
        }
        // Returns as soon as the last feed thread has dropped its sender, or at the deadline.
        let _ = self.finished.recv_timeout(STOP_TIMEOUT);
        for thread in self.threads.drain(..) {
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
        // Whatever ignored SIGTERM gets SIGKILL.
        for slot in &self.children {
            if let Some(child) = slot.lock().unwrap_or_else(PoisonError::into_inner).as_ref() {
                signal_group(child, libc::SIGKILL);
            }
        }
    }
}

/// Runs `command` again and again until `stop` is dropped, with growing pauses
/// between runs while it keeps failing quickly.
fn supervise(
    command: &str,
    room: &str,
    hub: &Sender<Command>,
    slot: &Mutex<Option<Child>>,
    stop: &Receiver<()>,
) {
    let mut backoff = RESTART_BACKOFF_MIN;
    loop {
        let started = Instant::now();
        match run_once(command, room, hub, slot) {
            Ok(status) => {
                log::warn!("feed '{room}': command exited ({status}); restarting in {backoff:?}")
            }
            Err(e) => log::warn!("feed '{room}': cannot run command: {e}; retrying in {backoff:?}"),
        }
        backoff = if started.elapsed() >= STABLE_RUN {
            RESTART_BACKOFF_MIN
        } else {
            (backoff * 2).min(RESTART_BACKOFF_MAX)
        };
        // Sleep through the backoff, but wake at once when the server stops.
        if !matches!(stop.recv_timeout(backoff), Err(RecvTimeoutError::Timeout)) {
            return;
        }
    }
}

/// Runs the command once, publishing its output, and returns how it exited.
fn run_once(
    command: &str,
    room: &str,
    hub: &Sender<Command>,
    slot: &Mutex<Option<Child>>,
) -> std::io::Result<String> {
    let mut child = Process::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0) // its own group, so stopping it stops everything it started
        .spawn()?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(child);
    log::info!("feed '{room}': started `{command}`");

    let room_name = room.to_string();
    let logger = stderr.map(|stderr| {
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log::warn!("feed '{room_name}' stderr: {line}");
            }
        })
    });
    if let Some(stdout) = stdout {
        publish_lines(stdout, room, hub);
    }
    if let Some(logger) = logger {
        let _ = logger.join();
    }
    let child = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    match child {
        Some(mut child) => Ok(child.wait()?.to_string()),
        None => Ok("stopped".into()),
    }
}

/// Publishes each line of `input` into `room` until it ends. A line that is not
/// UTF-8 goes out as a binary message.
fn publish_lines(input: impl Read, room: &str, hub: &Sender<Command>) {
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader
            .by_ref()
            .take(MAX_LINE_BYTES as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        let message = match String::from_utf8(line.clone()) {
            Ok(text) => Message::text(text),
            Err(_) => Message::binary(line.clone()),
        };
        let publish = Command::Publish {
            room: room.to_string(),
            message,
            cid: None,
            from: None,
            reply: None,
        };
        if hub.send(publish).is_err() {
            return; // the hub has stopped
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
        let publish = Command::Publish {
            room: DEMO_FEED_ROOM.into(),
            message: Message::text(line),
            cid: None,
            from: None,
            reply: None,
        };
        if shared.hub.send(publish).is_err() {
            return;
        }
    }
}

/// Sends `signal` to the child's whole process group (`sh -c "a | b"` starts several
/// processes; stopping only `sh` would leave the others writing to our pipe).
fn signal_group(child: &Child, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals that process group; it touches no
    // memory of ours. The group is the child's own (process_group(0) at spawn).
    unsafe {
        libc::kill(-pgid, signal);
    }
}
