//! Writing an HTTP answer on the connection's own socket, always with
//! `Connection: close`: one request per connection.
//!
//! Why close after every answer? A kept-alive connection would keep its thread
//! waiting for a next request that may never come; closing frees the thread at once,
//! and a browser opens a new connection in well under a millisecond on a LAN. It
//! also means we never read a second request that a client pipelined behind the
//! first: whatever follows the first request is left unread.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use crate::net::socket::Socket;

/// Longest we spend writing one answer to a client that reads slowly.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// After answering we read and discard what the client still sends, for at most
/// this long, so closing with unread bytes does not make the kernel send a reset
/// that could destroy the answer before the client has read it.
pub const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// Most bytes discarded while lingering.
const MAX_LINGER_BYTES: usize = 256 * 1024;

/// One HTTP answer with a body held in memory.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    /// An answer with this status, content type and body.
    pub fn new(status: u16, content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply {
            status,
            content_type,
            body,
            headers: Vec::new(),
        }
    }

    /// A one-line plain-text answer.
    pub fn text(status: u16, message: &str) -> Reply {
        Reply::new(
            status,
            "text/plain; charset=utf-8",
            format!("{message}\n").into_bytes(),
        )
    }

    /// A JSON answer.
    pub fn json(status: u16, json: String) -> Reply {
        Reply::new(status, "application/json", json.into_bytes())
    }

    /// Adds a header line.
    #[must_use]
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    /// Adds several header lines.
    #[must_use]
    pub fn headers(mut self, headers: Vec<(&'static str, String)>) -> Reply {
        self.headers.extend(headers);
        self
    }

    /// Tells caches not to keep it (live data).
    #[must_use]
    pub fn no_store(self) -> Reply {
        self.header("Cache-Control", "no-store")
    }

    /// The whole answer as bytes (without the body for a `HEAD` request).
    pub fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
             X-Content-Type-Options: nosniff\r\n",
            self.status,
            reason_phrase(self.status),
            self.content_type,
            self.body.len(),
        );
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str("Connection: close\r\n\r\n");
        let mut bytes = out.into_bytes();
        if !head_only {
            bytes.extend_from_slice(&self.body);
        }
        bytes
    }

    /// Writes the answer within [`ANSWER_TIMEOUT`] and closes the connection.
    pub fn send(self, socket: &Socket, head_only: bool) {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        match write_all_by(socket, &self.to_bytes(head_only), deadline) {
            Ok(()) => close_gently(socket),
            Err(e) => log::debug!("HTTP client went away before its answer was sent: {e}"),
        }
    }
}

/// Writes all of `bytes` before `deadline`, however slowly the client reads: each
/// write may block only for what is left of the time.
///
/// # Errors
/// `TimedOut` at the deadline, or the socket's error.
pub fn write_all_by(socket: &Socket, bytes: &[u8], deadline: Instant) -> io::Result<()> {
    let mut rest = bytes;
    while !rest.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        socket.set_write_timeout(Some(left))?;
        match (&*socket).write(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    (&*socket).flush()
}

/// Ends our side of the connection (the client sees the end of the answer), then
/// discards what the client still sends for a moment before the socket is closed.
pub fn close_gently(socket: &Socket) {
    let _ = socket.shutdown(Shutdown::Write);
    let deadline = Instant::now() + CLOSE_LINGER;
    let mut sink = [0u8; 4096];
    let mut discarded = 0;
    while discarded < MAX_LINGER_BYTES {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match (&*socket).read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => discarded += n,
        }
    }
}

/// The reason phrase of a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}
