//! Threads and file descriptors come back after connections go, and finished threads
//! kept for the next connection (spare threads) stay bounded and leave on their own.
//! This file holds a single test because it counts the threads of the whole test
//! process.

mod common;

use std::time::Instant;

use common::*;
use threadcast::ServerHandle;
use tungstenite::Message;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn after_500_connect_disconnect_cycles_threads_and_fds_return_to_baseline() {
    let server = start();
    // Warm up once so lazily started threads (tiny_http's pool) exist in the baseline.
    let _ = get(server.http_addr(), "/healthz");
    let (threads_before, fds_before) = (thread_count(), open_fds());

    for i in 0..500 {
        let path = if i % 2 == 0 { "/echo" } else { "/ws/churn" };
        let mut ws = connect(&server, path);
        ws.send(Message::text("hi")).unwrap();
        let _ = next_data(&mut ws);
        if i % 3 == 0 {
            drop(ws); // vanish without a close frame
        } else {
            ws.close(None).unwrap();
            while ws.read().is_ok() {}
        }
    }
    // Connections finish on their own threads; wait (bounded) for the last ones.
    let deadline = Instant::now() + TEST_TIMEOUT;
    while server.connections() > 0 || thread_count() > threads_before {
        assert!(
            Instant::now() < deadline,
            "{} connections, {} threads (baseline {threads_before})",
            server.connections(),
            thread_count()
        );
        std::thread::yield_now();
    }
    assert!(
        open_fds() <= fds_before,
        "fds {} > baseline {fds_before}",
        open_fds()
    );
    a_burst_leaves_a_bounded_number_of_spare_threads(&server, threads_before);
}

/// 200 connections at once (400 threads; the per-address limit is 256), all gone together: the spare threads that
/// wait for the next connection never number more than the bound, the next
/// connections are served by them, and after the linger they are gone too.
fn a_burst_leaves_a_bounded_number_of_spare_threads(server: &ServerHandle, baseline: usize) {
    use threadcast::internals::spare_threads::{MAX_SPARE_THREADS_IN_ALL, WRITER_NICE, waiting};
    let burst: Vec<_> = (0..200).map(|_| connect(server, "/echo")).collect();
    wait_until("the burst is connected", || server.connections() == 200);
    // Writers run a little below everyone else, so the hub can hand a message out
    // before the writers it woke take the CPU; readers keep the normal priority.
    let nice_of = |prefix: &str| -> Vec<i32> {
        threads_named(prefix)
            .into_iter()
            .map(|(_, nice)| nice)
            .collect()
    };
    let writers = nice_of("ws-write-");
    assert!(writers.len() >= 200, "{} writers", writers.len());
    assert!(writers.iter().all(|&n| n == WRITER_NICE), "{writers:?}");
    assert!(nice_of("conn").iter().all(|&n| n == 0));
    drop(burst);
    let mut most = 0;
    let deadline = Instant::now() + TEST_TIMEOUT;
    while server.connections() > 0 || thread_count() > baseline + MAX_SPARE_THREADS_IN_ALL {
        most = most.max(waiting());
        assert!(Instant::now() < deadline, "{} threads", thread_count());
        std::thread::yield_now();
    }
    most = most.max(waiting());
    // Readers and writers each have their own spares.
    assert!(most <= MAX_SPARE_THREADS_IN_ALL, "{most} spare threads");
    assert!(most > 0, "no thread stayed for the next connection");
    // The next connection runs on spare threads: no new thread is started for it.
    let spares = thread_count();
    let mut ws = connect(server, "/echo");
    ws.send(Message::text("again")).unwrap();
    assert_eq!(next_data(&mut ws), Message::text("again"));
    assert!(thread_count() <= spares, "a new thread was started");
    drop(ws);
    wait_until("the spare threads leave", || thread_count() <= baseline);
}

/// This process's threads whose name starts with `prefix`: name and nice value.
fn threads_named(prefix: &str) -> Vec<(String, i32)> {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc");
    tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("stat")).ok())
        .filter_map(|stat| {
            // "tid (name) state ..." — the name may hold spaces; nice is field 19.
            let (head, rest) = stat.rsplit_once(')')?;
            let name = head.split_once('(')?.1.to_owned();
            let nice = rest.split_whitespace().nth(16)?.parse().ok()?;
            name.starts_with(prefix).then_some((name, nice))
        })
        .collect()
}
