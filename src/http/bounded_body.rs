//! A response body written through a bounded buffer ([`BoundedBody`]): what SSE
//! streams and long polls write with. The buffer is sent on whenever it holds
//! [`BODY_BOUND`] bytes, so a replay of a whole history — up to six times its size as
//! JSON (`json::MAX_ESCAPE_FACTOR`) — never sits in memory whole, however slowly the
//! client reads. Its head goes out with a `Content-Length` when the body turns out
//! short, chunked (or until close, for HTTP/1.0) when it does not.

use std::fmt;
use std::io;
use std::sync::Arc;

use crate::budget::{Budget, Category, Reservation};
use crate::http::reply::write_all_by;
use crate::http::response_head::{Patience, ResponseFraming};
use crate::net::socket::Socket;

/// Most body bytes a `BoundedBody` holds: once its buffer has this many it sends
/// them on (one HTTP chunk). Large enough that a long replay costs few system calls
/// and TLS records, small enough that thousands of connections replaying at once
/// cost little memory.
pub const BODY_BOUND: usize = 64 * 1024;

/// Room kept free at the front of the buffer for a chunk's size line: up to 16 hex
/// digits and CRLF. Writing it there sends a whole chunk with one write, without
/// copying the body behind a header.
const CHUNK_HEADER_ROOM: usize = 16 + 2;

/// What a stream's buffer keeps between batches: room for the ordinary small events
/// without growing. After a large batch it shrinks back to this.
const IDLE_BUFFER_BYTES: usize = 4 * 1024;

/// A response body written as it is produced, holding at most [`BODY_BOUND`] bytes of
/// it: text goes into a buffer, and whenever the buffer is full it is sent on.
///
/// The response head is held back until the first bytes of the body must go: an
/// answer that ends before that (most do) goes out whole, with a `Content-Length`,
/// exactly as [`Reply`](crate::http::reply::Reply) would send it; a longer one gets its [`ResponseFraming`]. It is a
/// [`fmt::Write`], so JSON and events are formatted straight into it; a failed write
/// is kept and returned by [`BoundedBody::write`].
#[derive(Debug)]
pub struct BoundedBody<'a> {
    socket: &'a Socket,
    framing: ResponseFraming,
    patience: Patience,
    /// The response head (without framing and blank line), until it is sent.
    held_head: Option<String>,
    /// Count the body but send none of it (the answer to `HEAD`).
    head_only: bool,
    /// [`CHUNK_HEADER_ROOM`] bytes kept free, then the body bytes not yet sent.
    buffer: Vec<u8>,
    /// Body bytes already sent (or counted, for `HEAD`).
    sent: usize,
    /// The write error behind the last `fmt::Error` (which cannot carry one).
    error: Option<io::Error>,
    /// The memory budget a buffer larger than [`IDLE_BUFFER_BYTES`] is charged to.
    budget: Option<Arc<Budget>>,
    /// The charge for a buffer of [`BODY_BOUND`], held while a large batch is written.
    charge: Option<Reservation>,
}

impl<'a> BoundedBody<'a> {
    /// A body for `socket`, behind `head` (see [`response_head`](crate::http::response_head::response_head)).
    pub fn new(
        socket: &'a Socket,
        head: String,
        framing: ResponseFraming,
        patience: Patience,
    ) -> Self {
        BoundedBody {
            socket,
            framing,
            patience,
            held_head: Some(head),
            head_only: false,
            buffer: vec![0; CHUNK_HEADER_ROOM],
            sent: 0,
            error: None,
            budget: None,
            charge: None,
        }
    }

    /// Charges the buffer to `budget` while it holds more than an idle stream's few
    /// bytes. When the budget cannot take [`BODY_BOUND`], the body is sent in pieces of
    /// `IDLE_BUFFER_BYTES` (4 KiB) instead: slower, never refused.
    #[must_use]
    pub fn charged_to(mut self, budget: &Arc<Budget>) -> Self {
        self.budget = Some(Arc::clone(budget));
        self
    }

    /// How many body bytes the buffer may hold now.
    fn bound(&mut self) -> usize {
        let Some(budget) = &self.budget else {
            return BODY_BOUND;
        };
        if self.charge.is_none() {
            self.charge = budget.try_reserve(Category::Replay, BODY_BOUND);
        }
        if self.charge.is_some() {
            BODY_BOUND
        } else {
            IDLE_BUFFER_BYTES
        }
    }

