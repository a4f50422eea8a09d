//! Server-Sent Events: `GET /events/<room>`, the fallback for browsers that cannot
//! open a WebSocket (a proxy in the way). The connection's own thread streams the
//! room, joined to the hub as an enveloped member like a WebSocket.
//!
//! We write the response head ourselves and send each batch of events as HTTP chunks
//! (`Transfer-Encoding: chunked`), flushed at once. Chunking also lets the stream
//! *end* (a zero-length chunk) on a connection the browser keeps alive.
//!
//! Both SSE and long polling write through a [`BoundedBody`]: a buffer that is sent on
//! whenever it holds [`BODY_BOUND`] bytes. A replay of a whole history is up to six
//! times its size as JSON (`json::MAX_ESCAPE_FACTOR`), yet a stream or poll never
//! holds more than the bound of it, however large the replay and however slowly the
//! client reads.

use std::fmt::{self, Write as _};
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use crate::budget::{Budget, Category, Reservation};
use crate::context::Shared;
use crate::http::reply::{Reply, close_gently, write_all_by};
use crate::http::{Exchange, browser};
use crate::hub::{CloseSignal, Outgoing, QueueEnd, Queued};
use crate::limit::WRITE_TIMEOUT;
use crate::protocol::envelope;
use crate::room::{Resume, RoomMessage};
use crate::stream::Stream;

/// A comment line this often keeps proxies and load balancers from closing a quiet
/// stream (many close after 30–60 s of silence).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// At shutdown, owed events are written until this long before the drain deadline;
/// the rest of the time is for `event: close` and the end of the body.
pub const CLOSE_RESERVE: Duration = Duration::from_millis(500);
/// How long the browser waits before reconnecting a dropped stream (`retry:`), in ms.
pub const RETRY_MILLIS: u64 = 2000;

/// Most body bytes a [`BoundedBody`] holds: once its buffer has this many it sends
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

/// `GET /events/<room>`: checks the room, the token and the connection limit, then
/// streams on this thread until the client goes away or the server shuts down.
pub fn start(exchange: Exchange) {
    let admitted = match crate::http::poll::admit(&exchange) {
        Ok(admitted) => admitted,
        Err(reply) => return exchange.answer(reply),
    };
    let cors = browser::cors_headers(&exchange.head, &exchange.shared.policy);
    exchange.log(200);
    let Exchange { conn, shared, .. } = exchange;
    let Some(stream) = conn.finish() else {
        return; // cut off meanwhile (shutdown, or too many requests in progress)
    };
    let _slot = admitted.slot;
    serve(&stream, &admitted.room, admitted.resume, shared, &cors);
    close_gently(&stream);
}

/// Streams `room` to the client until it goes away or the server shuts down.
fn serve(stream: &Stream, room: &str, resume: Resume, shared: &Shared, cors: &[(&str, String)]) {
    let Some(member) = shared.join(room, resume) else {
        Reply::text(503, "server shutting down").send(stream, false);
        return;
    };
    let id = member.id;
    let _gauge = shared.counters.sse_streams.enter();
    log::debug!("SSE stream {id} opened for room '{room}'");

    let head = response_head(
        "Content-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n\
         X-Accel-Buffering: no\r\n",
        cors,
    );
    // Each write must make progress within WRITE_TIMEOUT: a client that stops reading
    // ends its own stream instead of holding this thread.
    let mut body = BoundedBody::new(
        stream,
        head,
        Framing::Chunked,
        Patience::EachWrite(WRITE_TIMEOUT),
    )
    .charged_to(&shared.budget);
    if let Err(e) = stream_events(&mut body, &member.queue, &member.close) {
        log::debug!("SSE stream {id} ended: {e}");
    }
}

