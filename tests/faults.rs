//! Faults: slow consumers, connection churn, shutdown under load, clients that vanish
//! without a FIN, and panics inside connection threads.
//!
//! Tests that count the threads, descriptors or memory of the process run alone in a
//! child process (`run_alone`), since the other tests of this file would otherwise run
//! beside them in the same process.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use threadcast::ServerHandle;
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

/// Slow consumers (a room member that stops reading) are closed with 1008 while the
/// others keep receiving everything.
mod slow_consumers {
    use super::*;

    const READERS: usize = 50;
    const STALLED: usize = 50;
    const MESSAGES: u32 = 120;
    const PAYLOAD: usize = 64 * 1024;

    #[test]
    fn fifty_readers_lose_nothing_while_fifty_stalled_members_are_closed_with_1008() {
        run_alone("slow_consumers::inner");
    }

    #[test]
    #[ignore = "run by fifty_readers_lose_nothing_while_fifty_stalled_members_are_closed_with_1008"]
    fn inner() {
        if !alone() {
            return;
        }
        let server = start_with(|c| c.send_queue = 8);
        let rss_before = rss_kib();
        let mut stalled: Vec<_> = (0..STALLED)
            .map(|_| connect(&server, "/ws/feed?raw=1"))
            .collect();

        // Each reader acknowledges every message, and the publisher waits for all of
        // them before the next one: the readers are never the slow ones.
        let (ack_tx, ack_rx) = crossbeam_channel::unbounded();
        let readers: Vec<_> = (0..READERS)
            .map(|_| {
                let mut ws = connect(&server, "/ws/feed?raw=1");
                let ack_tx = ack_tx.clone();
                thread::spawn(move || {
                    for i in 0..MESSAGES {
                        let Message::Binary(payload) = next_data(&mut ws) else {
                            panic!("expected binary");
                        };
                        assert_eq!(payload.len(), PAYLOAD);
                        assert_eq!(payload[..4], i.to_be_bytes(), "message {i} out of order");
                        ack_tx.send(i).unwrap();
                    }
                    ws
                })
            })
            .collect();
        wait_for_members(&server, "feed", READERS + STALLED);

        for i in 0..MESSAGES {
            let mut payload = vec![0x5a; PAYLOAD];
            payload[..4].copy_from_slice(&i.to_be_bytes());
            server.publish("feed", Message::binary(payload)).unwrap();
            for _ in 0..READERS {
                assert_eq!(
                    ack_rx.recv_timeout(TEST_TIMEOUT),
                    Ok(i),
                    "a reader fell behind"
                );
            }
        }
        // Keep the readers connected: they are still members below.
        let _readers: Vec<_> = readers
            .into_iter()
            .map(|r| r.join().expect("every reader got every message in order"))
            .collect();
        // Every stalled member was dropped from the room; the readers are still in it.
        wait_for_members(&server, "feed", READERS);
        let grown = rss_kib().saturating_sub(rss_before);
        assert!(grown < 256 * 1024, "memory grew by {grown} KiB");

        // When a stalled member finally reads, it finds what fitted in its queue and
        // socket buffers, then the close frame that says why.
        for ws in &mut stalled {
            let (code, reason) = expect_close(ws);
            assert_eq!(code, CloseCode::Policy);
            assert!(reason.contains("slow consumer"), "{reason}");
        }
    }
}

/// Many short connections: resources come back afterwards.
mod churn {
    use super::*;

    const CLIENT_THREADS: usize = 4;

    #[test]
    fn after_2000_churning_connections_threads_fds_and_memory_return_to_baseline() {
        run_alone("churn::short_inner");
    }

    #[test]
    #[ignore = "soak (about a minute in a debug build): run with --release -- --ignored"]
    fn after_20000_churning_connections_threads_fds_and_memory_return_to_baseline() {
        run_alone("churn::soak_inner");
    }

