//! How many connections this machine lets a thread-per-connection server hold.
//!
//! Each WebSocket connection costs two threads and one file descriptor, and every
//! thread costs four memory mappings (its stack, the stack's guard page, and the
//! signal stack Rust gives each thread, with its guard). Four kernel limits therefore
//! cap the connections, whichever is lowest:
//!
//! | limit | where | per connection |
//! |---|---|---|
//! | open files | `ulimit -n` (`RLIMIT_NOFILE`) | 1 descriptor |
//! | memory mappings | `vm.max_map_count` | 8 mappings (2 threads × 4) |
//! | thread ids | `kernel.pid_max`, `kernel.threads-max` | 2 threads |
//! | threads per user | `ulimit -u` (`RLIMIT_NPROC`) | 2 threads |
//! | tasks of the service | the cgroup's `pids.max` (systemd's `TasksMax=`) | 2 threads |
//!
//! Besides its connections the process keeps room for everything else that takes a
//! thread: up to `MAX_REQUESTS_IN_PROGRESS` requests whose heads, bodies or answers
//! are under way (each with up to three threads: its own, a file answer's, and
//! tiny_http's), finished threads waiting for the next connection (`spare_threads`),
//! the hub, the accept loops, feeds and libraries ([`RESERVED_THREADS`]).
//!
//! Running out of descriptors is harmless (`accept` fails, we back off), but running
//! out of mappings makes the next thread's start-up abort the whole process inside the
//! standard library. So at start-up [`fit_max_connections`] lowers
//! `--max-connections` to what the limits allow, and says which limit to raise.

use std::fs;
use std::path::{Path, PathBuf};

use crate::net::requests::MAX_REQUESTS_IN_PROGRESS;
use crate::net::spare_threads::MAX_SPARE_THREADS_IN_ALL;

/// Threads a request in progress may take: its own, the file answer's thread, and
/// tiny_http's thread for the internal connection.
pub const THREADS_PER_REQUEST: u64 = 3;
/// Threads the process needs besides its connections: every request in progress at
/// its worst, the spare threads waiting for the next connection, plus the hub, accept
/// loops, file dispatcher, feeds, Redis, libraries.
pub const RESERVED_THREADS: u64 =
    MAX_REQUESTS_IN_PROGRESS as u64 * THREADS_PER_REQUEST + MAX_SPARE_THREADS_IN_ALL as u64 + 64;
/// Descriptors besides the connections': each request in progress holds its socket
/// and, for a file, both ends of the internal Unix socket; plus listeners and files.
pub const RESERVED_FILES: u64 = MAX_REQUESTS_IN_PROGRESS as u64 * 3 + 64;
/// Mappings besides the connections' threads: the reserved threads' and the
/// libraries', heap arenas and the binary's own.
pub const RESERVED_MAPS: u64 = RESERVED_THREADS * 4 + 1024;
/// Memory mappings per connection: two threads, four mappings each.
pub const MAPS_PER_CONNECTION: u64 = 8;
/// Threads per connection: a reader and a writer.
pub const THREADS_PER_CONNECTION: u64 = 2;

/// Raises the soft limit on open files to the hard limit, as Go's runtime does: the
/// soft default (often 1024) only protects old programs that use `select()`.
/// Returns the new soft limit.
pub fn raise_fd_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Some(limit.rlim_cur)
}

/// The most connections each limit allows, with the setting a user would raise.
pub fn ceilings() -> Vec<(u64, &'static str)> {
    let mut found = Vec::new();
    let by_threads =
        |threads: u64| threads.saturating_sub(RESERVED_THREADS) / THREADS_PER_CONNECTION;
    if let Some(files) = rlimit(libc::RLIMIT_NOFILE) {
        found.push((
            files.saturating_sub(RESERVED_FILES),
            "open files: ulimit -n / LimitNOFILE=",
        ));
    }
    if let Some(maps) = read_number("/proc/sys/vm/max_map_count") {
        found.push((
            maps.saturating_sub(RESERVED_MAPS) / MAPS_PER_CONNECTION,
            "sysctl vm.max_map_count",
        ));
    }
    if let Some(pids) = read_number("/proc/sys/kernel/pid_max") {
        found.push((by_threads(pids), "sysctl kernel.pid_max"));
    }
    if let Some(threads) = read_number("/proc/sys/kernel/threads-max") {
        found.push((by_threads(threads), "sysctl kernel.threads-max"));
    }
    if let Some(tasks) = rlimit(libc::RLIMIT_NPROC) {
        found.push((by_threads(tasks), "ulimit -u"));
    }
    let cgroups = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    if let Some(tasks) = cgroup_pids_max(&cgroups, |path| fs::read_to_string(path).ok()) {
        found.push((
            by_threads(tasks),
            "the cgroup's pids.max: TasksMax= in the unit",
        ));
    }
    found
}

/// `wanted` lowered to what the machine allows, with a warning naming the limit.
pub fn fit_max_connections(wanted: usize) -> usize {
    let Some((ceiling, limit)) = ceilings().into_iter().min_by_key(|(n, _)| *n) else {
        return wanted;
    };
    let ceiling = usize::try_from(ceiling).unwrap_or(usize::MAX).max(1);
    if wanted > ceiling {
        log::warn!(
            "--max-connections {wanted} lowered to {ceiling}: {limit} allows no more \
             (each connection takes 2 threads, 8 memory mappings and 1 file, and {RESERVED_THREADS} \
             threads are kept for requests in progress and the rest; see README, Capacity and memory)"
        );
        return ceiling;
    }
    wanted
}