/// The stream itself: `retry:`, then every queued item as events, a batch at a time,
/// with a keep-alive comment in quiet times. Ends the body (the zero-length chunk)
/// when the hub lets go of the queue or the server asks for a close.
fn stream_events(body: &mut BoundedBody, queue: &QueueEnd, close: &CloseSignal) -> io::Result<()> {
    body.write(|out| write!(out, "retry: {RETRY_MILLIS}\n\n"))?;
    body.end_batch()?;
    loop {
        let item = match queue.recv_timeout(KEEP_ALIVE) {
            Ok(item) => item,
            Err(RecvTimeoutError::Timeout) => {
                body.write(|out| out.write_str(": keep-alive\n\n"))?;
                body.end_batch()?;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // This item and whatever else is already queued go out as one batch: one
        // chunk, or several of at most BODY_BOUND bytes for a long replay.
        for item in std::iter::once(item).chain(queue.try_iter()) {
            match close.queued() {
                None => body.write(|out| write_event(out, item))?,
                // A slow consumer: what is queued is dropped, the client resumes later.
                Some(Queued::Drop) => return close_stream(body),
                // A shutdown: every queued message was accepted and acknowledged to its
                // publisher, so the client is owed it; the hub queues nothing more.
                Some(Queued::SendBy(deadline)) => {
                    let owed = std::iter::once(item).chain(queue.try_iter());
                    for item in owed.take_while(|_| Instant::now() + CLOSE_RESERVE < deadline) {
                        body.write(|out| write_event(out, item))?;
                    }
                    return close_stream(body);
                }
            }
        }
        body.end_batch()?;
    }
    body.finish()
}

/// Tells the client the server is closing the stream, and ends the body.
fn close_stream(body: &mut BoundedBody) -> io::Result<()> {
    body.write(|out| out.write_str("event: close\ndata: server closing this stream\n\n"))?;
    body.finish()
}

/// The head of a `200` answer written with a [`BoundedBody`]: the status line, the
/// `fixed` header lines (each ending in CRLF), `nosniff`, the `extra` headers (CORS),
/// and `Connection: close`; the body adds its framing header and the blank line.
pub fn response_head(fixed: &str, extra: &[(&str, String)]) -> String {
    let mut head = format!("HTTP/1.1 200 OK\r\n{fixed}X-Content-Type-Options: nosniff\r\n");
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Connection: close\r\n");
    head
}

/// How the client learns where a body written by a [`BoundedBody`] ends, once it is
/// too long to announce its length up front.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `Transfer-Encoding: chunked` (HTTP/1.1): each piece as one chunk, the end as a
    /// zero-length chunk.
    Chunked,
    /// HTTP/1.0 knows no chunks: the bytes as they are, and the body ends with the
    /// connection (which we close after every answer anyway).
    UntilClose,
}

impl Framing {
    /// The framing an HTTP/1.`minor_version` client understands.
    pub fn for_version(minor_version: u8) -> Framing {
        if minor_version >= 1 {
            Framing::Chunked
        } else {
            Framing::UntilClose
        }
    }

    /// The header line that says so (none for a body that ends with the connection).
    fn header(self) -> &'static str {
        match self {
            Framing::Chunked => "Transfer-Encoding: chunked\r\n",
            Framing::UntilClose => "",
        }
    }
}

/// How long a [`BoundedBody`] may take to write.
#[derive(Clone, Copy, Debug)]
pub enum Patience {
    /// Each write within this long: a stream lasts as long as its client keeps reading.
    EachWrite(Duration),
    /// Everything by this instant: an answer has a deadline.
    Until(Instant),
}

impl Patience {
    /// When the write starting now must be done.
    fn deadline(self) -> Instant {
        match self {
            Patience::EachWrite(timeout) => Instant::now() + timeout,
            Patience::Until(deadline) => deadline,
        }
    }
}