    #[test]
    #[ignore = "run by after_2000_churning_connections_threads_fds_and_memory_return_to_baseline"]
    fn short_inner() {
        if alone() {
            churn(2000, Duration::from_secs(60));
        }
    }

    #[test]
    #[ignore = "run by after_20000_churning_connections_threads_fds_and_memory_return_to_baseline"]
    fn soak_inner() {
        if alone() {
            churn(20_000, Duration::from_secs(300));
        }
    }

    /// `cycles` connect/send/receive/close cycles from several threads, each ending in
    /// one of three ways: a clean close, a hang-up without close, a raw close frame.
    fn churn(cycles: usize, limit: Duration) {
        let server = Arc::new(start());
        // Warm up, so lazily created threads (tiny_http's pool) are in the baseline.
        let _ = get(server.http_addr(), "/healthz");
        one_cycle(&server, 0);
        wait_until("warm-up connection finished", || server.connections() == 0);
        let (threads, fds, rss) = (thread_count(), fd_count(), rss_kib());

        let started = Instant::now();
        let workers: Vec<_> = (0..CLIENT_THREADS)
            .map(|t| {
                let server = Arc::clone(&server);
                thread::spawn(move || {
                    for i in (t..cycles).step_by(CLIENT_THREADS) {
                        one_cycle(&server, i);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("a churn thread failed");
        }
        let took = started.elapsed();
        assert!(took < limit, "{cycles} cycles took {took:?}");

        let deadline = Instant::now() + Duration::from_secs(20);
        while server.connections() > 0 || thread_count() > threads || fd_count() > fds {
            assert!(
                Instant::now() < deadline,
                "after {cycles} cycles: {} connections, {} threads (baseline {threads}), \
                 {} fds (baseline {fds})",
                server.connections(),
                thread_count(),
                fd_count()
            );
            thread::sleep(Duration::from_millis(10));
        }
        let grown = rss_kib().saturating_sub(rss);
        assert!(
            grown < 64 * 1024,
            "RSS grew by {grown} KiB after {cycles} cycles"
        );
        eprintln!("{cycles} cycles in {took:?}; RSS +{grown} KiB");
    }

    fn one_cycle(server: &ServerHandle, i: usize) {
        let path = if i % 2 == 0 {
            "/echo"
        } else {
            "/ws/churn?raw=1"
        };
        match i % 3 {
            0 => {
                let mut ws = connect(server, path);
                if i % 2 == 1 {
                    // A room member hears its own message only once its join is done.
                    wait_for_join(server, &mut ws);
                } else {
                    ws.send(Message::text("hi")).unwrap();
                    let _ = next_data(&mut ws);
                }
                ws.close(None).unwrap();
                while ws.read().is_ok() {}
            }
            1 => {
                let mut ws = connect(server, path);
                ws.send(Message::text("bye")).unwrap();
                drop(ws); // hang up without a close frame
            }
            _ => {
                // Raw frames. In the room, other members' messages may arrive between
                // our frames: skip data frames while waiting for the replies.
                let mut stream = raw_connect(server.ws_addr(), path);
                stream.write_all(&frame(true, op::PING, b"p")).unwrap();
                next_control(&mut stream, op::PONG);
                stream
                    .write_all(&frame(true, op::CLOSE, &close_payload(1000, "")))
                    .unwrap();
                let close = next_control(&mut stream, op::CLOSE);
                assert_eq!(close.close_code(), Some(1000));
                assert!(read_frame(&mut stream).is_none(), "nothing after the close");
            }
        }
    }

    fn next_control(stream: &mut TcpStream, opcode: u8) -> Frame {
        loop {
            let f = read_frame(stream).expect("a frame");
            if f.opcode == opcode {
                return f;
            }
            assert!(
                matches!(f.opcode, op::TEXT | op::BINARY | op::PING),
                "{f:?}"
            );
        }
    }

    /// Sends to the room until the member hears itself (other churning members may
    /// be in the room too, so any data message counts).
    fn wait_for_join(_server: &ServerHandle, ws: &mut tungstenite::WebSocket<TcpStream>) {
        ws.send(Message::text("hi")).unwrap();
        ws.get_ref()
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let deadline = Instant::now() + TEST_TIMEOUT;
        loop {
            match ws.read() {
                Ok(Message::Text(_) | Message::Binary(_)) => break,
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    assert!(Instant::now() < deadline, "never heard back from the room");
                    ws.send(Message::text("hi")).unwrap();
                }
                Err(e) => panic!("room read failed: {e}"),
            }
        }
        ws.get_ref().set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    }
}

/// Shutdown while 500 clients are connected and messages flow.
mod shutdown {
    use super::*;

    const CLIENTS: usize = 500;

    /// What one client saw: the close code, if a close frame came.
    fn client(mut ws: tungstenite::WebSocket<TcpStream>, echo: bool) -> Option<u16> {
        let mut n = 0u64;
        loop {
            if echo && ws.send(Message::text(format!("echo {n}"))).is_err() {
                // Only after the server's close: keep reading to find it.
            }
            n += 1;
            match ws.read() {
                Ok(Message::Close(frame)) => {
                    while ws.read().is_ok() {} // completes the close handshake
                    return frame.map(|f| u16::from(f.code));
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// `POST /publish/load`; false once the server no longer answers.
    fn try_publish(addr: std::net::SocketAddr, body: &str) -> bool {
        use std::io::Read;
        let Ok(mut stream) = TcpStream::connect(addr) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(TEST_TIMEOUT));
        let request = format!(
            "POST /publish/load HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response.starts_with("HTTP/1.1 202")
    }

    #[test]
    fn shutdown_under_load_sends_1001_to_500_clients_within_the_drain_deadline() {
        let server = start_with(|c| {
            c.send_queue = 4096;
            c.max_connections_per_ip = CLIENTS + 16; // every client comes from 127.0.0.1
        });
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let echo = i % 2 == 0;
                let ws = connect(&server, if echo { "/echo" } else { "/ws/load?raw=1" });
                thread::spawn(move || client(ws, echo))
            })
            .collect();
        wait_for_members(&server, "load", CLIENTS / 2);
        // A publisher posts to the room over HTTP until the server stops answering.
        let http_addr = server.http_addr();
        let published = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let publisher = {
            let published = Arc::clone(&published);
            thread::spawn(move || {
                let mut n = 0u64;
                while try_publish(http_addr, &format!("tick {n}")) {
                    n += 1;
                    published.store(n, std::sync::atomic::Ordering::Relaxed);
                }
                n
            })
        };
        wait_until("messages are flowing", || {
            published.load(std::sync::atomic::Ordering::Relaxed) >= 20
        });

        let started = Instant::now();
        let drained = server.shutdown();
        let took = started.elapsed();
        let codes: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        let published = publisher.join().unwrap();
        assert!(published >= 20, "messages were flowing ({published})");
        let wrong: Vec<_> = codes.iter().filter(|c| **c != Some(1001)).collect();
        assert!(
            wrong.is_empty(),
            "{} clients did not get 1001: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
        assert!(
            drained,
            "every connection finished within the drain deadline"
        );
        assert!(
            took < threadcast::DRAIN_TIMEOUT + Duration::from_secs(2),
            "shutdown took {took:?}"
        );
    }
}

/// Clients that disappear without closing: reaped within the pong timeout.
mod vanished {
    use super::*;

    const PING: Duration = Duration::from_millis(100);
    const PONG_TIMEOUT: Duration = Duration::from_millis(600);

    fn reaping_server() -> ServerHandle {
        start_with(|c| {
            c.ping_interval = PING;
            c.pong_timeout = PONG_TIMEOUT;
        })
    }

    /// Waits until the server has no connection; returns how long that took.
    fn time_until_reaped(server: &ServerHandle) -> Duration {
        let started = Instant::now();
        wait_until("the silent client is reaped", || server.connections() == 0);
        started.elapsed()
    }

    #[test]
    fn a_client_that_never_reads_nor_writes_is_reaped_and_its_threads_exit() {
        run_alone("vanished::silent_inner");
    }

    #[test]
    #[ignore = "run by a_client_that_never_reads_nor_writes_is_reaped_and_its_threads_exit"]
    fn silent_inner() {
        if !alone() {
            return;
        }
        let server = reaping_server();
        let _ = get(server.http_addr(), "/healthz");
        let threads = thread_count();
        let silent = raw_connect(server.ws_addr(), "/ws/quiet?raw=1");
        wait_until("connected", || server.connections() == 1);
        let waited = time_until_reaped(&server);
        assert!(waited >= PONG_TIMEOUT / 2, "reaped after only {waited:?}");
        assert!(waited < PONG_TIMEOUT * 4, "reaped only after {waited:?}");
        wait_until("its two threads exit", || thread_count() <= threads);
        drop(silent); // it never sent a FIN while the server was waiting
    }

    /// A real vanishing: inside a private network namespace, the loopback interface
    /// goes down under an open connection, so no FIN, RST or ACK ever arrives.
    #[test]
    fn a_client_that_vanishes_without_a_fin_is_reaped_within_the_pong_timeout() {
        let probe = std::process::Command::new("unshare")
            .args(["--net", "ip", "link", "set", "lo", "up"])
            .status();
        if !probe.is_ok_and(|s| s.success()) {
            eprintln!("skipped: `unshare --net` is not available (needs root and iproute2)");
            return;
        }
        let output = std::process::Command::new("unshare")
            .arg("--net")
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "vanished::netns_inner",
                "--ignored",
                "--test-threads=1",
                "--nocapture",
            ])
            .env(ALONE_ENV, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    #[test]
    #[ignore = "run in a network namespace by a_client_that_vanishes_without_a_fin_is_reaped_within_the_pong_timeout"]
    fn netns_inner() {
        if !alone() {
            return;
        }
        let lo = |state: &str| {
            let ok = std::process::Command::new("ip")
                .args(["link", "set", "lo", state])
                .status();
            assert!(ok.is_ok_and(|s| s.success()), "ip link set lo {state}");
        };
        lo("up");
        let server = reaping_server();
        let _ = get(server.http_addr(), "/healthz");
        let threads = thread_count();
        let mut ws = connect(&server, "/echo");
        ws.send(Message::text("hello")).unwrap();
        assert_eq!(next_data(&mut ws), Message::text("hello"));

        lo("down"); // from now on nothing gets through, in either direction
        let waited = time_until_reaped(&server);
        assert!(waited < PONG_TIMEOUT * 4, "reaped only after {waited:?}");
        wait_until("its two threads exit", || thread_count() <= threads);
        lo("up"); // shutdown connects to the listener to wake it
        drop(ws);
    }
}

/// A panic in one connection's thread stays in that connection.
mod panics {
    use super::*;

    /// A logger that panics when it sees `needle`: an injection point in whichever
    /// thread writes that log record, with no hook in the server's code.
    struct PanicOn(&'static str);

    impl log::Log for PanicOn {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            let message = record.args().to_string();
            if message.contains(self.0) {
                panic!("injected panic at: {message}");
            }
        }
        fn flush(&self) {}
    }

    fn inject(needle: &'static str) {
        log::set_boxed_logger(Box::new(PanicOn(needle))).expect("first logger of this process");
        log::set_max_level(log::LevelFilter::Debug);
    }

    #[test]
    fn a_panic_in_a_connection_thread_leaves_the_server_and_the_room_serving() {
        run_alone("panics::reader_inner");
    }

    #[test]
    #[ignore = "run by a_panic_in_a_connection_thread_leaves_the_server_and_the_room_serving"]
    fn reader_inner() {
        if !alone() {
            return;
        }
        // The reader logs "peer closed (Some(4321))" when the victim closes with 4321.
        inject("peer closed (Some(4321))");
        let server = start();
        let _ = get(server.http_addr(), "/healthz");
        let mut alice = connect(&server, "/ws/r?raw=1");
        let mut bob = connect(&server, "/ws/r?raw=1");
        wait_for_members(&server, "r", 2);
        let threads = thread_count();

        let mut victim = raw_connect(server.ws_addr(), "/ws/r?raw=1");
        wait_for_members(&server, "r", 3);
        victim
            .write_all(&frame(true, op::CLOSE, &close_payload(4321, "")))
            .unwrap();
        // The victim's reader panics; its slot, room membership and threads go.
        while read_frame(&mut victim).is_some() {}
        wait_until("the victim's slot is freed", || server.connections() == 2);
        wait_for_members(&server, "r", 2);
        wait_until("the victim's threads exit", || thread_count() <= threads);

        alice.send(Message::text("after the panic")).unwrap();
        assert_eq!(next_data(&mut bob), Message::text("after the panic"));
        let mut carol = connect(&server, "/echo");
        carol.send(Message::text("new client")).unwrap();
        assert_eq!(next_data(&mut carol), Message::text("new client"));
    }

    #[test]
    fn a_panic_while_answering_http_ends_only_that_request() {
        run_alone("panics::http_inner");
    }

    #[test]
    #[ignore = "run by a_panic_while_answering_http_ends_only_that_request"]
    fn http_inner() {
        if !alone() {
            return;
        }
        // The access line of `GET /boom` is logged on the request's own thread, after
        // the file server's answer was relayed: that thread panics there.
        inject("\"GET /boom\"");
        const PER_ADDRESS: usize = 4;
        let server = start_with(|c| c.max_connections_per_ip = PER_ADDRESS);
        let addr = server.http_addr();
        assert_eq!(get(addr, "/healthz").status, 200);
        let threads = thread_count();
        // Many more panics than the address has places: each must give its place back.
        let mut answered = 0;
        for _ in 0..PER_ADDRESS * 10 {
            let request = "GET /boom HTTP/1.1\r\nHost: localhost\r\n\r\n";
            let (mut stream, status, _) = raw_request(addr, request);
            answered += usize::from(status == 404);
            // Until the panicked thread has let go of the socket.
            let _ = std::io::Read::read_to_end(&mut stream, &mut Vec::new());
        }
        assert!(
            answered > PER_ADDRESS,
            "only {answered} requests were answered"
        );
        wait_until("the panicked threads exit", || thread_count() <= threads);
        assert_eq!(get(addr, "/healthz").status, 200);
        assert_eq!(get(addr, "/").status, 200, "the file server survived");
        let mut ws = connect(&server, "/echo");
        ws.send(Message::text("still here")).unwrap();
        assert_eq!(next_data(&mut ws), Message::text("still here"));
    }

    #[test]
    fn a_panic_in_the_hub_leaves_other_rooms_working() {
        run_alone("panics::hub_inner");
    }

    #[test]
    #[ignore = "run by a_panic_in_the_hub_leaves_other_rooms_working"]
    fn hub_inner() {
        if !alone() {
            return;
        }
        // The hub logs this warning when it drops a slow consumer.
        inject("slow consumer");
        let server = start_with(|c| c.send_queue = 1);
        let _stalled = connect(&server, "/ws/doomed?raw=1");
        wait_for_members(&server, "doomed", 1);
        let big = vec![0u8; 512 * 1024];
        for _ in 0..64 {
            if server
                .publish("doomed", Message::binary(big.clone()))
                .is_err()
            {
                break;
            }
        }
        // Whatever happened to that room, another room must still work.
        let mut alice = connect(&server, "/ws/fine?raw=1");
        wait_for_members(&server, "fine", 1);
        alice.send(Message::text("hub alive?")).unwrap();
        assert_eq!(next_data(&mut alice), Message::text("hub alive?"));
    }
}
