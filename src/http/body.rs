//! Reading a request body, with every length checked before a byte of it is read.
//!
//! A body is framed one of two ways (RFC 9112 §6):
//!
//! - `Content-Length: N`: exactly N bytes follow the head. We refuse N above the
//!   limit with 413 *without reading*, so a client claiming a terabyte costs nothing.
//! - `Transfer-Encoding: chunked`: a series of chunks, each a hexadecimal size line
//!   and that many bytes, ending with a zero-size chunk. The sizes are added up as they
//!   arrive, and a size line may be at most [`MAX_CHUNK_LINE`] bytes long.
//!
//! A request with both is refused (400): two framings that disagree are how request
//! smuggling through proxies works. The whole body must arrive before a deadline.

use std::io::Read;
use std::time::Instant;

use super::head::{Head, is_timeout};
use crate::budget::{RECLAIM_WAIT, Reservation};
use crate::net::socket::Socket;

/// Longest chunk-size line (`1a2b;ext=value\r\n`). A size fits in 16 hex digits;
/// the rest is room for chunk extensions, which we ignore.
pub const MAX_CHUNK_LINE: usize = 256;
/// Longest trailer section after the last chunk (headers we ignore).
pub const MAX_TRAILERS: usize = 4 * 1024;

/// How the body is framed.
#[derive(Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Why a body could not be read; each maps to the status to answer with.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// 400: framing we refuse or cannot parse.
    Malformed(String),
    /// 413: larger than the limit.
    TooLarge(usize),
    /// 408: the deadline passed.
    TimedOut,
    /// 503: the memory budget cannot take the body, even after the hub freed memory.
    Busy,
    /// The client went away: nothing to answer.
    Gone,
}

impl BodyError {
    /// The HTTP status and message for this error (`None`: nobody to answer).
    pub fn status(&self) -> Option<(u16, String)> {
        match self {
            BodyError::Malformed(why) => Some((400, why.clone())),
            BodyError::TooLarge(limit) => Some((413, format!("body larger than {limit} bytes"))),
            BodyError::TimedOut => Some((408, "the request body did not arrive in time".into())),
            BodyError::Busy => Some((
                503,
                "server busy: its memory budget cannot take this body now; try again later".into(),
            )),
            BodyError::Gone => None,
        }
    }
}

/// Decides how the body is framed and checks a declared length against `limit`,
/// all before reading any of it.
///
/// # Errors
/// 400 for both framings at once, an unknown transfer coding, or a bad or
/// ambiguous `Content-Length`; 413 for a declared length above `limit`.
pub fn framing(head: &Head, limit: usize) -> Result<Framing, BodyError> {
    let lengths: Vec<&str> = head.headers_named("Content-Length").collect();
    let codings: Vec<&str> = head.headers_named("Transfer-Encoding").collect();
    if !lengths.is_empty() && !codings.is_empty() {
        return Err(BodyError::Malformed(
            "Content-Length and Transfer-Encoding together are refused".into(),
        ));
    }
    if !codings.is_empty() {
        let chunked = codings.len() == 1 && codings[0].trim().eq_ignore_ascii_case("chunked");
        if !chunked || head.minor_version == 0 {
            return Err(BodyError::Malformed(
                "the only transfer coding accepted is chunked (HTTP/1.1)".into(),
            ));
        }
        return Ok(Framing::Chunked);
    }
    let Some(first) = lengths.first() else {
        return Ok(Framing::Empty);
    };
    // Repeated headers (or `5, 5`) must all say the same number (RFC 9112 §6.3).
    let mut declared = None;
    for value in lengths.iter().flat_map(|v| v.split(',')) {
        let value = value.trim();
        if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BodyError::Malformed(format!(
                "bad Content-Length '{first}'"
            )));
        }
        // Anything that does not fit in a u64 is certainly above the limit.
        let n = value.parse::<u64>().unwrap_or(u64::MAX);
        if declared.is_some_and(|d| d != n) {
            return Err(BodyError::Malformed(
                "conflicting Content-Length values".into(),
            ));
        }
        declared = Some(n);
    }
    match declared {
        Some(n) if n > limit as u64 => Err(BodyError::TooLarge(limit)),
        Some(0) | None => Ok(Framing::Empty),
        Some(n) => Ok(Framing::Length(n as usize)),
    }
}

