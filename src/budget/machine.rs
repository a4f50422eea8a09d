//! How large the budget is when `--memory-limit` is not given (the machine's cgroup or
//! RAM), what the server uses besides it, and the allocator setting that makes freed
//! memory leave the process.

use std::fmt;

use super::{MIN_LIMIT, Size};
use crate::net::capacity;

/// Without `--memory-limit` and without a cgroup limit, the budget is this fraction
/// of the machine's RAM.
pub const RAM_FRACTION: (u64, u64) = (1, 4);

/// Under a cgroup memory limit (systemd's `MemoryMax=`), the budget is this fraction
/// of it: the rest is for threads, small buffers and the allocator's own overhead.
pub const CGROUP_FRACTION: (u64, u64) = (1, 2);

/// The budget when the machine's RAM cannot be read.
pub const FALLBACK_LIMIT: usize = 256 << 20;

/// Memory the server uses besides the budget, whatever clients do: the program, its
/// libraries and fixed buffers.
pub const BASE_OVERHEAD: usize = 24 << 20;

/// Memory one connection uses besides the budget: two threads' stacks as far as they
/// are touched, the socket buffers we keep (a 2 KiB read buffer, a write buffer of
/// 16 KiB plus one 32 KiB fragment, which keeps its largest size), the send queue's
/// slots, and the allocator's slack. An idle connection measures about 32 KiB.
pub const PER_CONNECTION_OVERHEAD: usize = 128 << 10;

/// Memory the server uses outside the budget with `connections` open: the server
/// stays within `--memory-limit` + this (README, "Capacity and memory").
pub const fn fixed_overhead(connections: usize) -> usize {
    BASE_OVERHEAD + connections * PER_CONNECTION_OVERHEAD
}

/// Where the budget's size came from, for the start-up log and `/metrics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `--memory-limit`.
    Flag,
    /// A fraction ([`CGROUP_FRACTION`]) of the cgroup's memory limit (bytes).
    Cgroup(u64),
    /// A fraction ([`RAM_FRACTION`]) of the machine's RAM (bytes).
    Ram(u64),
    /// Nothing could be read: [`FALLBACK_LIMIT`].
    Fallback,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Source::Flag => write!(f, "--memory-limit"),
            Source::Cgroup(max) => write!(
                f,
                "{}/{} of the cgroup's memory limit {} (MemoryMax=)",
                CGROUP_FRACTION.0,
                CGROUP_FRACTION.1,
                Size(max as usize)
            ),
            Source::Ram(ram) => write!(
                f,
                "{}/{} of the machine's {} of RAM",
                RAM_FRACTION.0,
                RAM_FRACTION.1,
                Size(ram as usize)
            ),
            Source::Fallback => write!(f, "a fallback: the machine's RAM is unknown"),
        }
    }
}

/// The budget's size when `--memory-limit` is not given: from the cgroup's memory
/// limit if there is one below the RAM, else from the RAM.
pub fn machine_limit() -> (usize, Source) {
    let ram = capacity::total_ram();
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let cgroup = capacity::cgroup_memory_max(&cgroups, |path| std::fs::read_to_string(path).ok())
        // cgroup v1 says "no limit" with a huge number.
        .filter(|max| ram.is_none_or(|ram| *max < ram));
    let bytes = |n: u64| usize::try_from(n).unwrap_or(usize::MAX).max(MIN_LIMIT);
    match (cgroup, ram) {
        (Some(max), _) => (
            bytes(max / CGROUP_FRACTION.1 * CGROUP_FRACTION.0),
            Source::Cgroup(max),
        ),
        (None, Some(ram)) => (
            bytes(ram / RAM_FRACTION.1 * RAM_FRACTION.0),
            Source::Ram(ram),
        ),
        (None, None) => (FALLBACK_LIMIT, Source::Fallback),
    }
}

/// Buffers at least this large get memory mappings of their own from the allocator.
pub const MMAP_THRESHOLD: usize = 256 * 1024;

/// Makes freed large buffers go back to the operating system at once (glibc only;
/// call it before any thread starts). By default glibc raises its threshold for
/// mapping a buffer on its own after each large free, up to 32 MiB; from then on
/// 1 MiB messages come from the heap, whose freed space the process keeps, and its
/// memory would stay at its peak long after the budget was given back. A fixed
/// threshold of [`MMAP_THRESHOLD`] keeps every large buffer in its own mapping.
/// (Not lower: mapping and unmapping every 64 KiB message cost a third of the
/// 64 KiB echo benchmark.)
pub fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning; it is called at start-up.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int);
    }
}
