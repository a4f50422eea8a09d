//! Feed commands (`--feed ROOM=COMMAND`) against the real binary and real processes:
//! a feed's processes die with the server however it ends, killing a feed's shell
//! restarts the feed even while its children hold its output open, and a huge line on
//! a feed's standard error costs the server a bounded amount of memory.
//!
//! Each test starts its own server, and a [`FeedServer`] remembers the process groups of
//! that server's children (the feed's processes, found in /proc): its `Drop` kills them
//! even when a test fails, and tests running in parallel never touch each other's.

mod common;

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io::Write;
use std::net::TcpStream;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use common::frames::{Frame, join_addr};
use common::*;
use tungstenite::WebSocket;

/// The room every test's feed publishes into.
const ROOM: &str = "r";

/// How long a feed's processes may outlive a killed server: the watchdog reacts within
/// milliseconds, so this only absorbs a slow, loaded test machine.
const DEATH_BOUND: Duration = Duration::from_secs(5);

/// The size of the one stderr line of the memory test: far above anything the server
/// may hold (`feed::MAX_STDERR_LINE_BYTES`, 4 KiB), so holding it would show.
const HUGE_LINE_BYTES: usize = 50 * 1024 * 1024;

/// How much the server's peak resident memory may grow while it reads the huge line:
/// pipe and reader buffers and a log line of 4 KiB, with room for the allocator's
/// arenas; holding the line would cost at least 50 MB.
const MEMORY_GROWTH_BOUND_KIB: u64 = 8 * 1024;

// ---------------------------------------------------------------------------------
// A server with one feed, and the processes of that feed.
// ---------------------------------------------------------------------------------

/// The threadcast binary running one feed in room [`ROOM`], with a temporary folder for
/// the feed's files. Dropping it kills the server and every process group its feed has
/// run in.
struct FeedServer {
    binary: Binary,
    dir: PathBuf,
    /// The process groups of the server's children seen so far (see `remember_groups`).
    groups: RefCell<Vec<libc::pid_t>>,
    /// The server's log lines, read by a thread of their own so that the server never
    /// blocks on a full pipe and a test can wait for a line with a deadline.
    logs: Receiver<String>,
}

impl FeedServer {
    /// Starts the binary with `--feed r=COMMAND`, where `command` is given a fresh
    /// folder for its files.
    fn start(tag: &str, command: impl FnOnce(&Path) -> String) -> FeedServer {
        let dir = temp_dir(tag);
        let mut process = binary_command();
        process.args([
            "--no-demo-feed",
            "--feed",
            &format!("{ROOM}={}", command(&dir)),
        ]);
        let mut binary = Binary::start(process);
        let (sender, logs) = mpsc::channel();
        let lines = std::mem::replace(&mut binary.logs, Box::new(std::iter::empty()));
        std::thread::spawn(move || {
            for line in lines {
                let _ = sender.send(line);
            }
        });
        FeedServer {
            binary,
            dir,
            groups: RefCell::new(Vec::new()),
            logs,
        }
    }

    /// Notes the process groups of the server's children right now, for `Drop` to kill:
    /// a test calls it while its feed runs, since once the server or the feed's shell
    /// is dead, nothing in /proc leads to the processes left behind.
    fn remember_groups(&self) {
        let server = self.pid();
        let children = processes().filter_map(stat).filter(|s| s.parent == server);
        let mut groups = self.groups.borrow_mut();
        for child in children {
            if !groups.contains(&child.group) {
                groups.push(child.group);
            }
        }
    }

    /// The server's process id.
    fn pid(&self) -> libc::pid_t {
        pid_of(self.binary.child.id())
    }

    /// A client of the room that first gets everything the feed has said so far.
    fn join(&self) -> WebSocket<TcpStream> {
        let (ws, _welcome) = join_addr(self.binary.ws, ROOM, "?since=0");
        ws
    }

    /// Kills the server with SIGKILL, as the OOM killer or `kill -9` would, and reaps it.
    fn kill_server(&mut self) {
        let _ = self.binary.child.kill();
        let _ = self.binary.child.wait();
    }

    /// Waits (bounded) for a log line containing `text` and returns it.
    fn wait_for_log(&self, text: &str) -> String {
        let deadline = Instant::now() + TEST_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.logs.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => continue,
                Err(_) => panic!("no log line contains {text:?}"),
            }
        }
    }
}