/// Reads the body framed as `framing`, starting with the bytes already read after
/// the head, before `deadline`. Never holds more than `limit` body bytes, and charges
/// the buffers it fills to `charge` (the memory budget's `reading`) as they grow.
///
/// # Errors
/// See [`BodyError`].
pub fn read_body(
    socket: &Socket,
    leftover: &[u8],
    framing: &Framing,
    limit: usize,
    deadline: Instant,
    charge: &mut Reservation,
) -> Result<Vec<u8>, BodyError> {
    let mut input = Input {
        socket,
        buf: leftover.to_vec(),
        deadline,
        charge,
        body_capacity: 0,
    };
    match framing {
        Framing::Empty => Ok(Vec::new()),
        Framing::Length(n) => {
            // The length is known and within the limit: one buffer of exactly that
            // size, charged whole before a byte of it is read.
            input.cover(*n)?;
            input.buf.reserve_exact(n.saturating_sub(input.buf.len()));
            input.take(*n)
        }
        Framing::Chunked => read_chunked(&mut input, limit),
    }
}

/// `<hex size>[;extensions]\r\n<bytes>\r\n` … `0\r\n<trailers>\r\n`.
fn read_chunked(input: &mut Input, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut body = Vec::new();
    loop {
        let line = input.line(MAX_CHUNK_LINE, "chunk-size line")?;
        let size = match httparse::parse_chunk_size(&line) {
            Ok(httparse::Status::Complete((_, size))) => size,
            _ => return Err(BodyError::Malformed("bad chunk-size line".into())),
        };
        if size == 0 {
            break;
        }
        if size > (limit - body.len()) as u64 {
            return Err(BodyError::TooLarge(limit));
        }
        body.extend(input.take(size as usize)?);
        input.body_capacity = body.capacity();
        if input.line(2, "chunk end")? != b"\r\n" {
            return Err(BodyError::Malformed("a chunk must end with CRLF".into()));
        }
    }
    // Trailer fields until a blank line; read and ignored, but bounded.
    let mut trailers = 0;
    loop {
        let line = input.line(MAX_TRAILERS, "trailer")?;
        trailers += line.len();
        if line == b"\r\n" {
            return Ok(body);
        }
        if trailers > MAX_TRAILERS {
            return Err(BodyError::Malformed("trailers too large".into()));
        }
    }
}

/// The socket with the bytes read but not yet used, the deadline, and the charge on
/// the memory budget for both buffers (this one and the body being assembled).
struct Input<'a> {
    socket: &'a Socket,
    buf: Vec<u8>,
    deadline: Instant,
    charge: &'a mut Reservation,
    /// Capacity of the chunked body assembled so far.
    body_capacity: usize,
}

