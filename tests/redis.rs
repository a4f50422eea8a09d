//! Several instances sharing rooms through a real `redis-server` (`--features redis`):
//! delivery across instances, resume on another instance, de-duplication, and a
//! Redis that dies and comes back. Each test starts its own Redis on an ephemeral
//! loopback port and its own threadcast instances.
#![cfg(feature = "redis")]

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;

use common::frames::{Frame, epoch_of, field, join_addr, next_frame};
use common::redis::{Redis, wait_degraded, wait_linked};
use common::*;
use threadcast::ServerHandle;
use tungstenite::{Message, WebSocket};

/// An instance linked to the Redis at `url` (it connects in the background).
fn instance(url: &str, change: impl FnOnce(&mut threadcast::Config)) -> ServerHandle {
    start_with(|c| {
        c.redis_url = Some(url.to_string());
        c.demo_feed = false;
        change(c);
    })
}

/// A figure of the `"redis"` object in `/stats`.
fn redis_stat(server: &ServerHandle, key: &str) -> String {
    let stats = get(server.http_addr(), "/stats").text();
    let redis = &stats[stats.find("\"redis\":").expect("redis in /stats")..];
    field(redis, key)
}

fn publish(server: &ServerHandle, room: &str, body: &str) -> String {
    let response = http(
        server.http_addr(),
        "POST",
        &format!("/publish/{room}"),
        &[],
        body.as_bytes(),
    );
    assert!(
        [200, 202].contains(&response.status),
        "{} {}",
        response.status,
        response.text()
    );
    response.text()
}