impl Drop for FeedServer {
    fn drop(&mut self) {
        self.remember_groups();
        self.kill_server();
        // SAFETY: getpgrp(2) only reads this process's group id.
        let own_group = unsafe { libc::getpgrp() };
        for group in self.groups.borrow().iter().filter(|g| **g != own_group) {
            signal(-group, libc::SIGKILL);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The next line the feed published into the room, failing the test with `what` if
/// none comes within [`TEST_TIMEOUT`] (the client's read timeout).
fn next_line(ws: &mut WebSocket<TcpStream>, what: &str) -> String {
    loop {
        let message = match ws.read() {
            Ok(message) => message,
            Err(e) => panic!("{what}: no line came ({e})"),
        };
        if !(message.is_text() || message.is_binary()) {
            continue; // pings and the like
        }
        if let Frame::Message { payload, .. } = frames::parse(message) {
            return String::from_utf8_lossy(&payload).into_owned();
        }
    }
}

// ---------------------------------------------------------------------------------
// Processes, from /proc.
// ---------------------------------------------------------------------------------

/// What a test needs from `/proc/PID/stat`.
#[derive(Clone, Copy, Debug)]
struct Stat {
    /// `Z` for a zombie: dead, waiting for its parent (perhaps forever, when that is a
    /// PID 1 that does not reap) to collect its exit status.
    state: char,
    parent: libc::pid_t,
    group: libc::pid_t,
}

/// The state and process group of `pid`, or `None` if there is no such process.
fn stat(pid: libc::pid_t) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces and parentheses: the fields
    // after it start after its last `)`. They are: state, parent, process group.
    let mut fields = text[text.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    let group = fields.next()?.parse().ok()?;
    Some(Stat {
        state,
        parent,
        group,
    })
}

/// Whether `pid` is running (not a zombie) and still in process group `group` (a pid
/// reused by another process would almost surely be in another group).
fn alive_in(pid: libc::pid_t, group: libc::pid_t) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z' && s.group == group)
}

/// Every process id in /proc right now.
fn processes() -> impl Iterator<Item = libc::pid_t> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
}

/// The running (not zombie) members of process group `group`.
fn group_members(group: libc::pid_t) -> Vec<libc::pid_t> {
    processes().filter(|pid| alive_in(*pid, group)).collect()
}

/// The command line of `pid`, arguments joined by spaces (empty if it is gone).
fn cmdline(pid: libc::pid_t) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .unwrap_or_default()
}