impl Input<'_> {
    /// Makes the charge cover at least `bytes` besides the assembled body, waiting a
    /// little for the hub to free memory if the budget is short.
    fn cover(&mut self, bytes: usize) -> Result<(), BodyError> {
        let wanted = bytes + self.body_capacity;
        let more = wanted.saturating_sub(self.charge.bytes());
        if more > 0 && !self.charge.grow_within(more, RECLAIM_WAIT) {
            return Err(BodyError::Busy);
        }
        Ok(())
    }

    /// Reads more bytes (at most `want`) into the buffer.
    fn fill(&mut self, want: usize) -> Result<(), BodyError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(BodyError::TimedOut);
        }
        if self.socket.set_read_timeout(Some(left)).is_err() {
            return Err(BodyError::Gone);
        }
        let mut chunk = [0u8; 8 * 1024];
        let want = want.clamp(1, chunk.len());
        match (&*self.socket).read(&mut chunk[..want]) {
            Ok(0) => Err(BodyError::Gone),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.cover(self.buf.capacity())
            }
            Err(e) if is_timeout(&e) => Err(BodyError::TimedOut),
            Err(_) => Err(BodyError::Gone),
        }
    }

    /// Exactly `n` bytes.
    fn take(&mut self, n: usize) -> Result<Vec<u8>, BodyError> {
        while self.buf.len() < n {
            self.fill(n - self.buf.len())?;
        }
        let rest = self.buf.split_off(n);
        Ok(std::mem::replace(&mut self.buf, rest))
    }

    /// One line including its `\r\n`, at most `max` bytes.
    fn line(&mut self, max: usize, what: &str) -> Result<Vec<u8>, BodyError> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                if end + 2 > max {
                    break;
                }
                return self.take(end + 2);
            }
            if self.buf.len() >= max {
                break;
            }
            // Read only up to the line's limit, never into what follows it.
            self.fill(max - self.buf.len())?;
        }
        Err(BodyError::Malformed(format!(
            "{what} longer than {max} bytes"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge() -> Reservation {
        let budget = crate::budget::Budget::new(1 << 30);
        budget.force(crate::budget::Category::Reading, 0)
    }

    fn head(headers: &str) -> Head {
        let text = format!("POST /publish/a HTTP/1.1\r\n{headers}\r\n");
        Head::parse(text.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn declared_lengths_are_checked_before_reading() {
        assert_eq!(framing(&head(""), 10), Ok(Framing::Empty));
        assert_eq!(
            framing(&head("Content-Length: 5\r\n"), 10),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            framing(&head("Content-Length: 11\r\n"), 10),
            Err(BodyError::TooLarge(10))
        );
        let huge = head("Content-Length: 18446744073709551615\r\n");
        assert_eq!(framing(&huge, 10), Err(BodyError::TooLarge(10)));
        let beyond = head("Content-Length: 99999999999999999999\r\n");
        assert_eq!(framing(&beyond, 10), Err(BodyError::TooLarge(10)));
        for bad in ["-1", "1e3", "0x10", "", "5 5", "123456789012345678901"] {
            let h = head(&format!("Content-Length: {bad}\r\n"));
            assert!(
                matches!(framing(&h, 10), Err(BodyError::Malformed(_))),
                "{bad}"
            );
        }
        let twice = head("Content-Length: 5\r\nContent-Length: 6\r\n");
        assert!(matches!(framing(&twice, 10), Err(BodyError::Malformed(_))));
        let same = head("Content-Length: 5\r\nContent-Length: 5\r\n");
        assert_eq!(framing(&same, 10), Ok(Framing::Length(5)));
    }

    #[test]
    fn both_framings_or_unknown_codings_are_refused() {
        let both = head("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n");
        assert!(matches!(framing(&both, 10), Err(BodyError::Malformed(_))));
        let gzip = head("Transfer-Encoding: gzip, chunked\r\n");
        assert!(matches!(framing(&gzip, 10), Err(BodyError::Malformed(_))));
        assert_eq!(
            framing(&head("Transfer-Encoding: Chunked\r\n"), 10),
            Ok(Framing::Chunked)
        );
    }

    /// The server side of a loopback pair whose client already sent `bytes`.
    fn sent(bytes: &[u8]) -> (Socket, std::net::TcpStream) {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.write_all(bytes).unwrap();
        (Socket::Plain(listener.accept().unwrap().0), client)
    }

    fn soon() -> Instant {
        Instant::now() + std::time::Duration::from_secs(5)
    }

    #[test]
    fn chunked_bodies_are_joined_and_trailers_skipped() {
        let (socket, _client) = sent(b"llo\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n");
        let body = read_body(
            &socket,
            b"5\r\nhe",
            &Framing::Chunked,
            100,
            soon(),
            &mut charge(),
        );
        assert_eq!(body.unwrap(), b"hello world");
    }

    #[test]
    fn chunked_bodies_are_held_to_the_limit_and_their_lines_to_theirs() {
        let (socket, _c) = sent(b"b\r\nhello world\r\n0\r\n\r\n");
        let body = read_body(&socket, b"", &Framing::Chunked, 10, soon(), &mut charge());
        assert_eq!(body, Err(BodyError::TooLarge(10)));
        let long_line = format!("{}\r\n", "0".repeat(MAX_CHUNK_LINE + 10));
        let (socket, _c) = sent(long_line.as_bytes());
        let body = read_body(&socket, b"", &Framing::Chunked, 10, soon(), &mut charge());
        assert!(matches!(body, Err(BodyError::Malformed(_))), "{body:?}");
        let (socket, _c) = sent(b"zz\r\nab\r\n0\r\n\r\n");
        let body = read_body(&socket, b"", &Framing::Chunked, 10, soon(), &mut charge());
        assert!(matches!(body, Err(BodyError::Malformed(_))), "{body:?}");
    }

    #[test]
    fn a_length_body_stops_at_its_length_and_a_missing_rest_times_out() {
        let (socket, _c) = sent(b"defGET / HTTP/1.1\r\n\r\n");
        let body = read_body(
            &socket,
            b"abc",
            &Framing::Length(6),
            100,
            soon(),
            &mut charge(),
        );
        assert_eq!(body.unwrap(), b"abcdef", "nothing past the body is read");
        let (socket, _c) = sent(b"ab");
        let deadline = Instant::now() + std::time::Duration::from_millis(200);
        let body = read_body(
            &socket,
            b"",
            &Framing::Length(6),
            100,
            deadline,
            &mut charge(),
        );
        assert_eq!(body, Err(BodyError::TimedOut));
    }
}