/// The next room message's id and text, skipping notices.
fn next_message(ws: &mut WebSocket<TcpStream>) -> (u64, String) {
    loop {
        match next_frame(ws) {
            Frame::Message { id, payload, .. } => {
                return (id, String::from_utf8(payload).unwrap());
            }
            Frame::Ack { .. } | Frame::Welcome { .. } => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn join_ws(addr: SocketAddr, room: &str, query: &str) -> (WebSocket<TcpStream>, String) {
    let (ws, welcome) = join_addr(addr, room, query);
    let epoch = epoch_of(&welcome);
    (ws, epoch)
}

#[test]
fn a_message_sent_on_one_instance_reaches_every_instance_once_with_one_id() {
    let redis = Redis::start();
    let (a, b, c) = (
        instance(&redis.url(), |_| {}),
        instance(&redis.url(), |_| {}),
        instance(&redis.url(), |_| {}),
    );
    wait_linked(&[&a, &b, &c]);
    let (mut on_a, epoch_a) = join_ws(a.ws_addr(), "hall", "");
    let (mut on_b, epoch_b) = join_ws(b.ws_addr(), "hall", "");
    let (mut on_c, epoch_c) = join_ws(c.ws_addr(), "hall", "");
    assert_eq!(
        (&epoch_a, &epoch_a),
        (&epoch_b, &epoch_c),
        "one epoch everywhere"
    );

    on_b.send(Message::text("cid:m-1\nhello from b")).unwrap();
    for ws in [&mut on_a, &mut on_b, &mut on_c] {
        assert_eq!(next_message(ws), (1, "hello from b".to_string()));
    }
    assert!(publish(&c, "hall", "from c's /publish").contains("\"id\":2"));
    for ws in [&mut on_a, &mut on_b, &mut on_c] {
        assert_eq!(next_message(ws), (2, "from c's /publish".to_string()));
    }
    // A resend of m-1 through another instance is recognised there too.
    on_a.send(Message::text("cid:m-1\nhello from b")).unwrap();
    match next_frame(&mut on_a) {
        Frame::Ack { cid, id, duplicate } => {
            assert_eq!((cid.as_str(), id, duplicate), ("m-1", 1, true));
        }
        other => panic!("expected the duplicate's ack, got {other:?}"),
    }
    // Nothing else was delivered in between: the next message everyone sees is 3.
    assert!(publish(&a, "hall", "marker").contains("\"id\":3"));
    for ws in [&mut on_a, &mut on_b, &mut on_c] {
        assert_eq!(next_message(ws), (3, "marker".to_string()));
    }
    // Binary payloads cross Redis byte for byte, and stay binary.
    let bytes = vec![0u8, 10, 13, 255, b'\n', 0x80];
    on_c.send(Message::binary(bytes.clone())).unwrap();
    for ws in [&mut on_a, &mut on_b, &mut on_c] {
        let frame = loop {
            match next_frame(ws) {
                Frame::Message { id, payload, text } => break (id, payload, text),
                Frame::Ack { .. } => continue,
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(frame, (4, bytes.clone(), false));
    }
}

#[test]
fn the_sender_crosses_redis_with_the_message_and_resumes_with_it() {
    use common::tokens::{SECRET, mint};
    let redis = Redis::start();
    let signed = |c: &mut threadcast::Config| c.jwt_secret = Some(SECRET.into());
    let (a, b) = (
        instance(&redis.url(), signed),
        instance(&redis.url(), signed),
    );
    wait_linked(&[&a, &b]);
    let alice = mint(r#"{"sub":"alice","name":"Alice \"A\" B"}"#, 3600);
    let bob = mint(r#"{"sub":"bob"}"#, 3600);
    let (mut on_a, _) = join_ws(a.ws_addr(), "hall", &format!("?token={alice}"));
    let (mut on_b, _) = join_ws(b.ws_addr(), "hall", &format!("?token={bob}"));
    on_a.send(Message::text("hi from alice")).unwrap();
    let from = r#""from":{"sub":"alice","name":"Alice \"A\" B"}"#;
    let header_of = |ws: &mut WebSocket<TcpStream>| loop {
        let text = next_data(ws).into_text().unwrap().to_string();
        if text.starts_with(r#"{"type":"message""#) {
            return text;
        }
    };
    for ws in [&mut on_a, &mut on_b] {
        let text = header_of(ws);
        assert!(
            text.contains(from) && text.ends_with("\nhi from alice"),
            "{text}"
        );
    }
    // From the stored copy too: a client resuming from Redis's history on b.
    let (mut later, _) = join_ws(b.ws_addr(), "hall", &format!("?since=0&token={bob}"));
    assert!(header_of(&mut later).contains(from));
}

#[test]
fn a_client_that_leaves_one_instance_resumes_on_another_without_loss() {
    let redis = Redis::start();
    let (a, b) = (
        instance(&redis.url(), |_| {}),
        instance(&redis.url(), |_| {}),
    );
    wait_linked(&[&a, &b]);
    let (mut on_a, epoch) = join_ws(a.ws_addr(), "resume", "");
    for i in 1..=5 {
        publish(&b, "resume", &format!("m{i}"));
    }
    for i in 1..=5 {
        assert_eq!(next_message(&mut on_a), (i, format!("m{i}")));
    }
    drop(on_a); // the client goes away from A …
    for i in 6..=10 {
        publish(&a, "resume", &format!("m{i}"));
    }
    // … and comes back through B, which never had a member in this room.
    let (mut on_b, welcome) = join_addr(b.ws_addr(), "resume", &format!("?since=5&epoch={epoch}"));
    assert_eq!(
        welcome,
        Frame::Welcome {
            epoch: epoch.clone(),
            last_id: 10,
            epoch_changed: false
        }
    );
    for i in 6..=10 {
        assert_eq!(next_message(&mut on_b), (i, format!("m{i}")));
    }
    publish(&a, "resume", "live");
    assert_eq!(next_message(&mut on_b), (11, "live".to_string()));
    // The HTTP fallbacks share the same ids: a long poll on the third instance that
    // never had this room resumes after 9.
    let c = instance(&redis.url(), |_| {});
    wait_linked(&[&c]);
    let poll = get(
        c.http_addr(),
        &format!("/poll/resume?since=9&epoch={epoch}"),
    );
    assert_eq!(poll.status, 200, "{}", poll.text());
    let body = poll.text();
    assert!(
        body.contains("\"id\":10") && body.contains("\"id\":11") && !body.contains("\"id\":9,"),
        "{body}"
    );
}

#[test]
fn losing_redis_keeps_local_delivery_and_nothing_published_meanwhile_is_lost() {
    let mut redis = Redis::start();
    let (a, b) = (
        instance(&redis.url(), |_| {}),
        instance(&redis.url(), |_| {}),
    );
    wait_linked(&[&a, &b]);
    let (mut on_a, _) = join_ws(a.ws_addr(), "outage", "");
    let (mut on_b, _) = join_ws(b.ws_addr(), "outage", "");
    publish(&a, "outage", "before");
    assert_eq!(next_message(&mut on_a).1, "before");
    assert_eq!(next_message(&mut on_b).1, "before");

    redis.kill();
    wait_degraded(&[&a, &b]);
    assert_eq!(redis_stat(&a, "state"), "down");
    for i in 1..=3 {
        on_a.send(Message::text(format!("during {i}"))).unwrap();
    }
    for i in 1..=3 {
        assert_eq!(
            next_message(&mut on_a).1,
            format!("during {i}"),
            "local delivery continues"
        );
    }
    wait_until("A queues the three for Redis", || {
        redis_stat(&a, "queued") == "3"
    });

    redis.restart(false);
    wait_linked(&[&a, &b]);
    // B gets what A published during the outage, once.
    for i in 1..=3 {
        assert_eq!(next_message(&mut on_b).1, format!("during {i}"));
    }
    publish(&b, "outage", "after");
    assert_eq!(next_message(&mut on_b).1, "after");
    // A does not get its own outage messages twice: next is "after".
    assert_eq!(next_message(&mut on_a).1, "after");
    assert_eq!(redis_stat(&a, "dropped"), "0");
    assert_eq!(redis_stat(&a, "queued"), "0");
}

#[test]
fn an_instance_started_without_redis_serves_alone_reports_drops_and_catches_up() {
    // Hold the port until Redis starts on it, so no other test's socket takes it
    // meanwhile. (It accepts connections but never answers: no Redis there yet.)
    let placeholder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = placeholder.local_addr().unwrap().port();
    let url = format!("redis://127.0.0.1:{port}");
    let a = instance(&url, |c| c.redis_queue = 2);
    wait_degraded(&[&a]);
    let (mut on_a, _) = join_ws(a.ws_addr(), "early", "");
    for i in 1..=5 {
        publish(&a, "early", &format!("m{i}"));
    }
    for i in 1..=5 {
        assert_eq!(next_message(&mut on_a).1, format!("m{i}"));
    }
    assert_eq!(redis_stat(&a, "queued"), "2");
    assert_eq!(
        redis_stat(&a, "dropped"),
        "3",
        "past --redis-queue, drops are counted"
    );

    // Redis appears: the queue goes out, and an instance joining later sees it.
    drop(placeholder);
    let _redis = Redis::start_on(port, temp_dir("redis")).expect("start redis-server");
    let b = instance(&url, |_| {});
    wait_linked(&[&a, &b]);
    let (mut on_b, welcome) = join_addr(b.ws_addr(), "early", "?since=0");
    assert!(
        matches!(welcome, Frame::Welcome { last_id: 2, .. }),
        "{welcome:?}"
    );
    assert_eq!(next_message(&mut on_b), (1, "m1".to_string()));
    assert_eq!(next_message(&mut on_b), (2, "m2".to_string()));
}

#[test]
fn a_feed_on_one_instance_is_shared_like_any_publish() {
    let redis = Redis::start();
    let with_feed = instance(&redis.url(), |c| {
        c.feeds.push(threadcast::Feed {
            room: "news".into(),
            // One line, then silence (the feed would be restarted if it exited).
            source: threadcast::FeedSource::Command("echo extra; sleep 60".into()),
        });
    });
    let other = instance(&redis.url(), |_| {});
    wait_linked(&[&with_feed, &other]);
    // The line may have been published before anyone joined: it is in the shared
    // history, which the other instance loads.
    let (mut reader, _) = join_addr(other.ws_addr(), "news", "?since=0");
    let (id, text) = next_message(&mut reader);
    assert_eq!(text, "extra");
    assert!(id >= 1);
}

/// Everything a member receives, in order: `(epoch, id, text)` of each room message,
/// read on a thread until the connection ends.
fn collect(mut ws: WebSocket<TcpStream>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    ws.get_mut().set_read_timeout(None).unwrap();
    thread::spawn(move || {
        while let Ok(message) = ws.read() {
            if !(message.is_text() || message.is_binary()) {
                continue;
            }
            if let Frame::Message { payload, .. } = common::frames::parse(message) {
                if tx.send(String::from_utf8(payload).unwrap()).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

#[test]
fn through_repeated_redis_restarts_every_member_gets_every_message_once() {
    const OUTAGES: usize = 3;
    const PER_PHASE: usize = 20;
    let mut redis = Redis::start();
    let (a, b) = (
        instance(&redis.url(), |_| {}),
        instance(&redis.url(), |_| {}),
    );
    wait_linked(&[&a, &b]);
    let (on_a, _) = join_ws(a.ws_addr(), "soak", "");
    let (on_b, _) = join_ws(b.ws_addr(), "soak", "");
    let (seen_a, seen_b) = (collect(on_a), collect(on_b));
    let mut sent = Vec::new();
    let publish_some = |sent: &mut Vec<String>| {
        for _ in 0..PER_PHASE {
            let body = format!("m{}", sent.len());
            let via = if sent.len() % 2 == 0 { &a } else { &b };
            publish(via, "soak", &body);
            sent.push(body);
        }
    };
    for outage in 0..OUTAGES {
        publish_some(&mut sent); // linked
        redis.kill();
        wait_degraded(&[&a, &b]);
        publish_some(&mut sent); // each instance alone
        // Back with its data (the rooms keep their epoch), or empty (a new epoch,
        // ids from 1 again).
        redis.restart(outage % 2 == 1);
        wait_linked(&[&a, &b]);
    }
    publish_some(&mut sent);
    let mut seen_by = Vec::new();
    for (name, seen) in [("A", seen_a), ("B", seen_b)] {
        let mut got = Vec::new();
        while got.len() < sent.len() {
            match seen.recv_timeout(TEST_TIMEOUT) {
                Ok(text) => got.push(text),
                Err(_) => break,
            }
        }
        let mut unique = got.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            got.len(),
            "member on {name} got duplicates: {got:?}"
        );
        let mut expected = sent.clone();
        expected.sort();
        assert_eq!(unique, expected, "member on {name} missed messages");
        seen_by.push((name, seen));
    }
    // Nothing more was on its way: the next message either gets is a new one.
    publish(&a, "soak", "end");
    for (name, seen) in seen_by {
        assert_eq!(
            seen.recv_timeout(TEST_TIMEOUT).as_deref(),
            Ok("end"),
            "member on {name} got an extra message"
        );
    }
}

#[test]
fn a_password_in_the_url_is_used_and_never_logged_or_shown() {
    const PASSWORD: &str = "s3cret-Redis-pw";
    const WRONG: &str = "not-the-Redis-pw";
    let redis = Redis::start();
    let mut admin = ::redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap();
    ::redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(PASSWORD)
        .query::<()>(&mut admin)
        .unwrap();
    let url = |password: &str| format!("redis://:{password}@127.0.0.1:{}", redis.port());
    // The right one through the environment (out of `ps`), the wrong one as a flag.
    let start = |password: &str| {
        let mut command = binary_command();
        command.args(["--no-demo-feed", "--log-level", "debug"]);
        if password == PASSWORD {
            command.env("THREADCAST_REDIS_URL", url(password));
        } else {
            command.args(["--redis", &url(password)]);
        }
        let mut binary = Binary::start(command);
        let logs = std::mem::replace(&mut binary.logs, Box::new(std::iter::empty()));
        (
            binary,
            thread::spawn(move || logs.collect::<Vec<_>>().join("\n")),
        )
    };
    let health = |binary: &Binary| get(binary.http, "/healthz").text().trim().to_string();
    let (right, right_logs) = start(PASSWORD);
    let (wrong, wrong_logs) = start(WRONG);
    wait_until("the right password links", || health(&right) == "ok");
    wait_until("the wrong one is refused", || {
        get(wrong.http, "/stats")
            .text()
            .contains("\"last_error\":\"")
            && health(&wrong).starts_with("degraded")
    });
    let stats = get(wrong.http, "/stats").text() + &get(right.http, "/stats").text();
    for binary in [&right, &wrong] {
        binary.signal("TERM");
    }
    let logs = right_logs.join().unwrap() + &wrong_logs.join().unwrap();
    assert!(logs.contains("Redis link up"), "{logs}");
    for secret in [PASSWORD, WRONG] {
        assert!(!logs.contains(secret), "a password in the logs:\n{logs}");
        assert!(!stats.contains(secret), "a password in /stats: {stats}");
    }
}