    /// Counts the body but sends none of it: the answer to a `HEAD` request, whose
    /// `Content-Length` is still the length the body would have.
    #[must_use]
    pub fn without_body(mut self) -> Self {
        self.head_only = true;
        self
    }

    /// Writes what `produce` formats into the body, sending it on whenever the buffer
    /// is full.
    ///
    /// # Errors
    /// The socket's error, or `TimedOut` when the client does not read in time.
    pub fn write(&mut self, produce: impl FnOnce(&mut Self) -> fmt::Result) -> io::Result<()> {
        produce(self).map_err(|fmt::Error| {
            self.error
                .take()
                .unwrap_or_else(|| io::Error::other("formatting failed"))
        })
    }

    /// Sends what is buffered (the head first, if still held back) and lets the buffer
    /// shrink back after a large batch: what a stream does between batches.
    ///
    /// # Errors
    /// As [`BoundedBody::write`].
    pub fn end_batch(&mut self) -> io::Result<()> {
        self.flush()?;
        self.buffer.shrink_to(IDLE_BUFFER_BYTES);
        self.charge = None;
        Ok(())
    }

    /// Sends the rest and ends the body: the whole answer with its `Content-Length` if
    /// the head was still held back, else the last chunk and the zero-length one
    /// ([`ResponseFraming::Chunked`]) or nothing more ([`ResponseFraming::UntilClose`]).
    ///
    /// # Errors
    /// As [`BoundedBody::write`].
    pub fn finish(&mut self) -> io::Result<()> {
        if let Some(head) = self.held_head.take() {
            return self.send_whole(&head);
        }
        self.flush()?;
        match self.framing {
            ResponseFraming::Chunked => self.send(b"0\r\n\r\n"),
            ResponseFraming::UntilClose => Ok(()),
        }
    }

    /// Body bytes in the buffer.
    fn buffered(&self) -> usize {
        self.buffer.len() - CHUNK_HEADER_ROOM
    }