/// A response body written as it is produced, holding at most [`BODY_BOUND`] bytes of
/// it: text goes into a buffer, and whenever the buffer is full it is sent on.
///
/// The response head is held back until the first bytes of the body must go: an
/// answer that ends before that (most do) goes out whole, with a `Content-Length`,
/// exactly as [`Reply`] would send it; a longer one gets its [`Framing`]. It is a
/// [`fmt::Write`], so JSON and events are formatted straight into it; a failed write
/// is kept and returned by [`BoundedBody::write`].
#[derive(Debug)]
pub struct BoundedBody<'a> {
    stream: &'a Stream,
    framing: Framing,
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
    /// A body for `stream`, behind `head` (see [`response_head`]).
    pub fn new(stream: &'a Stream, head: String, framing: Framing, patience: Patience) -> Self {
        BoundedBody {
            stream,
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
    /// ([`Framing::Chunked`]) or nothing more ([`Framing::UntilClose`]).
    ///
    /// # Errors
    /// As [`BoundedBody::write`].
    pub fn finish(&mut self) -> io::Result<()> {
        if let Some(head) = self.held_head.take() {
            return self.send_whole(&head);
        }
        self.flush()?;
        match self.framing {
            Framing::Chunked => self.send(b"0\r\n\r\n"),
            Framing::UntilClose => Ok(()),
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
                Framing::Chunked => self.frame_chunk(),
                Framing::UntilClose => CHUNK_HEADER_ROOM,
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
        write_all_by(self.stream, bytes, self.patience.deadline())
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

/// One queued item as SSE events (see docs/PROTOCOL.md).
fn write_event(out: &mut impl fmt::Write, item: Outgoing) -> fmt::Result {
    match item {
        Outgoing::Room(message) => write_message(out, &message),
        Outgoing::Joined(joined) => {
            let plan = &joined.plan;
            write!(
                out,
                "event: welcome\ndata: {}\n\n",
                envelope::welcome_json(&joined.room, &plan.welcome())
            )?;
            if let Some((from, to)) = plan.gap {
                write!(
                    out,
                    "event: gap\ndata: {}\n\n",
                    envelope::gap_json(from, to)
                )?;
            }
            plan.replay
                .iter()
                .try_for_each(|message| write_message(out, message))
        }
        Outgoing::Notice(notice) => {
            let kind = if matches!(*notice, crate::hub::Notice::Members(_)) {
                "members"
            } else {
                "ack"
            };
            write!(out, "event: {kind}\ndata: {}\n\n", notice.json())
        }
        _ => Ok(()),
    }
}

/// One room message as an event. Its JSON is one line: newlines inside the payload
/// are escaped, so the event's data arrives byte for byte. It is written piece by
/// piece, never held whole.
fn write_message(out: &mut impl fmt::Write, message: &RoomMessage) -> fmt::Result {
    let kind = if message.raw.is_text() {
        "message"
    } else {
        "binary"
    };
    write!(
        out,
        "id: {}\nevent: {kind}\ndata: ",
        envelope::event_id(message.epoch, message.id)
    )?;
    envelope::write_message_json(out, message.header(), &message.raw)?;
    out.write_str("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};

    /// A server-side [`Stream`] and the client's end of the same connection.
    fn pair() -> (Stream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (Stream::Plain(server), client)
    }

    /// Writes `pieces` through a body with `framing` (and `HEAD` if `head_only`), then
    /// returns everything the client received.
    fn written(framing: Framing, head_only: bool, pieces: &[&str]) -> String {
        let (stream, mut client) = pair();
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            client.read_to_string(&mut all).unwrap();
            all
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut body = BoundedBody::new(
            &stream,
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
        drop(stream);
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
        for framing in [Framing::Chunked, Framing::UntilClose] {
            assert_eq!(
                written(framing, false, &["{\"a\":", "1}"]),
                "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n{\"a\":1}"
            );
        }
        assert_eq!(
            written(Framing::Chunked, true, &["{\"a\":", "1}"]),
            "HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n"
        );
    }

    #[test]
    fn a_long_body_is_sent_in_chunks_of_at_most_the_bound() {
        // 300 KiB, with two-byte characters so that some cuts fall inside one.
        let text = "é".repeat(150 * 1024);
        let all = written(Framing::Chunked, false, &["x", &text, "y"]);
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
        let all = written(Framing::UntilClose, false, &[&text]);
        assert_eq!(all, format!("HTTP/1.1 200 OK\r\n\r\n{text}"));
        assert_eq!(
            written(Framing::Chunked, true, &[&text]),
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
