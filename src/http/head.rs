//! Reading a request head: the request line and headers, up to the blank line.
//!
//! Every connection on every listener starts here, whatever it turns out to be (a
//! WebSocket upgrade, a publish, a file). Whatever a client sends, reading a head
//! costs at most [`MAX_HEAD_BYTES`] of memory and [`MAX_HEADERS`] parsed headers,
//! and ends by a deadline fixed when the connection was accepted, however slowly the
//! bytes trickle in (slowloris).
//!
//! ```text
//! POST /publish/lobby HTTP/1.1      ← request line: method, target, version
//! Host: 127.0.0.1:8080              ← headers, one per line
//! Content-Length: 5
//!                                   ← blank line: the head ends here
//! hello                             ← the body (or, after an upgrade, frames)
//! ```
//!
//! We read in small chunks and may read past the blank line: those bytes (the start
//! of a body, or a WebSocket client's first frames) are kept as [`Head::leftover`].

use std::io::{self, Read};
use std::time::Instant;

use crate::net::socket::Socket;
use crate::protocol::url::split_target;

/// Largest request head we read. Browsers send 1–2 KiB (cookies can make it more);
/// anything bigger is refused with 431 before it can cost memory.
pub const MAX_HEAD_BYTES: usize = 8 * 1024;
/// Most headers we parse; a browser sends about fifteen.
pub const MAX_HEADERS: usize = 48;
/// Bytes read per system call while the head is incomplete.
const READ_CHUNK: usize = 1024;

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct Head {
    /// `GET`, `POST`, …
    pub method: String,
    /// The request target as sent: path and query (`/poll/lobby?since=3`).
    pub target: String,
    /// `0` for HTTP/1.0, `1` for HTTP/1.1 (the only versions we speak).
    pub minor_version: u8,
    /// Header names and values in the order sent. Values that are not UTF-8 are
    /// kept with replacement characters (they never match what we look for).
    pub headers: Vec<(String, String)>,
    /// Bytes the client sent after the head: the body's start, or early frames.
    pub leftover: Vec<u8>,
}

/// Why no head could be read.
#[derive(Debug)]
pub enum HeadError {
    /// The client went away before finishing its head: nothing to answer.
    Gone(io::Error),
    /// The deadline passed first (408, best effort).
    TimedOut,
    /// The head is unacceptable: answer with this status and message, then close.
    Refused(u16, String),
}

impl Head {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of the headers called `name`.
    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path part of the target (`/poll/lobby`).
    pub fn path(&self) -> &str {
        split_target(&self.target).0
    }

    /// The query part of the target, without `?` (`since=3`).
    pub fn query(&self) -> &str {
        split_target(&self.target).1
    }

    /// Whether this is a `HEAD` request (answered without a body).
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// Parses a complete head from `bytes`; bytes after it become `leftover`.
    /// `Ok(None)` means the head is not complete yet.
    ///
    /// # Errors
    /// The status and message to refuse the request with: 400 malformed, 431 too
    /// many headers, 505 an HTTP version other than 1.0 and 1.1 (the HTTP/2 preface
    /// `PRI * HTTP/2.0` included).
    pub fn parse(bytes: &[u8]) -> Result<Option<Head>, (u16, String)> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut headers);
        let head_len = match request.parse(bytes) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err((431, format!("more than {MAX_HEADERS} headers")));
            }
            Err(httparse::Error::Version) => {
                return Err((505, "this server speaks HTTP/1.0 and HTTP/1.1 only".into()));
            }
            Err(e) => return Err((400, format!("malformed HTTP request: {e}"))),
        };
        Ok(Some(Head {
            method: request.method.unwrap_or_default().to_string(),
            target: request.path.unwrap_or_default().to_string(),
            minor_version: request.version.unwrap_or(1),
            headers: request
                .headers
                .iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value).trim().to_string();
                    (h.name.to_string(), value)
                })
                .collect(),
            leftover: bytes[head_len..].to_vec(),
        }))
    }
}

/// Reads one request head from `socket` before `deadline`.
///
/// # Errors
/// See [`HeadError`]: the client left, the deadline passed, or the head is refused
/// (too large: 431; malformed: 400; not HTTP/1.x: 505).
pub fn read_head(socket: &Socket, deadline: Instant) -> Result<Head, HeadError> {
    let mut buf = Vec::with_capacity(READ_CHUNK);
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        // Each read may wait only for what is left of the deadline, so a client that
        // sends one byte at a time still cannot hold us past it.
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::TimedOut);
        }
        socket
            .set_read_timeout(Some(left))
            .map_err(HeadError::Gone)?;
        let n = match (&*socket).read(&mut chunk) {
            Ok(0) => return Err(HeadError::Gone(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => n,
            Err(e) if is_timeout(&e) => return Err(HeadError::TimedOut),
            Err(e) => return Err(HeadError::Gone(e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        match Head::parse(&buf) {
            Ok(Some(head)) => return Ok(head),
            Ok(None) if buf.len() < MAX_HEAD_BYTES => continue,
            Ok(None) => {
                return Err(HeadError::Refused(
                    431,
                    format!("request head larger than {MAX_HEAD_BYTES} bytes"),
                ));
            }
            Err((status, message)) => return Err(HeadError::Refused(status, message)),
        }
    }
}

/// Whether an I/O error is a socket timeout (Linux reports `WouldBlock`).
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_head_is_parsed_and_the_rest_kept() {
        let head = Head::parse(
            b"POST /publish/a?cid=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.method, "POST");
        assert_eq!((head.path(), head.query()), ("/publish/a", "cid=1"));
        assert_eq!(head.header("content-length"), Some("2"));
        assert_eq!(head.leftover, b"hi");
    }

    #[test]
    fn an_incomplete_head_asks_for_more() {
        assert!(
            Head::parse(b"GET / HTTP/1.1\r\nHost: x\r\n")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn http2_and_unknown_versions_get_505() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        assert_eq!(Head::parse(preface).unwrap_err().0, 505);
        assert_eq!(Head::parse(b"GET / HTTP/2.0\r\n\r\n").unwrap_err().0, 505);
        assert_eq!(
            Head::parse(b"GET / HTTP/1.1\r\n\r\n")
                .unwrap()
                .unwrap()
                .minor_version,
            1
        );
    }

    #[test]
    fn too_many_headers_get_431_and_garbage_400() {
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: y\r\n"))
            .collect();
        let request = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(Head::parse(request.as_bytes()).unwrap_err().0, 431);
        assert_eq!(
            Head::parse(b"\x16\x03\x01\x00\xa5\x01\r\n\r\n")
                .unwrap_err()
                .0,
            400
        );
    }
}
