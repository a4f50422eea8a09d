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
//!
//! Running out of descriptors is harmless (`accept` fails, we back off), but running
//! out of mappings makes the next thread's start-up abort the whole process inside the
//! standard library. So at start-up [`fit_max_connections`] lowers
//! `--max-connections` to what the limits allow, and says which limit to raise.

use std::fs;

/// Descriptors, mappings and threads the process needs besides its connections
/// (listeners, requests in progress, file answers, the hub, feeds, libraries).
pub const RESERVED: u64 = 1024;
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
    if let Some(files) = rlimit(libc::RLIMIT_NOFILE) {
        found.push((
            files.saturating_sub(RESERVED),
            "open files: ulimit -n / LimitNOFILE=",
        ));
    }
    if let Some(maps) = read_number("/proc/sys/vm/max_map_count") {
        found.push((
            maps.saturating_sub(RESERVED) / MAPS_PER_CONNECTION,
            "sysctl vm.max_map_count",
        ));
    }
    if let Some(pids) = read_number("/proc/sys/kernel/pid_max") {
        found.push((
            pids.saturating_sub(RESERVED) / THREADS_PER_CONNECTION,
            "sysctl kernel.pid_max",
        ));
    }
    if let Some(threads) = read_number("/proc/sys/kernel/threads-max") {
        found.push((
            threads.saturating_sub(RESERVED) / THREADS_PER_CONNECTION,
            "sysctl kernel.threads-max",
        ));
    }
    if let Some(tasks) = rlimit(libc::RLIMIT_NPROC) {
        found.push((
            tasks.saturating_sub(RESERVED) / THREADS_PER_CONNECTION,
            "ulimit -u / TasksMax=",
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
             (each connection takes 2 threads, 8 memory mappings and 1 file; see README, Capacity)"
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
    fn a_modest_request_is_left_alone_and_an_absurd_one_is_lowered() {
        assert_eq!(fit_max_connections(10), 10);
        assert!(fit_max_connections(usize::MAX / 2) < usize::MAX / 2);
    }
}
