//! The memory budget seen from outside (`--memory-limit`): `/metrics` shows it by
//! category; members that fall behind in bytes are slow consumers; a budget running
//! high trims the oldest history (and resuming clients are told of the gap); and a
//! budget that is used up refuses new work with 503 or 1013 while the server keeps
//! answering everyone else. The RSS of the whole process under attack is measured in
//! `tests/memory.rs`; these run in-process on small budgets.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use threadcast::Category;
use threadcast::ServerHandle;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

/// A budget small enough to reach in a test.
const LIMIT: usize = 16 << 20;

fn server(change: impl FnOnce(&mut threadcast::Config)) -> ServerHandle {
    start_with(|c| {
        c.memory_limit = Some(LIMIT);
        c.demo_feed = false;
        change(c);
    })
}

/// The value of the sample `name` (with its labels, if any) in `/metrics`.
fn metric(server: &ServerHandle, name: &str) -> u64 {
    let text = get(server.http_addr(), "/metrics").text();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

fn post(server: &ServerHandle, target: &str, body: &[u8]) -> HttpResponse {
    http(server.http_addr(), "POST", target, &[], body)
}

#[test]
fn metrics_show_the_budget_and_what_each_category_uses() {
    let server = server(|_| {});
    assert_eq!(
        metric(&server, "threadcast_memory_budget_bytes"),
        LIMIT as u64
    );
    let body = vec![b'x'; 100 * 1024];
    assert_eq!(post(&server, "/publish/kept", &body).status, 202);
    let messages = metric(
        &server,
        "threadcast_memory_used_bytes{category=\"messages\"}",
    );
    assert!(
        (100 * 1024..200 * 1024).contains(&messages),
        "one 100 KiB message in history: {messages}"
    );
    assert_eq!(
        metric(
            &server,
            "threadcast_memory_used_bytes{category=\"reading\"}"
        ),
        0
    );
    assert_eq!(
        metric(&server, "threadcast_memory_used_bytes{category=\"replay\"}"),
        0
    );
    assert_eq!(server.budget().used_by(Category::Messages) as u64, messages);
    assert_eq!(metric(&server, "threadcast_queued_bytes"), 0);
}

#[test]
fn a_member_behind_by_more_than_its_queue_bytes_is_closed_as_a_slow_consumer() {
    // Many items fit, few bytes: the byte bound is the one that trips.
    let server = server(|c| {
        c.send_queue = 10_000;
        c.send_queue_bytes = Some(256 * 1024);
    });
    let mut member = raw_connect(server.ws_addr(), "/ws/behind?raw=1");
    wait_for_members(&server, "behind", 1);
    let payload = vec![7u8; 64 * 1024];
    // The socket's buffers take a few MiB first; then the queue fills in bytes.
    let mut published = 0;
    while server.publish("behind", payload.clone()).unwrap() == 1 {
        published += 1;
        assert!(
            published < 2_000,
            "never dropped: the byte bound does not hold"
        );
    }
    member.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    let close = loop {
        let frame = read_non_ping(&mut member).expect("a close frame");
        if frame.opcode == op::CLOSE {
            break frame;
        }
    };
    assert_eq!(close.close_code(), Some(1008));
    assert!(String::from_utf8_lossy(&close.payload[2..]).contains("slow consumer"));
    assert!(metric(&server, "threadcast_closes_total{reason=\"slow_consumer\"}") >= 1);
    wait_until("the queue's bytes are given back", || {
        metric(&server, "threadcast_queued_bytes") == 0
    });
}

#[test]
fn an_echo_client_that_does_not_read_is_a_slow_consumer_in_bytes() {
    let server = server(|c| {
        c.send_queue = 10_000;
        c.send_queue_bytes = Some(128 * 1024);
    });
    let mut client = raw_connect(server.ws_addr(), "/echo");
    client
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let message = frame(true, op::BINARY, &vec![1u8; 32 * 1024]);
    // Send without reading until the server stops taking them (it has closed).
    for _ in 0..1_000 {
        if client.write_all(&message).is_err() {
            break;
        }
    }
    client.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    let close = loop {
        let frame = read_non_ping(&mut client).expect("a close frame");
        if frame.opcode == op::CLOSE {
            break frame;
        }
    };
    assert_eq!(close.close_code(), Some(1008));
    let mut ws = connect(&server, "/echo");
    ws.send(Message::text("still here")).unwrap();
    assert_eq!(next_data(&mut ws), Message::text("still here"));
}

#[test]
fn a_budget_running_high_trims_the_oldest_history_first_and_resumers_see_the_gap() {
    // Each room may keep all 16 of its messages (4 MiB and their envelopes), eight
    // rooms twice the budget: the budget must win.
    let server = server(|c| c.history_bytes = Some(5 << 20));
    let payload = vec![b'h'; 256 * 1024];
    for room in ["a", "b", "c", "d", "e", "f", "g", "h"] {
        for _ in 0..16 {
            let answer = post(&server, &format!("/publish/{room}"), &payload);
            assert_eq!(answer.status, 202, "{}", answer.text());
        }
        assert!(server.budget().used() <= LIMIT);
    }
    assert!(metric(&server, "threadcast_history_trimmed_total") > 0);
    assert!(metric(&server, "threadcast_history_bytes") <= LIMIT as u64);
    // The oldest room lost its beginning: a client resuming from the start is told.
    let oldest = get(server.http_addr(), "/poll/a?since=0").text();
    assert!(oldest.contains("\"gap\":{\"from\":1,"), "{oldest}");
    // The newest room is whole.
    let newest = get(server.http_addr(), "/poll/h?since=0").text();
    assert!(
        !newest.contains("\"gap\""),
        "{}",
        &newest[..newest.len().min(200)]
    );
    assert_eq!(newest.matches("\"type\":\"message\"").count(), 16);
}

#[test]
fn a_used_up_budget_refuses_new_work_and_keeps_serving_the_rest() {
    let server = server(|_| {});
    let addr = server.http_addr();
    let mut publisher = connect(&server, "/ws/full");
    // Memory the server cannot free (as if every byte were queued to members that keep
    // up): the budget is used up.
    let held = server.budget().force(Category::Messages, LIMIT);

    let (_, status, head) = raw_request(addr, upgrade_request("/ws/full", ""));
    assert_eq!(status, 503, "a new WebSocket: {head}");
    assert_eq!(get(addr, "/poll/full").status, 503, "a new long poll");
    let publish = post(&server, "/publish/full", b"no room for me");
    assert_eq!(publish.status, 503, "{}", publish.text());
    assert!(publish.text().contains("memory budget"));
    // A connected publisher whose message cannot be taken: 1013, try again later.
    publisher.send(Message::text("no room")).unwrap();
    let (code, reason) = expect_close(&mut publisher);
    assert_eq!(code, CloseCode::Again, "{reason}");
    assert!(
        metric(
            &server,
            "threadcast_refusals_total{reason=\"memory_budget\"}"
        ) >= 4
    );
    // Everyone else is still served: the page, health, and the figures.
    assert_eq!(get(addr, "/healthz").status, 200);
    assert_eq!(get(addr, "/").status, 200);

    drop(held);
    let mut ws = connect(&server, "/ws/full");
    let welcome = next_data(&mut ws);
    assert!(welcome.to_text().unwrap().contains("welcome"));
    assert_eq!(post(&server, "/publish/full", b"room again").status, 202);
}

#[test]
fn when_the_budget_runs_high_members_far_behind_are_closed_first() {
    // Each member's own share is larger than the budget: only the budget can stop
    // them, once they hold more than half of it (10 MiB) and the budget runs high.
    let server = server(|c| {
        c.send_queue = 10_000;
        c.send_queue_bytes = Some(20 << 20);
    });
    let mut members: Vec<_> = (0..3)
        .map(|_| raw_connect(server.ws_addr(), "/ws/crowded?raw=1"))
        .collect();
    wait_for_members(&server, "crowded", 3);
    let payload = vec![3u8; 1 << 20];
    let mut published = 0;
    while server
        .publish("crowded", payload.clone())
        .is_ok_and(|to| to > 0)
    {
        published += 1;
        assert!(server.budget().used() <= LIMIT);
        assert!(published < 200, "members that never read were never closed");
    }
    for member in &mut members {
        member.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
        let close = loop {
            let frame = read_non_ping(member).expect("a close frame");
            if frame.opcode == op::CLOSE {
                break frame;
            }
        };
        assert_eq!(close.close_code(), Some(1008));
    }
    assert!(metric(&server, "threadcast_closes_total{reason=\"slow_consumer\"}") >= 3);
    wait_until("the memory of their queues is given back", || {
        server.budget().used() < LIMIT / 4
    });
}
