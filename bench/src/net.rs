//! Non-blocking WebSocket client connections driven by one `mio::Poll`.
//!
//! `Net` owns every connection (indexed by its mio token). A mode supplies a
//! `Handler` that is called when a connection opens, when a whole message
//! arrives, and when a connection ends. Pings are answered and close frames
//! are replied to here, so the handlers only see data messages.

use crate::frame::{self, HandshakeStatus, ParseResult};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::collections::BTreeMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Bytes read per `read` call (shared buffer, not per connection).
const READ_CHUNK: usize = 256 * 1024;
/// mio events handled per `poll` call.
const EVENTS_CAPACITY: usize = 4096;
/// A write buffer bigger than this is released once it drains.
const WBUF_SHRINK_ABOVE: usize = 1024 * 1024;
/// Close codes used by this client.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code a server sends to a slow consumer (policy violation).
pub const CLOSE_POLICY: u16 = 1008;
/// Tokens from here on belong to sockets a mode registers itself (through
/// [`Net::registry`], e.g. plain HTTP requests); `poll` leaves their events
/// in [`Net::external`] for the mode, numbered from 0.
pub const EXTERNAL_TOKEN_BASE: usize = 1 << 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Connecting,
    Handshaking,
    Open,
    /// We sent a close frame and wait for the server's reply or EOF.
    Closing,
}

pub struct Conn {
    stream: TcpStream,
    state: State,
    /// Unparsed input: handshake response, or an incomplete frame.
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    /// Opcode and data of a fragmented message being reassembled.
    frag_opcode: u8,
    frag: Vec<u8>,
    rng: u64,
}

/// What a handler may do while handling an event: queue frames on the
/// connection the event is about.
pub struct Outbox<'a> {
    wbuf: &'a mut Vec<u8>,
    rng: &'a mut u64,
}

impl Outbox<'_> {
    pub fn send(&mut self, opcode: u8, payload: &[u8]) {
        let mask = next_mask(self.rng);
        frame::encode_masked(self.wbuf, opcode, payload, mask);
    }
}

fn next_mask(rng: &mut u64) -> [u8; 4] {
    // xorshift64: cheap, and masks only need to vary.
    let mut x = *rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *rng = x;
    (x as u32).to_ne_bytes()
}

pub trait Handler {
    fn on_open(&mut self, id: usize, out: &mut Outbox);
    fn on_message(&mut self, id: usize, opcode: u8, payload: &[u8], out: &mut Outbox);
    /// `code` is the close code the server sent, if it sent a close frame.
    fn on_closed(&mut self, id: usize, was_open: bool, code: Option<u16>, reason: &str);
}

/// What parsing a batch of input decided about the connection.
enum Verdict {
    KeepOpen,
    Closed(Option<u16>, String),
}

pub struct Net {
    poll: Poll,
    events: Events,
    conns: Vec<Option<Conn>>,
    addr: SocketAddr,
    host: String,
    scratch: Vec<u8>,
    next_seed: u64,
    /// Connections whose handshake completed and that have not ended.
    pub open: usize,
    /// Connections started but not yet open.
    pub pending: usize,
    /// Connections that ended before opening.
    pub failed: usize,
    /// Most connections open at once so far.
    pub peak_open: usize,
    /// Connections we sent a close frame on, waiting for the reply.
    pub closing: usize,
    /// Why connections ended, with counts ("eof", "close 1008", ...).
    pub end_reasons: BTreeMap<String, u64>,
    /// Events of the mode's own sockets (token − [`EXTERNAL_TOKEN_BASE`],
    /// readable, writable) from the last `poll`s; the mode drains it.
    pub external: Vec<(usize, bool, bool)>,
}

