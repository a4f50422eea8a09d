//! `GET /metrics`: the server's figures in the Prometheus text format (version 0.0.4),
//! for a scraper to collect. Guarded like `/stats`: the token when one is set, the Host
//! and Origin rules. No room names appear (they are secrets of their own: knowing a
//! room's name is enough to read it); rooms are counted.
//!
//! The format is plain text, one sample per line, each metric introduced by its
//! `# HELP` and `# TYPE` lines:
//!
//! ```text
//! # HELP threadcast_messages_in_total Messages received from clients and publishers.
//! # TYPE threadcast_messages_in_total counter
//! threadcast_messages_in_total 42
//! ```

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::endpoints::operator_figures;
use super::head::Head;
use super::reply::Reply;
use crate::budget::Category;
use crate::context::Shared;
use crate::hub::RoomStats;
use crate::latency::Histogram;

/// The content type Prometheus expects for its text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The text a scraper reads.
pub fn metrics(head: &Head, shared: &Shared) -> Reply {
    let rooms = match operator_figures(head, shared) {
        Ok((rooms, _)) => rooms,
        Err(refusal) => return refusal,
    };
    let mut out = Metrics::default();
    connections(&mut out, shared);
    room_figures(&mut out, &rooms);
    messages(&mut out, shared);
    memory(&mut out, shared);
    process(&mut out, shared);
    store(&mut out, shared);
    Reply::new(200, CONTENT_TYPE, out.text.into_bytes()).no_store()
}

/// Open connections by transport, the limit, requests in progress.
fn connections(out: &mut Metrics, shared: &Shared) {
    let counters = &shared.counters;
    let (sse, polls) = (counters.sse_streams.get(), counters.polls_waiting.get());
    let open = shared.limit.open() as u64;
    out.gauge_by(
        "threadcast_connections",
        "Open long-lived connections, by transport.",
        "transport",
        &[
            ("websocket", open.saturating_sub(sse + polls)),
            ("sse", sse),
            ("poll", polls),
        ],
    );
    out.gauge(
        "threadcast_connections_limit",
        "--max-connections after the start-up check.",
        shared.limit.max() as u64,
    );
    out.gauge(
        "threadcast_requests_in_progress",
        "Requests whose head, body or answer is under way.",
        shared.in_progress.len() as u64,
    );
}

/// Rooms, their members and their histories (counted, never named).
fn room_figures(out: &mut Metrics, rooms: &[RoomStats]) {
    out.gauge(
        "threadcast_rooms",
        "Rooms in memory (with members or history).",
        rooms.len() as u64,
    );
    out.gauge(
        "threadcast_room_members",
        "Members of all rooms together.",
        rooms.iter().map(|r| r.members as u64).sum(),
    );
    out.gauge(
        "threadcast_history_messages",
        "Messages kept in all rooms' histories.",
        rooms.iter().map(|r| r.history_messages as u64).sum(),
    );
    out.gauge(
        "threadcast_history_bytes",
        "Bytes kept in all rooms' histories.",
        rooms.iter().map(|r| r.history_bytes as u64).sum(),
    );
}

/// Messages in and out, closes and refusals by reason, delivery latency.
fn messages(out: &mut Metrics, shared: &Shared) {
    let counters = &shared.counters;
    out.counter(
        "threadcast_messages_in_total",
        "Messages received from clients and publishers.",
        counters.messages_in.load(Ordering::Relaxed),
    );
    out.counter(
        "threadcast_messages_out_total",
        "Messages written to clients.",
        counters.messages_out.load(Ordering::Relaxed),
    );
    out.counter_by(
        "threadcast_closes_total",
        "Connections the server closed, by reason.",
        "reason",
        &[
            (
                "slow_consumer",
                counters.slow_consumers.load(Ordering::Relaxed),
            ),
            (
                "rate_limited",
                counters.rate_limited.load(Ordering::Relaxed),
            ),
        ],
    );
    out.counter_by(
        "threadcast_refusals_total",
        "Connections or requests refused or cut off before being served, by reason.",
        "reason",
        &[
            ("per_address_limit", shared.per_ip.refused()),
            ("requests_in_progress_full", shared.in_progress.evicted()),
            ("memory_budget", shared.budget.refused()),
        ],
    );
    out.histogram(
        "threadcast_delivery_latency_seconds",
        "From a publish being accepted to its frame written to a WebSocket member (live messages).",
        &counters.delivery_latency,
    );
}

