//! Threads and file descriptors come back after connections go. This file holds a
//! single test because it counts the threads of the whole test process.

mod common;

use std::time::Instant;

use common::*;
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
}