impl Net {
    pub fn new(addr: SocketAddr) -> io::Result<Net> {
        Ok(Net {
            poll: Poll::new()?,
            events: Events::with_capacity(EVENTS_CAPACITY),
            conns: Vec::new(),
            addr,
            host: addr.to_string(),
            scratch: vec![0; READ_CHUNK],
            next_seed: 0x9E37_79B9_7F4A_7C15,
            open: 0,
            pending: 0,
            failed: 0,
            closing: 0,
            peak_open: 0,
            end_reasons: BTreeMap::new(),
            external: Vec::new(),
        })
    }

    /// Where a mode registers sockets of its own, with tokens from
    /// [`EXTERNAL_TOKEN_BASE`] on.
    pub fn registry(&self) -> &mio::Registry {
        self.poll.registry()
    }

    /// Whether connection `id` still exists (in any state).
    pub fn is_live(&self, id: usize) -> bool {
        matches!(self.conns.get(id), Some(Some(_)))
    }

    pub fn is_open(&self, id: usize) -> bool {
        matches!(self.conns.get(id), Some(Some(c)) if c.state == State::Open)
    }

    fn note_end(&mut self, reason: &str) {
        *self.end_reasons.entry(reason.to_string()).or_insert(0) += 1;
    }

    /// Start connecting to `path`. Returns the connection id, or `None` if the
    /// socket could not even be created (counted as failed).
    pub fn connect(&mut self, path: &str) -> Option<usize> {
        let id = self.conns.len();
        let mut stream = match TcpStream::connect(self.addr) {
            Ok(s) => s,
            Err(e) => {
                self.failed += 1;
                self.note_end(&format!("connect: {}", e.kind()));
                return None;
            }
        };
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(id),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.failed += 1;
            self.note_end(&format!("register: {}", e.kind()));
            return None;
        }
        let _ = stream.set_nodelay(true);
        self.next_seed = self.next_seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.conns.push(Some(Conn {
            stream,
            state: State::Connecting,
            rbuf: Vec::new(),
            wbuf: frame::handshake_request(&self.host, path),
            wpos: 0,
            frag_opcode: 0,
            frag: Vec::new(),
            rng: self.next_seed | 1,
        }));
        self.pending += 1;
        Some(id)
    }

    /// Queue one frame on connection `id` (if it is open) and try to send it.
    pub fn send(&mut self, id: usize, opcode: u8, payload: &[u8]) {
        self.send_with(id, |out| out.send(opcode, payload));
    }

    /// Let `f` queue frames on connection `id` (if it is open), then flush.
    pub fn send_with(&mut self, id: usize, f: impl FnOnce(&mut Outbox)) {
        let Some(Some(c)) = self.conns.get_mut(id) else { return };
        if c.state != State::Open {
            return;
        }
        f(&mut Outbox { wbuf: &mut c.wbuf, rng: &mut c.rng });
        if let Err(e) = flush(c) {
            self.end(id, None, &format!("write: {}", e.kind()), None);
        }
    }

    /// Start a clean close of connection `id` with `code`.
    pub fn close(&mut self, id: usize, code: u16) {
        let Some(Some(c)) = self.conns.get_mut(id) else { return };
        if c.state != State::Open {
            return;
        }
        let mask = next_mask(&mut c.rng);
        frame::encode_masked(&mut c.wbuf, frame::OP_CLOSE, &code.to_be_bytes(), mask);
        c.state = State::Closing;
        self.open -= 1;
        self.closing += 1;
        if let Err(e) = flush(c) {
            self.end(id, None, &format!("write: {}", e.kind()), None);
        }
    }

    /// Drop every remaining connection without a handshake (after a close
    /// timeout, or for connections that never opened).
    pub fn drop_all(&mut self, reason: &str, handler: &mut dyn Handler) {
        for id in 0..self.conns.len() {
            if self.conns[id].is_some() {
                self.end(id, None, reason, Some(handler));
            }
        }
    }

    pub fn live(&self) -> usize {
        self.open + self.pending + self.closing
    }

    /// End connection `id` at once, whatever its state, without a close
    /// handshake (a connection that is stuck); `handler` hears of it.
    pub fn abort(&mut self, id: usize, reason: &str, handler: &mut dyn Handler) {
        if self.is_live(id) {
            self.end(id, None, reason, Some(handler));
        }
    }

    /// Remove connection `id` and account for it.
    fn end(&mut self, id: usize, code: Option<u16>, reason: &str, handler: Option<&mut dyn Handler>) {
        let Some(mut c) = self.conns[id].take() else { return };
        let _ = self.poll.registry().deregister(&mut c.stream);
        let was_open = match c.state {
            State::Connecting | State::Handshaking => {
                self.pending -= 1;
                self.failed += 1;
                false
            }
            State::Open => {
                self.open -= 1;
                true
            }
            State::Closing => {
                self.closing -= 1;
                true
            }
        };
        self.note_end(reason);
        if let Some(h) = handler {
            h.on_closed(id, was_open, code, reason);
        }
        // Dropping the stream closes the socket.
    }

    /// Wait up to `timeout` for events and handle them.
    pub fn poll(&mut self, timeout: Duration, handler: &mut dyn Handler) {
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
            if e.kind() != ErrorKind::Interrupted {
                eprintln!("loadgen: poll failed: {e}");
            }
            return;
        }
        let ready: Vec<(usize, bool, bool)> = self
            .events
            .iter()
            .map(|ev| {
                let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                (ev.token().0, readable, ev.is_writable())
            })
            .collect();
        for (id, readable, writable) in ready {
            if id >= EXTERNAL_TOKEN_BASE {
                self.external.push((id - EXTERNAL_TOKEN_BASE, readable, writable));
                continue;
            }
            if writable {
                self.on_writable(id, handler);
            }
            if readable {
                self.on_readable(id, handler);
            }
        }
    }

    fn on_writable(&mut self, id: usize, handler: &mut dyn Handler) {
        let Some(Some(c)) = self.conns.get_mut(id) else { return };
        if c.state == State::Connecting {
            match c.stream.take_error() {
                Ok(Some(e)) | Err(e) => {
                    return self.end(id, None, &format!("connect: {}", e.kind()), Some(handler));
                }
                Ok(None) => {}
            }
            match c.stream.peer_addr() {
                Ok(_) => c.state = State::Handshaking,
                Err(e) if e.kind() == ErrorKind::NotConnected => return, // spurious
                Err(e) => return self.end(id, None, &format!("connect: {}", e.kind()), Some(handler)),
            }
        }
        if let Err(e) = flush(c) {
            self.end(id, None, &format!("write: {}", e.kind()), Some(handler));
        }
    }

    fn on_readable(&mut self, id: usize, handler: &mut dyn Handler) {
        loop {
            let Some(Some(c)) = self.conns.get_mut(id) else { return };
            if c.state == State::Connecting {
                // Readable before writable means the connect failed.
                if let Ok(Some(e)) | Err(e) = c.stream.take_error() {
                    return self.end(id, None, &format!("connect: {}", e.kind()), Some(handler));
                }
                return;
            }
            let n = match c.stream.read(&mut self.scratch) {
                Ok(0) => return self.end(id, None, "eof", Some(handler)),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return self.end(id, None, &format!("read: {}", e.kind()), Some(handler)),
            };
            let verdict = self.on_bytes(id, n, handler);
            let Some(Some(c)) = self.conns.get_mut(id) else { return };
            let flushed = flush(c);
            match verdict {
                Verdict::Closed(code, reason) => return self.end(id, code, &reason, Some(handler)),
                Verdict::KeepOpen => {}
            }
            if let Err(e) = flushed {
                return self.end(id, None, &format!("write: {}", e.kind()), Some(handler));
            }
        }
    }

    /// Handle `n` fresh bytes in `self.scratch` for connection `id`.
    fn on_bytes(&mut self, id: usize, n: usize, handler: &mut dyn Handler) -> Verdict {
        let c = self.conns[id].as_mut().expect("live connection");
        let data = &self.scratch[..n];
        if c.state == State::Handshaking {
            c.rbuf.extend_from_slice(data);
            match frame::parse_handshake_response(&c.rbuf) {
                HandshakeStatus::Incomplete => return Verdict::KeepOpen,
                HandshakeStatus::Rejected(status) => {
                    return Verdict::Closed(None, format!("handshake: {status}"));
                }
                HandshakeStatus::Accepted(header_len) => {
                    c.rbuf.drain(..header_len);
                    c.state = State::Open;
                    self.pending -= 1;
                    self.open += 1;
                    self.peak_open = self.peak_open.max(self.open);
                    handler.on_open(id, &mut Outbox { wbuf: &mut c.wbuf, rng: &mut c.rng });
                    let mut buf = std::mem::take(&mut c.rbuf);
                    let (consumed, verdict) = parse_frames(c, id, &buf, handler);
                    buf.drain(..consumed);
                    c.rbuf = buf;
                    return verdict;
                }
            }
        }
        if c.rbuf.is_empty() {
            let (consumed, verdict) = parse_frames(c, id, data, handler);
            c.rbuf.extend_from_slice(&data[consumed..]);
            verdict
        } else {
            let mut buf = std::mem::take(&mut c.rbuf);
            buf.extend_from_slice(data);
            let (consumed, verdict) = parse_frames(c, id, &buf, handler);
            buf.drain(..consumed);
            c.rbuf = buf;
            verdict
        }
    }
}