/// The memory budget, what each category uses, the send queues, trimmed history.
fn memory(out: &mut Metrics, shared: &Shared) {
    let counters = &shared.counters;
    let budget = &shared.budget;
    out.gauge(
        "threadcast_memory_budget_bytes",
        "The memory budget (--memory-limit, or derived from the machine).",
        budget.limit() as u64,
    );
    let used: Vec<(&str, u64)> = Category::ALL
        .iter()
        .map(|c| (c.name(), budget.used_by(*c) as u64))
        .collect();
    out.gauge_by(
        "threadcast_memory_used_bytes",
        "Bytes charged to the memory budget, by category.",
        "category",
        &used,
    );
    out.gauge(
        "threadcast_queued_bytes",
        "Bytes waiting in every connection's send queue (a message queued to n connections counts n times).",
        counters.queued_bytes.load(Ordering::Relaxed) as u64,
    );
    out.counter(
        "threadcast_history_trimmed_total",
        "Messages trimmed from room histories because the memory budget ran high.",
        counters.history_trimmed.load(Ordering::Relaxed),
    );
}

/// Threads, resident memory, uptime.
fn process(out: &mut Metrics, shared: &Shared) {
    if let Some(status) = process_status() {
        out.gauge(
            "threadcast_threads",
            "Threads of the process.",
            status.threads,
        );
        out.gauge(
            "threadcast_spare_threads",
            "Threads whose connection ended, waiting to serve the next one.",
            crate::net::spare_threads::waiting() as u64,
        );
        out.gauge(
            "process_resident_memory_bytes",
            "Resident memory of the process.",
            status.rss_bytes,
        );
    }
    out.gauge(
        "threadcast_uptime_seconds",
        "Seconds since the server started.",
        shared.started.elapsed().as_secs(),
    );
}

/// The store of room histories (`--data-dir`), when there is one.
fn store(out: &mut Metrics, shared: &Shared) {
    let Some(store) = &shared.store else {
        return;
    };
    let read = |figure: &std::sync::atomic::AtomicU64| figure.load(Ordering::Relaxed);
    out.gauge(
        "threadcast_store_bytes",
        "Size of the store's file.",
        read(&store.file_bytes),
    );
    out.counter(
        "threadcast_store_commits_total",
        "Transactions written to the store.",
        read(&store.commits),
    );
    out.counter(
        "threadcast_store_fsyncs_total",
        "Commits that forced the disk.",
        read(&store.fsyncs),
    );
    out.counter(
        "threadcast_store_commit_microseconds_total",
        "Time spent committing, in microseconds.",
        read(&store.commit_micros),
    );
    out.counter(
        "threadcast_store_failures_total",
        "Commits that failed; their messages were refused.",
        read(&store.failures),
    );
}

/// The text being built.
#[derive(Default)]
struct Metrics {
    text: String,
}

impl Metrics {
    fn family(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, help, "gauge");
        let _ = writeln!(self.text, "{name} {value}");
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, help, "counter");
        let _ = writeln!(self.text, "{name} {value}");
    }

    fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.family(name, help, "histogram");
        for (bound, count) in histogram.cumulative() {
            let le = bound.map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            let _ = writeln!(self.text, "{name}_bucket{{le=\"{le}\"}} {count}");
        }
        let _ = writeln!(self.text, "{name}_sum {}", histogram.sum_seconds());
        let _ = writeln!(self.text, "{name}_count {}", histogram.count());
    }

    fn labelled(&mut self, name: &str, label: &str, samples: &[(&str, u64)]) {
        for (value_of_label, value) in samples {
            let _ = writeln!(self.text, "{name}{{{label}=\"{value_of_label}\"}} {value}");
        }
    }

    fn gauge_by(&mut self, name: &str, help: &str, label: &str, samples: &[(&str, u64)]) {
        self.family(name, help, "gauge");
        self.labelled(name, label, samples);
    }

    fn counter_by(&mut self, name: &str, help: &str, label: &str, samples: &[(&str, u64)]) {
        self.family(name, help, "counter");
        self.labelled(name, label, samples);
    }
}

/// Threads and resident memory, from `/proc/self/status`.
struct ProcessStatus {
    threads: u64,
    rss_bytes: u64,
}

fn process_status() -> Option<ProcessStatus> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some(ProcessStatus {
        threads: field("Threads:")?,
        rss_bytes: field("VmRSS:")? * 1024,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_has_help_type_and_samples() {
        let mut m = Metrics::default();
        m.counter("a_total", "As.", 3);
        m.gauge_by("b", "Bs.", "kind", &[("x", 1), ("y", 2)]);
        assert_eq!(
            m.text,
            "# HELP a_total As.\n# TYPE a_total counter\na_total 3\n\
             # HELP b Bs.\n# TYPE b gauge\nb{kind=\"x\"} 1\nb{kind=\"y\"} 2\n"
        );
    }

    #[test]
    fn this_process_reports_threads_and_memory() {
        let status = process_status().unwrap();
        assert!(status.threads >= 1 && status.rss_bytes > 0);
    }
}