fn rlimit(resource: libc::__rlimit_resource_t) -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    let ok = unsafe { libc::getrlimit(resource, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// The lowest `pids.max` on the way from this process's cgroup up to the root (a
/// parent's limit binds its children too), in cgroup v2 or v1's `pids` tree; `None`
/// when no level sets one. `read` reads a file (a parameter so tests can fake the tree).
pub fn cgroup_pids_max(
    proc_self_cgroup: &str,
    read: impl Fn(&Path) -> Option<String>,
) -> Option<u64> {
    cgroup_limit(proc_self_cgroup, ("pids", "pids.max", "pids.max"), read)
}

/// The lowest memory limit on the way from this process's cgroup up to the root:
/// `memory.max` in cgroup v2 (systemd's `MemoryMax=`), `memory.limit_in_bytes` in v1's
/// `memory` tree (whose "no limit" is a huge number the caller compares with the RAM).
pub fn cgroup_memory_max(
    proc_self_cgroup: &str,
    read: impl Fn(&Path) -> Option<String>,
) -> Option<u64> {
    let files = ("memory", "memory.max", "memory.limit_in_bytes");
    cgroup_limit(proc_self_cgroup, files, read)
}

/// The lowest number in a cgroup limit file on the way up to the root. `files` names
/// the v1 controller, the v2 file and the v1 file; "max" (no limit) is skipped.
fn cgroup_limit(
    proc_self_cgroup: &str,
    (controller, v2_file, v1_file): (&str, &str, &str),
    read: impl Fn(&Path) -> Option<String>,
) -> Option<u64> {
    let mut lowest: Option<u64> = None;
    for line in proc_self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next(), fields.next()?, fields.next()?);
        let (root, file) = match controllers {
            "" => (PathBuf::from("/sys/fs/cgroup"), v2_file), // v2: one unified tree
            c if c.split(',').any(|c| c == controller) => {
                (PathBuf::from("/sys/fs/cgroup").join(controller), v1_file)
            }
            _ => continue,
        };
        let mut dir = root.join(path.trim_start_matches('/'));
        loop {
            let limit = read(&dir.join(file)).and_then(|v| v.trim().parse::<u64>().ok());
            if let Some(limit) = limit {
                lowest = Some(lowest.map_or(limit, |l| l.min(limit)));
            }
            if dir == root || !dir.pop() {
                break;
            }
        }
    }
    lowest
}

/// Total RAM of the machine in bytes (`MemTotal` in `/proc/meminfo`).
pub fn total_ram() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn read_number(path: &str) -> Option<u64> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_reports_its_limits() {
        let found = ceilings();
        assert!(
            found.iter().any(|(_, name)| name.contains("max_map_count")),
            "{found:?}"
        );
        assert!(found.iter().all(|(n, _)| *n > 0), "{found:?}");
    }

    #[test]
    fn the_cgroups_tasks_limit_is_the_lowest_on_the_way_to_the_root() {
        let tree = |path: &Path| match path.to_str()? {
            "/sys/fs/cgroup/system.slice/threadcast.service/pids.max" => Some("4915\n".into()),
            "/sys/fs/cgroup/system.slice/pids.max" => Some("max\n".into()),
            "/sys/fs/cgroup/pids/user.slice/pids.max" => Some("700\n".into()),
            _ => None,
        };
        let v2 = "0::/system.slice/threadcast.service\n";
        assert_eq!(cgroup_pids_max(v2, tree), Some(4915));
        let v1 = "8:pids:/user.slice/session-1.scope\n4:memory:/x\n";
        assert_eq!(
            cgroup_pids_max(v1, tree),
            Some(700),
            "a parent's limit binds"
        );
        assert_eq!(cgroup_pids_max("0::/\n", tree), None, "no limit anywhere");
        assert_eq!(cgroup_pids_max("garbage", tree), None);
    }

    #[test]
    fn the_cgroups_memory_limit_is_read_from_either_version() {
        let tree = |path: &Path| match path.to_str()? {
            "/sys/fs/cgroup/system.slice/threadcast.service/memory.max" => {
                Some("1073741824\n".into())
            }
            "/sys/fs/cgroup/system.slice/memory.max" => Some("max\n".into()),
            "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes" => Some("268435456\n".into()),
            _ => None,
        };
        let v2 = "0::/system.slice/threadcast.service\n";
        assert_eq!(cgroup_memory_max(v2, tree), Some(1 << 30));
        let v1 = "8:pids:/docker/abc\n4:memory:/docker/abc\n";
        assert_eq!(cgroup_memory_max(v1, tree), Some(256 << 20));
        assert_eq!(cgroup_memory_max("0::/\n", tree), None);
        assert!(total_ram().is_some_and(|ram| ram > 0));
    }

    #[test]
    fn a_modest_request_is_left_alone_and_an_absurd_one_is_lowered() {
        assert_eq!(fit_max_connections(10), 10);
        assert!(fit_max_connections(usize::MAX / 2) < usize::MAX / 2);
    }
}