/// Parse every complete frame at the front of `buf`; returns bytes consumed.
fn parse_frames(c: &mut Conn, id: usize, buf: &[u8], handler: &mut dyn Handler) -> (usize, Verdict) {
    let mut pos = 0;
    let mut unmasked = Vec::new();
    loop {
        let h = match frame::parse_frame(&buf[pos..]) {
            ParseResult::Incomplete => return (pos, Verdict::KeepOpen),
            ParseResult::Error(e) => return (pos, Verdict::Closed(None, format!("protocol: {e}"))),
            ParseResult::Frame(h) => h,
        };
        let start = pos + h.header_len;
        let mut payload = &buf[start..start + h.payload_len];
        pos = start + h.payload_len;
        if let Some(mask) = h.mask {
            unmasked.clear();
            unmasked.extend_from_slice(payload);
            frame::apply_mask(&mut unmasked, mask);
            payload = &unmasked;
        }
        let mut out = Outbox { wbuf: &mut c.wbuf, rng: &mut c.rng };
        match h.opcode {
            frame::OP_PING => out.send(frame::OP_PONG, payload),
            frame::OP_PONG => {}
            frame::OP_CLOSE => {
                let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                if c.state == State::Open {
                    // Reply with the same code, as RFC 6455 asks.
                    out.send(frame::OP_CLOSE, &code.unwrap_or(CLOSE_NORMAL).to_be_bytes());
                }
                let reason = match code {
                    Some(code) => format!("close {code}"),
                    None => "close (no code)".to_string(),
                };
                return (pos, Verdict::Closed(code, reason));
            }
            frame::OP_TEXT | frame::OP_BINARY if h.fin && c.frag.is_empty() => {
                if c.state == State::Open {
                    handler.on_message(id, h.opcode, payload, &mut out);
                }
            }
            frame::OP_TEXT | frame::OP_BINARY => {
                if !c.frag.is_empty() {
                    return (pos, Verdict::Closed(None, "protocol: interleaved data frame".into()));
                }
                c.frag_opcode = h.opcode;
                c.frag.extend_from_slice(payload);
            }
            frame::OP_CONTINUATION => {
                c.frag.extend_from_slice(payload);
                if h.fin {
                    let msg = std::mem::take(&mut c.frag);
                    if c.state == State::Open {
                        let mut out = Outbox { wbuf: &mut c.wbuf, rng: &mut c.rng };
                        handler.on_message(id, c.frag_opcode, &msg, &mut out);
                    }
                }
            }
            _ => return (pos, Verdict::Closed(None, "protocol: unknown opcode".into())),
        }
    }
}

