//! HTTP answers, written by hand on tiny_http's raw writer, always with
//! `Connection: close`.
//!
//! Why not tiny_http's own `Response`? Its thread pool serves each keep-alive
//! connection on one thread until the client hangs up, and a burst of new connections
//! can queue behind those threads (its pool counts a thread as idle until it has
//! actually woken up). Browsers keep idle connections open for minutes, so a page's
//! fifth or sixth file could wait that long. tiny_http also drops any `Connection`
//! header we set. Writing the answer ourselves lets us say `Connection: close`: the
//! browser hangs up after each answer, and no pool thread is ever held by an idle
//! connection.

use std::io::{self, Cursor, Read, Write};

use tiny_http::{Method, Request};

/// One HTTP answer.
pub struct Reply {
    status: u16,
    content_type: &'static str,
    body: Box<dyn Read + Send>,
    len: usize,
    no_store: bool,
}

impl Reply {
    /// An answer with `len` bytes of `body`.
    pub fn new(
        status: u16,
        content_type: &'static str,
        body: Box<dyn Read + Send>,
        len: usize,
    ) -> Reply {
        Reply {
            status,
            content_type,
            body,
            len,
            no_store: false,
        }
    }

    /// A one-line plain-text answer.
    pub fn text(status: u16, message: &str) -> Reply {
        Reply::bytes(
            status,
            "text/plain; charset=utf-8",
            format!("{message}\n").into_bytes(),
        )
    }

    /// A JSON answer.
    pub fn json(status: u16, json: String) -> Reply {
        Reply::bytes(status, "application/json", json.into_bytes())
    }

    fn bytes(status: u16, content_type: &'static str, body: Vec<u8>) -> Reply {
        let len = body.len();
        Reply::new(status, content_type, Box::new(Cursor::new(body)), len)
    }

    /// Tells caches not to keep it (live data).
    pub fn no_store(mut self) -> Reply {
        self.no_store = true;
        self
    }

    /// Writes the answer (no body for HEAD) and lets the connection close.
    pub fn send(mut self, request: Request) {
        let head_only = *request.method() == Method::Head;
        let mut out = request.into_writer();
        let result = (|| -> io::Result<()> {
            write!(
                out,
                "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
                 X-Content-Type-Options: nosniff\r\n{}Connection: close\r\n\r\n",
                self.status,
                reason_phrase(self.status),
                self.content_type,
                self.len,
                if self.no_store {
                    "Cache-Control: no-store\r\n"
                } else {
                    ""
                },
            )?;
            if !head_only {
                io::copy(&mut self.body.by_ref().take(self.len as u64), &mut out)?;
            }
            out.flush()
        })();
        if let Err(e) = result {
            log::debug!("HTTP client went away before its answer was sent: {e}");
        }
    }
}

/// The reason phrase of a status code.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        202 => "Accepted",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}
