//! A `redis-server` of a test's own, on an ephemeral loopback port.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;

use threadcast::ServerHandle;

use super::{TEST_TIMEOUT, get, temp_dir, wait_until};

/// A `redis-server` of a test's own. It writes every change to its append-only file
/// at once, so a restart can keep the data or (after [`Redis::restart`] with
/// `keep_data: false`) lose it, as a Redis without persistence would.
pub struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    /// Starts on a free loopback port (tries a few, since the port is chosen before
    /// Redis binds it).
    pub fn start() -> Redis {
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if let Some(redis) = Redis::start_on(port, temp_dir("redis")) {
                return redis;
            }
        }
        panic!("could not start redis-server (is it installed? tests/run-all.sh installs it)");
    }

    /// Starts on `port` and waits for "Ready to accept connections"; `None` if it
    /// exits instead (port taken).
    pub fn start_on(port: u16, dir: PathBuf) -> Option<Redis> {
        let mut child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .args(["--logfile", ""])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("Ready to accept connections") {
                    let _ = ready_tx.send(());
                }
            }
        });
        match ready_rx.recv_timeout(TEST_TIMEOUT) {
            Ok(()) => Some(Redis { child, port, dir }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        }
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://` URL to connect to it.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it the hard way (no goodbye to its clients).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Kills it and starts it again on the same port, with its data or empty.
    pub fn restart(&mut self, keep_data: bool) {
        self.kill();
        if !keep_data {
            let _ = std::fs::remove_dir_all(&self.dir);
            std::fs::create_dir_all(&self.dir).unwrap();
        }
        let again = Redis::start_on(self.port, self.dir.clone()).expect("restart redis-server");
        *self = again;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The body of `/healthz`: `ok`, or `degraded: …` while Redis is unreachable.
pub fn health(server: &ServerHandle) -> String {
    get(server.http_addr(), "/healthz")
        .text()
        .trim()
        .to_string()
}

/// Waits (bounded) until every one of `servers` has its Redis link up.
pub fn wait_linked(servers: &[&ServerHandle]) {
    for server in servers {
        wait_until("the Redis link comes up", || health(server) == "ok");
    }
}

/// Waits (bounded) until every one of `servers` has noticed Redis is gone.
pub fn wait_degraded(servers: &[&ServerHandle]) {
    for server in servers {
        wait_until("the instance notices Redis is gone", || {
            health(server).starts_with("degraded")
        });
    }
}
