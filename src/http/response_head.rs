//! What a streamed answer (SSE, a long poll's batch) says before its body: the head
//! of a `200` ([`response_head`]), how the body's end is marked once it is too long to
//! announce its length ([`ResponseFraming`]), and how long its writes may take
//! ([`Patience`]). The body itself is written by `bounded_body.rs`.

use std::time::{Duration, Instant};

/// The head of a `200` answer written with a [`BoundedBody`](crate::http::bounded_body::BoundedBody): the status line, the
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

/// How the client learns where a body written by a [`BoundedBody`](crate::http::bounded_body::BoundedBody) ends, once it is
/// too long to announce its length up front.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFraming {
    /// `Transfer-Encoding: chunked` (HTTP/1.1): each piece as one chunk, the end as a
    /// zero-length chunk.
    Chunked,
    /// HTTP/1.0 knows no chunks: the bytes as they are, and the body ends with the
    /// connection (which we close after every answer anyway).
    UntilClose,
}

impl ResponseFraming {
    /// The framing an HTTP/1.`minor_version` client understands.
    pub fn for_version(minor_version: u8) -> ResponseFraming {
        if minor_version >= 1 {
            ResponseFraming::Chunked
        } else {
            ResponseFraming::UntilClose
        }
    }

    /// The header line that says so (none for a body that ends with the connection).
    pub(super) fn header(self) -> &'static str {
        match self {
            ResponseFraming::Chunked => "Transfer-Encoding: chunked\r\n",
            ResponseFraming::UntilClose => "",
        }
    }
}

/// How long a [`BoundedBody`](crate::http::bounded_body::BoundedBody) may take to write.
#[derive(Clone, Copy, Debug)]
pub enum Patience {
    /// Each write within this long: a stream lasts as long as its client keeps reading.
    EachWrite(Duration),
    /// Everything by this instant: an answer has a deadline.
    Until(Instant),
}

impl Patience {
    /// When the write starting now must be done.
    pub(super) fn deadline(self) -> Instant {
        match self {
            Patience::EachWrite(timeout) => Instant::now() + timeout,
            Patience::Until(deadline) => deadline,
        }
    }
}
