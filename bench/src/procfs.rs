//! Readings from /proc: a process's RSS, thread count and CPU time, and the
//! machine's MemAvailable; and waiting for a server to give back the threads
//! and memory its connections took.

use std::fs;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, Default)]
pub struct ProcStatus {
    pub rss_kb: u64,
    pub threads: u64,
}

fn status_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l[name.len()..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// VmRSS and Threads from /proc/PID/status ("self" works as the pid).
pub fn proc_status(pid: &str) -> Option<ProcStatus> {
    if pid.is_empty() {
        return None;
    }
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(ProcStatus {
        rss_kb: status_field(&text, "VmRSS:")?,
        threads: status_field(&text, "Threads:")?,
    })
}

/// How long to wait for a server's threads to go back to the baseline.
const RETURN_TIMEOUT: Duration = Duration::from_secs(20);
const RETURN_POLL: Duration = Duration::from_millis(100);
/// Threads above the baseline (or, for a server whose thread count does not
/// grow with connections, above the count while holding) still counted as
/// "returned": runtime threads a language runtime keeps once started.
const THREAD_SLACK: u64 = 4;
/// Stop waiting when the thread count has not changed for this long.
const RETURN_STABLE: Duration = Duration::from_secs(3);
/// RSS counts as returned when it is within this share of the growth, or
/// within RSS_SLACK_KB of the baseline.
const RSS_RETURN_SHARE: f64 = 0.10;
const RSS_SLACK_KB: u64 = 8 * 1024;

/// After the connections are closed: wait (bounded) until the server's thread
/// count is back at `base_threads` (plus [`THREAD_SLACK`]); returns how many
/// seconds that took, `None` if it did not come back. A server whose thread
/// count did not grow with the connections (`held_threads`, the count while
/// they were open, within the slack of the baseline, or grown by fewer than
/// `min_growth` threads: an event loop, or Go's runtime, which starts a few OS
/// threads under load and keeps them) has nothing to give back; it counts as
/// back unless it grew further.
pub fn wait_threads_back(pid: &str, base_threads: u64, held_threads: u64, min_growth: u64) -> Result<Option<f64>, String> {
    let threads_grew = held_threads > base_threads + THREAD_SLACK.max(min_growth.saturating_sub(1));
    let t_ret = Instant::now();
    let (mut last_threads, mut last_change) = (u64::MAX, Instant::now());
    while t_ret.elapsed() < RETURN_TIMEOUT && last_change.elapsed() < RETURN_STABLE {
        let s = proc_status(pid).ok_or("server exited")?;
        let back = if threads_grew {
            s.threads <= base_threads + THREAD_SLACK
        } else {
            s.threads <= held_threads + THREAD_SLACK
        };
        if back {
            return Ok(Some(t_ret.elapsed().as_secs_f64()));
        }
        if s.threads != last_threads {
            (last_threads, last_change) = (s.threads, Instant::now());
        }
        std::thread::sleep(RETURN_POLL);
    }
    Ok(None)
}

/// Whether RSS came back after the connections closed: what is left above the
/// baseline is within [`RSS_RETURN_SHARE`] of the growth, or [`RSS_SLACK_KB`].
pub fn rss_back(base_kb: u64, held_kb: u64, after_kb: u64) -> bool {
    let growth = held_kb as i64 - base_kb as i64;
    let left = after_kb as i64 - base_kb as i64;
    left <= (RSS_RETURN_SHARE * growth.max(0) as f64) as i64 || left <= RSS_SLACK_KB as i64
}

/// utime + stime of a process (all its threads), in seconds.
pub fn proc_cpu_secs(pid: &str) -> Option<f64> {
    if pid.is_empty() {
        return None;
    }
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: skip past it.
    let after = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the ")" come field 3 (state) onward; utime is field 14, stime 15.
    const UTIME_AFTER_COMM: usize = 14 - 3;
    const STIME_AFTER_COMM: usize = 15 - 3;
    let utime: u64 = fields.get(UTIME_AFTER_COMM)?.parse().ok()?;
    let stime: u64 = fields.get(STIME_AFTER_COMM)?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks_per_sec())
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Machine-wide MemAvailable from /proc/meminfo, in KiB.
pub fn mem_available_kb() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    status_field(&text, "MemAvailable:")
}

/// Kernel memory that grows with connections and threads, machine-wide, in
/// KiB: thread kernel stacks, page tables, unreclaimable slab (socket and
/// task structures), and TCP buffer pages (/proc/net/sockstat). Much less
/// disturbed by other processes than MemAvailable, which moves with the page
/// cache.
pub fn kernel_conn_memory_kb() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    let fields = ["KernelStack:", "PageTables:", "SUnreclaim:"];
    let mut total = 0;
    for f in fields {
        total += status_field(&text, f)?;
    }
    Some(total + tcp_mem_kb().unwrap_or(0))
}

/// Pages of TCP buffer memory in use ("TCP: ... mem N"), in KiB.
fn tcp_mem_kb() -> Option<u64> {
    let text = fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = text.lines().find(|l| l.starts_with("TCP:"))?;
    let mut it = line.split_whitespace();
    while let Some(word) = it.next() {
        if word == "mem" {
            let pages: u64 = it.next()?.parse().ok()?;
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
            return Some(pages * page / 1024);
        }
    }
    None
}

/// Raise this process's soft open-file limit to its hard limit; returns the
/// new soft limit.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                return wanted.rlim_cur;
            }
        }
        lim.rlim_cur
    }
}
