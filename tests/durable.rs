//! Room histories across restarts (`--data-dir`, issue 16): a restart keeps every
//! room's epoch, ids, history and client ids; `kill -9` at random moments loses no
//! acknowledged message; a second instance, a damaged file and a full disk are refused
//! with words that say what to do; `--history-ttl` empties history on disk too.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::frames::{self, Frame, join, next_frame};
use common::*;
use threadcast::{Config, ServerHandle};
use tungstenite::Message;

fn with_store(dir: &Path) -> impl FnOnce(&mut Config) + '_ {
    move |c: &mut Config| {
        c.data_dir = Some(dir.to_path_buf());
        c.poll_timeout = Duration::from_millis(200);
    }
}

fn publish(addr: SocketAddr, room: &str, query: &str, body: &str) -> HttpResponse {
    http(
        addr,
        "POST",
        &format!("/publish/{room}{query}"),
        &[],
        body.as_bytes(),
    )
}

#[test]
fn a_restart_keeps_every_room_s_epoch_ids_history_and_client_ids() {
    let dir = temp_dir("durable-restart");
    let server = start_with(with_store(&dir));
    let mut epoch = String::new();
    for i in 1..=3 {
        let answer = publish(
            server.http_addr(),
            "lobby",
            &format!("?cid=c{i}"),
            &format!("m{i}"),
        );
        assert_eq!(answer.status, 202, "{}", answer.text());
        epoch = frames::field(&answer.text(), "epoch");
    }
    server.shutdown();

    let server = start_with(with_store(&dir));
    // A WebSocket resuming after id 1 gets 2 and 3: no gap, no new epoch.
    let (mut ws, welcome) = join(&server, "lobby", &format!("?since=1&epoch={epoch}"));
    assert!(
        matches!(&welcome, Frame::Welcome { last_id: 3, epoch_changed: false, epoch: e } if *e == epoch),
        "{welcome:?}"
    );
    for id in [2, 3] {
        let Frame::Message {
            id: got, payload, ..
        } = next_frame(&mut ws)
        else {
            panic!()
        };
        assert_eq!((got, payload), (id, format!("m{id}").into_bytes()));
    }
    // A client id seen before the restart is still a repeat; the sequence goes on.
    let again = publish(server.http_addr(), "lobby", "?cid=c2", "m2");
    assert!(again.text().contains(r#""id":2,"#) && again.text().contains(r#""duplicate":true"#));
    let next = publish(server.http_addr(), "lobby", "", "m4").text();
    assert!(next.contains(r#""id":4,"#), "{next}");
    // SSE with Last-Event-ID and a poll resume the same way.
    let mut sse = open_stream_with(
        server.http_addr(),
        "/events/lobby",
        &format!("Last-Event-ID: {epoch}:2\r\n"),
    );
    let events = read_until(&mut sse, "\"data\":\"m4\"");
    assert!(
        !events.contains("event: gap") && events.contains("\"data\":\"m3\""),
        "{events}"
    );
    let poll = http(
        server.http_addr(),
        "GET",
        &format!("/poll/lobby?since=3&epoch={epoch}"),
        &[],
        b"",
    )
    .text();
    assert!(
        poll.contains(r#""epoch_changed":false"#) && poll.contains(r#""data":"m4""#),
        "{poll}"
    );
    assert!(!poll.contains("\"gap\""), "{poll}");
}

/// [`open_stream`] with extra request headers.
fn open_stream_with(addr: SocketAddr, path: &str, headers: &str) -> std::net::TcpStream {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    stream
}

/// The threadcast binary keeping history in `dir`.
fn binary(dir: &Path, extra: &[&str]) -> Binary {
    let mut command = binary_command();
    command
        .args(["--no-demo-feed", "--data-dir"])
        .arg(dir)
        .args(extra);
    let mut server = Binary::start(command);
    server.drain_logs();
    server
}

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_message() {
    let dir = temp_dir("durable-kill");
    let mut acknowledged: Vec<(u64, String)> = Vec::new();
    for round in 0..5u64 {
        let mut server = binary(&dir, &[]);
        let addr = server.http;
        // A WebSocket publisher (its acks) and HTTP publishers (their 202s), until the
        // server is killed under them.
        let ws_acks = std::thread::spawn(move || publish_over_websocket(addr, round));
        let http_acks = std::thread::spawn(move || {
            let mut acked = Vec::new();
            for i in 0.. {
                let body = format!("r{round}-h{i}");
                let Ok(answer) = try_publish(addr, &body) else {
                    break;
                };
                acked.push((field_of(&answer, "id"), body));
            }
            acked
        });
        // A moment that varies from round to round: 20 to 220 ms of publishing.
        std::thread::sleep(Duration::from_millis(20 + (round * 53) % 200));
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        acknowledged.extend(http_acks.join().unwrap());
        acknowledged.extend(ws_acks.join().unwrap());
    }
    let server = binary(&dir, &[]);
    let stored = http(server.http, "GET", "/poll/lobby?since=0", &[], b"").text();
    let ids: Vec<u64> = stored
        .match_indices("\"id\":")
        .map(|(i, _)| field_of(&stored[i..], "id"))
        .collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(ids, unique, "every id once, in order");
    assert!(acknowledged.len() > 10, "the rounds published something");
    for (id, body) in &acknowledged {
        let entry = format!("\"id\":{id},");
        let at = stored
            .find(&entry)
            .unwrap_or_else(|| panic!("acknowledged {id} {body} is gone"));
        assert!(
            stored[at..]
                .split('}')
                .next()
                .unwrap()
                .contains(&format!("\"data\":\"{body}\"")),
            "{id} {body}"
        );
    }
}

/// Publishes over one WebSocket with client ids until the connection dies; the ids
/// and bodies of the messages whose `ack` came back.
fn publish_over_websocket(addr: SocketAddr, round: u64) -> Vec<(u64, String)> {
    let Ok((mut ws, _)) = tungstenite::connect(format!("ws://{addr}/ws/lobby")) else {
        return Vec::new();
    };
    let mut acked = Vec::new();
    for i in 0.. {
        let body = format!("r{round}-w{i}");
        if ws
            .send(Message::text(format!("cid:w{round}-{i}\n{body}")))
            .is_err()
        {
            break;
        }
        // Wait for this message's ack (skipping the room's traffic).
        let acked_id = loop {
            match ws.read() {
                Ok(Message::Text(t)) if t.starts_with(r#"{"type":"ack""#) => {
                    break Some(field_of(&t, "id"));
                }
                Ok(_) => continue,
                Err(_) => break None,
            }
        };
        match acked_id {
            Some(id) => acked.push((id, body)),
            None => break,
        }
    }
    acked
}

fn try_publish(addr: SocketAddr, body: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(TEST_TIMEOUT))?;
    let request = format!(
        "POST /publish/lobby HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    if answer.starts_with("HTTP/1.1 202") {
        Ok(answer)
    } else {
        Err(std::io::Error::other(answer))
    }
}

/// The number after `"key":` in `json`.
fn field_of(json: &str, key: &str) -> u64 {
    let start = json.find(&format!("\"{key}\":")).unwrap() + key.len() + 3;
    json[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Runs the binary on `dir` expecting it to refuse to start; its stderr.
fn refused(dir: &Path) -> String {
    let output = binary_command()
        .args(["--no-demo-feed", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(!output.status.success(), "it started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn every_fsync_mode_keeps_what_it_acknowledged_across_a_stop() {
    for mode in ["batch", "always", "never"] {
        let dir = temp_dir(&format!("durable-{mode}"));
        let mut server = binary(&dir, &["--fsync", mode]);
        for i in 0..20 {
            assert_eq!(
                publish(server.http, "lobby", "", &format!("{mode}-{i}")).status,
                202
            );
        }
        server.signal("TERM");
        server.child.wait().unwrap();
        let server = binary(&dir, &["--fsync", mode]);
        let all = http(server.http, "GET", "/poll/lobby?since=0", &[], b"").text();
        assert_eq!(
            all.matches(&format!("\"data\":\"{mode}-")).count(),
            20,
            "{mode}: {all}"
        );
    }
}

#[test]
fn a_second_instance_and_a_damaged_file_are_refused_with_what_to_do() {
    // A directory that cannot be one.
    let file = temp_dir("durable-not-a-dir").join("a-file");
    std::fs::write(&file, b"").unwrap();
    let words = refused(&file);
    assert!(words.contains("cannot create it"), "{words}");

    let dir = temp_dir("durable-refusals");
    let mut first = binary(&dir, &[]);
    assert_eq!(publish(first.http, "lobby", "", "kept").status, 202);
    let pid = first.child.id();
    let words = refused(&dir);
    assert!(
        words.contains(&format!(
            "in use by another running threadcast (process {pid})"
        )),
        "{words}"
    );
    // The first one still serves.
    assert_eq!(publish(first.http, "lobby", "", "still").status, 202);
    first.signal("TERM");
    first.child.wait().unwrap();

    // A file from a threadcast that stores rooms in another format.
    let other = temp_dir("durable-format");
    {
        let db = redb::Database::create(other.join("rooms.redb")).unwrap();
        let write = db.begin_write().unwrap();
        let meta: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");
        write
            .open_table(meta)
            .unwrap()
            .insert("format", 99)
            .unwrap();
        write.commit().unwrap();
    }
    let words = refused(&other);
    assert!(
        words.contains("format 99") && words.contains("run the version that wrote it"),
        "{words}"
    );

    // Cut the file in half, as a disk failing mid-write might.
    let file = dir.join("rooms.redb");
    let len = std::fs::metadata(&file).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let words = refused(&dir);
    assert!(
        words.contains("rooms.redb") && words.contains("move it away"),
        "{words}"
    );
}

#[test]
fn a_full_disk_refuses_publishes_and_recovers_when_space_returns() {
    let Some(disk) = SmallDisk::mount("durable-full") else {
        eprintln!("skipped: mounting a small tmpfs needs root (CI runs as root)");
        return;
    };
    let server = start_with(with_store(&disk.path));
    let addr = server.http_addr();
    assert_eq!(publish(addr, "lobby", "", "before").status, 202);
    // Fill the disk, then publish until the store cannot write (bounded).
    let filler = disk.path.join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 4 << 20]);
    let big = "x".repeat(64 << 10);
    let refusal = (0..64)
        .map(|_| publish(addr, "lobby", "", &big))
        .find(|a| a.status != 202);
    let refusal = refusal.expect("a full disk refuses a publish");
    assert_eq!(refusal.status, 503, "{}", refusal.text());
    assert!(
        refusal.text().contains("could not store"),
        "{}",
        refusal.text()
    );
    // Space comes back: publishing works again, and nothing acknowledged was lost.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(publish(addr, "lobby", "", "after").status, 202);
    server.shutdown();
    let server = start_with(with_store(&disk.path));
    let all = http(server.http_addr(), "GET", "/poll/lobby?since=0", &[], b"").text();
    assert!(
        all.contains(r#""data":"before""#) && all.contains(r#""data":"after""#),
        "{}",
        &all[..200.min(all.len())]
    );
}

/// A 2 MiB tmpfs, unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    fn mount(tag: &str) -> Option<SmallDisk> {
        let path = temp_dir(tag);
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(SmallDisk { path })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.path)
            .status();
    }
}

#[test]
fn old_messages_leave_history_in_memory_and_on_disk() {
    let dir = temp_dir("durable-ttl");
    let server = start_with(|c| {
        with_store(&dir)(c);
        c.history_ttl = Some(Duration::from_secs(1));
    });
    assert_eq!(
        publish(server.http_addr(), "news", "", "soon gone").status,
        202
    );
    let since_0 = |server: &ServerHandle| {
        http(server.http_addr(), "GET", "/poll/news?since=0", &[], b"").text()
    };
    assert!(since_0(&server).contains("soon gone"));
    wait_until("the message expires", || {
        !since_0(&server).contains("soon gone")
    });
    server.shutdown();
    let server = start_with(with_store(&dir));
    assert!(
        !since_0(&server).contains("soon gone"),
        "gone from the disk too"
    );
}