/// One field of `/proc/PID/status` in KiB (`VmRSS`, `VmHWM`).
fn memory_kib(pid: libc::pid_t, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// Sends `signal` to `pid` (a negative pid: to that process group), ignoring errors:
/// the process may already be gone.
fn signal(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill(2) touches no memory of ours.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// A process id from std's `u32`.
fn pid_of(id: u32) -> libc::pid_t {
    libc::pid_t::try_from(id).expect("a pid fits in pid_t")
}

/// A pid the feed printed.
fn parse_pid(line: &str) -> libc::pid_t {
    line.trim()
        .parse()
        .unwrap_or_else(|_| panic!("not a pid: {line:?}"))
}

// ---------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------

/// SIGKILL gives the server no chance to stop its feeds: they must die anyway, the
/// shell (the server's child) and the processes the shell started (its children, in
/// its process group), a background one and both ends of a pipeline included.
#[test]
fn a_feeds_processes_die_when_the_server_is_killed() {
    let mut server = FeedServer::start("feeds-kill", |dir| {
        let pid_file = dir.join("shell");
        let pid_file = pid_file.display();
        // The line reaches the room through `tail` and `cat`, so when it arrives the
        // shell, `sleep`, `tail` and `cat` are all running.
        format!("echo $$ > {pid_file}; sleep 1000 & tail -f {pid_file} | cat")
    });
    let mut ws = server.join();
    let shell = parse_pid(&next_line(&mut ws, "the feed's first line"));
    server.remember_groups();
    let group = stat(shell).expect("the feed's shell runs").group;
    let members = group_members(group);
    assert!(
        members.contains(&shell) && members.len() >= 4,
        "the feed's group {group} should hold sh, sleep, tail and cat: {members:?}"
    );

    let killed = Instant::now();
    server.kill_server();
    while members.iter().any(|pid| alive_in(*pid, group)) && killed.elapsed() < DEATH_BOUND {
        std::thread::sleep(Duration::from_millis(10)); // bounded polling of /proc
    }
    let survivors: Vec<_> = members
        .iter()
        .filter(|pid| alive_in(**pid, group))
        .map(|pid| format!("{pid} {}", cmdline(*pid)))
        .collect();
    assert!(
        survivors.is_empty(),
        "{} of the feed's {} processes outlived the killed server by {DEATH_BOUND:?}: {survivors:?}",
        survivors.len(),
        members.len()
    );
    eprintln!(
        "all {} feed processes gone {:?} after SIGKILL",
        members.len(),
        killed.elapsed()
    );
}

/// The feed is its shell: when the shell dies, the feed restarts, even though the
/// shell's child still holds the feed's standard output open (which used to keep the
/// server reading, and the feed from restarting, for as long as that child lived).
#[test]
fn killing_a_feeds_shell_restarts_the_feed() {
    let server = FeedServer::start("feeds-restart", |_| "echo $$; sleep 1000 & wait".into());
    let mut ws = server.join();
    let shell = parse_pid(&next_line(&mut ws, "the feed's first line"));
    server.remember_groups();
    let group = stat(shell).expect("the feed's shell runs").group;
    let members = group_members(group);
    assert!(members.len() >= 2, "sh and sleep: {members:?}");

    let killed = Instant::now();
    signal(shell, libc::SIGKILL);
    let restarted = parse_pid(&next_line(&mut ws, "the feed restarted"));
    assert_ne!(restarted, shell, "a new shell prints its own pid");
    eprintln!(
        "the feed restarted {:?} after its shell was killed",
        killed.elapsed()
    );
    // The rest of the old shell's group, `sleep` with the feed's output, is gone too.
    let deadline = Instant::now() + DEATH_BOUND;
    while members.iter().any(|pid| alive_in(*pid, group)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10)); // bounded polling of /proc
    }
    let survivors: Vec<_> = members
        .iter()
        .filter(|pid| alive_in(**pid, group))
        .collect();
    assert!(survivors.is_empty(), "left of the old run: {survivors:?}");
}

/// A feed prints a 50 MB line on its standard error: the server logs its first 4 KiB
/// and how much it cut, its memory barely grows, and it keeps serving.
#[test]
fn a_huge_stderr_line_is_cut_and_costs_no_memory() {
    let server = FeedServer::start("feeds-stderr", |dir| {
        let go = dir.join("go");
        let status = std::process::Command::new("mkfifo")
            .arg(&go)
            .status()
            .expect("mkfifo");
        assert!(status.success());
        // Wait for the test to say go, write the line (a pipe holds 64 KiB, so once
        // `tr` is done the server has read nearly all of it), end it, then say so on
        // standard output and keep standard error open.
        format!(
            "read _ < {go}; head -c {HUGE_LINE_BYTES} /dev/zero | tr '\\000' x >&2; \
             echo >&2; echo written; exec sleep 1000",
            go = go.display()
        )
    });
    let mut ws = server.join();
    // Opening a FIFO to write, without blocking, succeeds once a reader has it open:
    // then the feed is running and waiting for our word.
    let mut go = None;
    wait_until("the feed opens its FIFO", || {
        go = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(server.dir.join("go"))
            .ok();
        go.is_some()
    });
    server.remember_groups();
    let before = memory_kib(server.pid(), "VmRSS");
    go.take().unwrap().write_all(b"go\n").unwrap();

    assert_eq!(next_line(&mut ws, "the feed wrote its line"), "written");
    let line = server.wait_for_log(" stderr: ");
    let peak = memory_kib(server.pid(), "VmHWM");
    let growth = peak.saturating_sub(before);
    eprintln!("resident memory: {before} KiB before, peak {peak} KiB after (+{growth} KiB)");
    assert!(
        growth < MEMORY_GROWTH_BOUND_KIB,
        "the server's peak resident memory grew by {growth} KiB"
    );
    // The first 4 KiB, then how much was cut, and nothing more.
    let kept = "x".repeat(4096);
    let cut = HUGE_LINE_BYTES - kept.len();
    assert!(
        line.ends_with(&format!(" stderr: {kept}… ({cut} more bytes)")),
        "the log should keep 4 KiB of the line and count the {cut} bytes cut: {}…",
        &line[..line.len().min(200)]
    );
    assert_eq!(get(server.binary.http, "/healthz").status, 200);
}