    /// Adds `text` to the buffer, sending the buffer on each time it fills. A long
    /// text is cut into pieces (between characters) so the bound always holds.
    fn push(&mut self, mut text: &str) -> io::Result<()> {
        while !text.is_empty() {
            let bound = self.bound();
            let cut = floor_char_boundary(text, bound - self.buffered());
            self.buffer.extend_from_slice(&text.as_bytes()[..cut]);
            text = &text[cut..];
            if !text.is_empty() || self.buffered() >= bound {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Sends the buffered bytes now, after the head if it was still held back.
    fn flush(&mut self) -> io::Result<()> {
        let buffered = self.buffered();
        if self.head_only {
            self.sent += buffered;
            self.buffer.truncate(CHUNK_HEADER_ROOM);
            return Ok(());
        }
        if let Some(head) = self.held_head.take() {
            self.send(format!("{head}{}\r\n", self.framing.header()).as_bytes())?;
        }
        if buffered > 0 {
            let start = match self.framing {
                ResponseFraming::Chunked => self.frame_chunk(),
                ResponseFraming::UntilClose => CHUNK_HEADER_ROOM,
            };
            self.send(&self.buffer[start..])?;
            self.sent += buffered;
        }
        self.buffer.truncate(CHUNK_HEADER_ROOM);
        Ok(())
    }

    /// Makes the buffer one HTTP chunk (`<size in hex>\r\n<bytes>\r\n`): the size line
    /// goes into the room in front, the CRLF after. Returns where the chunk starts.
    fn frame_chunk(&mut self) -> usize {
        let size_line = format!("{:x}\r\n", self.buffered());
        let start = CHUNK_HEADER_ROOM - size_line.len();
        self.buffer[start..CHUNK_HEADER_ROOM].copy_from_slice(size_line.as_bytes());
        self.buffer.extend_from_slice(b"\r\n");
        start
    }

    /// The whole answer at once: `head`, its `Content-Length`, and the body (all of it
    /// is in the buffer, or for `HEAD` was counted).
    fn send_whole(&mut self, head: &str) -> io::Result<()> {
        let length = self.sent + self.buffered();
        let mut whole = format!("{head}Content-Length: {length}\r\n\r\n").into_bytes();
        if !self.head_only {
            whole.extend_from_slice(&self.buffer[CHUNK_HEADER_ROOM..]);
        }
        self.buffer.truncate(CHUNK_HEADER_ROOM);
        self.send(&whole)
    }

    fn send(&self, bytes: &[u8]) -> io::Result<()> {
        write_all_by(self.socket, bytes, self.patience.deadline())
    }
}

impl fmt::Write for BoundedBody<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.push(text).map_err(|e| {
            self.error = Some(e);
            fmt::Error
        })
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends between characters.
fn floor_char_boundary(text: &str, max: usize) -> usize {
    if max >= text.len() {
        return text.len();
    }
    // A character is at most 4 bytes, so this steps back at most 3 times.
    (0..=max)
        .rev()
        .find(|&at| text.is_char_boundary(at))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write as _;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    /// A server-side [`Socket`] and the client's end of the same connection.
    fn pair() -> (Socket, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (Socket::Plain(server), client)
    }

    /// Writes `pieces` through a body with `framing` (and `HEAD` if `head_only`), then
    /// returns everything the client received.
    fn written(framing: ResponseFraming, head_only: bool, pieces: &[&str]) -> String {
        let (socket, mut client) = pair();
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            client.read_to_string(&mut all).unwrap();
            all
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut body = BoundedBody::new(
            &socket,
            "HTTP/1.1 200 OK\r\n".into(),
            framing,
            Patience::Until(deadline),
        );
        if head_only {
            body = body.without_body();
        }
        for piece in pieces {
            body.write(|out| out.write_str(piece)).unwrap();
        }
        body.finish().unwrap();
        drop(socket);
        reader.join().unwrap()
    }

    /// Splits a chunked body into its chunks, checking the framing.
    fn chunks(mut body: &str) -> Vec<&str> {
        let mut chunks = Vec::new();
        loop {
            let (size, rest) = body.split_once("\r\n").expect("a size line");
            let size = usize::from_str_radix(size, 16).unwrap();
            if size == 0 {
                assert_eq!(rest, "\r\n", "nothing after the last chunk");
                return chunks;
            }
            chunks.push(&rest[..size]);
            body = rest[size..]
                .strip_prefix("\r\n")
                .expect("CRLF after a chunk");
        }
    }

    #[test]
    fn a_short_body_goes_out_whole_with_its_length() {
        for framing in [ResponseFraming::Chunked, ResponseFraming::UntilClose] {
            assert_eq!(
                written(framing, false, &["{\"a\":", "1}"]),
                "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
            );
        }
        assert_eq!(
            written(ResponseFraming::Chunked, true, &["{\"a\":", "1}"]),
            "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"
        );
    }

    #[test]
    fn a_long_body_is_sent_in_chunks_of_at_most_the_bound() {
        // 300 KiB, with two-byte characters so that some cuts fall inside one.
        let text = "é".repeat(150 * 1024);
        let all = written(ResponseFraming::Chunked, false, &["x", &text, "y"]);
        let (head, body) = all.split_once("\r\n\r\n").unwrap();
        assert_eq!(head, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked");
        let chunks = chunks(body);
        assert!(chunks.len() >= 5, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|c| c.len() <= BODY_BOUND));
        assert_eq!(chunks.concat(), format!("x{text}y"));
    }

    #[test]
    fn http_1_0_gets_the_bytes_as_they_are_until_the_connection_ends() {
        let text = "z".repeat(3 * BODY_BOUND + 1);
        let all = written(ResponseFraming::UntilClose, false, &[&text]);
        assert_eq!(all, format!("HTTP/1.1 200 OK\r\n\r\n{text}"));
        assert_eq!(
            written(ResponseFraming::Chunked, true, &[&text]),
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", text.len())
        );
    }

    #[test]
    fn the_cut_falls_between_characters() {
        assert_eq!(floor_char_boundary("aé", 2), 1);
        assert_eq!(floor_char_boundary("aé", 3), 3);
        assert_eq!(floor_char_boundary("aé", 9), 3);
        assert_eq!(floor_char_boundary("é", 1), 0);
    }
}