/// Write as much of the connection's write buffer as the socket takes.
fn flush(c: &mut Conn) -> io::Result<()> {
    if c.state == State::Connecting {
        return Ok(());
    }
    while c.wpos < c.wbuf.len() {
        match c.stream.write(&c.wbuf[c.wpos..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => c.wpos += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if c.wpos == c.wbuf.len() {
        c.wbuf.clear();
        c.wpos = 0;
        if c.wbuf.capacity() > WBUF_SHRINK_ABOVE {
            c.wbuf = Vec::new();
        }
    } else if c.wpos > c.wbuf.len() / 2 {
        c.wbuf.drain(..c.wpos);
        c.wpos = 0;
    }
    Ok(())
}

/// How to open a batch of connections.
pub struct OpenPlan<'a> {
    pub count: usize,
    pub path: &'a str,
    /// New connections started per second at most.
    pub rate_per_sec: f64,
    /// Handshakes in progress at most.
    pub max_pending: usize,
    pub deadline: Instant,
}

/// Open `plan.count` connections; returns their ids (including any that
/// failed). Connections still pending at the deadline are dropped.
pub fn open_many(net: &mut Net, plan: &OpenPlan, handler: &mut dyn Handler) -> Vec<usize> {
    open_each(net, plan, |_| plan.path.to_string(), handler).into_iter().flatten().collect()
}

/// [`open_many`] with connection `i`'s path given by `path_of(i)` (not
/// `plan.path`); element `i` of the result is connection `i`'s id, `None` if
/// its socket could not even be created.
pub fn open_each(
    net: &mut Net,
    plan: &OpenPlan,
    path_of: impl Fn(usize) -> String,
    handler: &mut dyn Handler,
) -> Vec<Option<usize>> {
    /// A burst allowance so small batches start at once.
    const RATE_BURST: f64 = 50.0;
    const POLL_SLICE: Duration = Duration::from_millis(2);
    let started_at = Instant::now();
    let mut ids = Vec::with_capacity(plan.count);
    let mut started = 0usize;
    loop {
        let now = Instant::now();
        let allowed = (now.duration_since(started_at).as_secs_f64() * plan.rate_per_sec + RATE_BURST) as usize;
        while started < plan.count && started < allowed && net.pending < plan.max_pending {
            ids.push(net.connect(&path_of(started)));
            started += 1;
        }
        if started >= plan.count && net.pending == 0 {
            break;
        }
        if now >= plan.deadline {
            eprintln!("loadgen: open deadline reached with {} pending", net.pending);
            let pending: Vec<usize> = ids
                .iter()
                .flatten()
                .copied()
                .filter(|&id| matches!(net.conns[id].as_ref(), Some(c) if matches!(c.state, State::Connecting | State::Handshaking)))
                .collect();
            for id in pending {
                net.end(id, None, "open timeout", Some(handler));
            }
            break;
        }
        net.poll(POLL_SLICE, handler);
    }
    ids
}

/// Close every open connection cleanly, waiting until `deadline` for the
/// server's replies; anything left is dropped.
pub fn close_all(net: &mut Net, deadline: Instant, handler: &mut dyn Handler) {
    const POLL_SLICE: Duration = Duration::from_millis(5);
    for id in 0..net.conns.len() {
        net.close(id, CLOSE_NORMAL);
    }
    while net.live() > 0 && Instant::now() < deadline {
        net.poll(POLL_SLICE, handler);
    }
    net.drop_all("close timeout", handler);
}

/// Keep handling events until `until` (answering pings, reading data).
pub fn run_until(net: &mut Net, until: Instant, handler: &mut dyn Handler) {
    const POLL_SLICE: Duration = Duration::from_millis(20);
    loop {
        let now = Instant::now();
        if now >= until {
            return;
        }
        net.poll(POLL_SLICE.min(until - now), handler);
    }
}
