//! `publish` mode: HTTP publish throughput. P publishers each keep one
//! `POST /publish/<room>` in flight, every one on a fresh connection
//! (`Connection: close`, no keep-alive), for W seconds of warm-up and D
//! seconds of measuring; S WebSocket subscribers in the room (`?raw=1`)
//! check that every acknowledged message reaches them.
//!
//! Body layout (S bytes): [MAGIC u32][kind u32][seq u64][send time ns u64][zeros],
//! the same as `fanout`'s. Before measuring, SYNC publishes go out until
//! every subscriber has seen one, so a join still in flight is not a loss.
//! Each subscriber keeps a bitmap of the sequence numbers it got; a message
//! the server acknowledged (202) that a subscriber still connected at the
//! end never received is `lost`.

use crate::fanout::{build_at, read_header, HEADER_BYTES, KIND_DATA, KIND_SYNC};
use crate::hist::Histogram;
use crate::net::{self, Handler, Net, OpenPlan, Outbox, CLOSE_POLICY, EXTERNAL_TOKEN_BASE};
use crate::util::{mark, now_ns, us, Opts, Report};
use mio::net::TcpStream;
use mio::{Interest, Token};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const DEFAULT_PUBLISHERS: usize = 8;
const DEFAULT_SUBSCRIBERS: usize = 4;
const DEFAULT_SIZE: usize = 64;
const DEFAULT_DURATION_SECS: f64 = 3.0;
const DEFAULT_WARMUP_SECS: f64 = 1.0;
const DEFAULT_ROOM: &str = "bench-publish";
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);
const SYNC_TIMEOUT: Duration = Duration::from_secs(20);
/// A request that has not been answered within this is counted as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// After the last request, wait for deliveries until none came for
/// DRAIN_QUIET, at most DRAIN_MAX.
const DRAIN_QUIET: Duration = Duration::from_secs(1);
const DRAIN_MAX: Duration = Duration::from_secs(10);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
const POLL_SLICE: Duration = Duration::from_millis(5);
/// Largest response head + body read before giving up on a request.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// One HTTP request on its own connection.
struct Request {
    stream: TcpStream,
    connected: bool,
    wbuf: Vec<u8>,
    wpos: usize,
    rbuf: Vec<u8>,
    started_ns: u64,
    seq: u64,
    kind: u32,
}

/// How a request ended.
enum Outcome {
    Answered(u16),
    Failed(String),
}

#[derive(Default, Clone)]
struct Sub {
    synced: bool,
    /// Bit i set: DATA seq i received (grows as needed).
    seen: Vec<u64>,
    unique: u64,
    duplicates: u64,
    ended: Option<String>,
    slow: bool,
}

struct Subscribers {
    subs: Vec<Sub>,
    synced: usize,
    corrupt: u64,
    /// Publish-to-delivery time of DATA messages sent inside the window.
    latency: Histogram,
    measure_from_ns: u64,
    measure_until_ns: u64,
    deliveries: u64,
    last_delivery_ns: u64,
    closing: bool,
}

impl Handler for Subscribers {
    fn on_open(&mut self, id: usize, _out: &mut Outbox) {
        if self.subs.len() <= id {
            self.subs.resize(id + 1, Sub::default());
        }
    }

    fn on_message(&mut self, id: usize, _opcode: u8, payload: &[u8], _out: &mut Outbox) {
        let now = now_ns();
        let Some((kind, seq, sent)) = read_header(payload) else {
            self.corrupt += 1;
            return;
        };
        let sub = &mut self.subs[id];
        match kind {
            KIND_SYNC => {
                if !sub.synced {
                    sub.synced = true;
                    self.synced += 1;
                }
            }
            KIND_DATA => {
                if !mark(&mut sub.seen, seq as usize) {
                    sub.duplicates += 1;
                    return;
                }
                sub.unique += 1;
                self.deliveries += 1;
                self.last_delivery_ns = now;
                if (self.measure_from_ns..self.measure_until_ns).contains(&sent) {
                    self.latency.record(now.saturating_sub(sent));
                }
            }
            _ => self.corrupt += 1,
        }
    }

    fn on_closed(&mut self, id: usize, was_open: bool, code: Option<u16>, reason: &str) {
        if !was_open || self.closing {
            return;
        }
        if let Some(sub) = self.subs.get_mut(id)
            && sub.ended.is_none() {
                sub.ended = Some(reason.to_string());
                sub.slow = code == Some(CLOSE_POLICY);
            }
    }
}

/// The HTTP publishers: `slots[i]` is publisher i's request in flight.
struct Publishers {
    addr: SocketAddr,
    head: String,
    size: usize,
    slots: Vec<Option<Request>>,
    next_seq: u64,
    body: Vec<u8>,
    scratch: Vec<u8>,
}

impl Publishers {
    fn in_flight(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Starts a request in slot `i`; an error is returned as a failed outcome.
    fn start(&mut self, net: &Net, i: usize, kind: u32) -> Result<(), String> {
        let seq = if kind == KIND_DATA {
            self.next_seq += 1;
            self.next_seq - 1
        } else {
            0
        };
        let started_ns = now_ns();
        build_at(&mut self.body, self.size, (kind, seq, started_ns));
        let mut stream = TcpStream::connect(self.addr).map_err(|e| format!("connect: {}", e.kind()))?;
        net.registry()
            .register(&mut stream, Token(EXTERNAL_TOKEN_BASE + i), Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| format!("register: {}", e.kind()))?;
        let _ = stream.set_nodelay(true);
        let mut wbuf = format!("{}Content-Length: {}\r\n\r\n", self.head, self.body.len()).into_bytes();
        wbuf.extend_from_slice(&self.body);
        self.slots[i] = Some(Request { stream, connected: false, wbuf, wpos: 0, rbuf: Vec::new(), started_ns, seq, kind });
        Ok(())
    }

    /// Handles an event on slot `i`; `Some` when its request has ended.
    fn on_event(&mut self, i: usize, readable: bool, writable: bool) -> Option<Outcome> {
        let req = self.slots.get_mut(i)?.as_mut()?;
        if !req.connected && (writable || readable) {
            match req.stream.take_error() {
                Ok(Some(e)) | Err(e) => return Some(Outcome::Failed(format!("connect: {}", e.kind()))),
                Ok(None) => {}
            }
            match req.stream.peer_addr() {
                Ok(_) => req.connected = true,
                Err(e) if e.kind() == ErrorKind::NotConnected => return None,
                Err(e) => return Some(Outcome::Failed(format!("connect: {}", e.kind()))),
            }
        }
        while req.wpos < req.wbuf.len() {
            match req.stream.write(&req.wbuf[req.wpos..]) {
                Ok(0) => return Some(Outcome::Failed("write: zero".into())),
                Ok(n) => req.wpos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Some(Outcome::Failed(format!("write: {}", e.kind()))),
            }
        }
        loop {
            match req.stream.read(&mut self.scratch) {
                Ok(0) => return Some(parse_response(&req.rbuf).unwrap_or(Outcome::Failed("eof before the answer".into()))),
                Ok(n) => {
                    req.rbuf.extend_from_slice(&self.scratch[..n]);
                    if let Some(outcome) = parse_response(&req.rbuf) {
                        return Some(outcome);
                    }
                    if req.rbuf.len() > MAX_RESPONSE_BYTES {
                        return Some(Outcome::Failed("answer too long".into()));
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Some(Outcome::Failed(format!("read: {}", e.kind()))),
            }
        }
    }

    /// Removes slot `i`'s request (closing its socket).
    fn finish(&mut self, net: &Net, i: usize) -> Option<Request> {
        let mut req = self.slots[i].take()?;
        let _ = net.registry().deregister(&mut req.stream);
        Some(req)
    }
}

/// A complete answer in `buf` (head and `Content-Length` bytes of body): its status.
fn parse_response(buf: &[u8]) -> Option<Outcome> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let length: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    (buf.len() >= end + 4 + length).then_some(Outcome::Answered(status))
}

/// What the run counts about the requests.
#[derive(Default)]
struct Tally {
    /// Seq → acknowledged (202), for DATA requests.
    acked: Vec<u64>,
    acked_count: u64,
    acked_in_window: u64,
    /// Request start to complete answer, of requests answered inside the window.
    request_latency: Histogram,
    failures: BTreeMap<String, u64>,
}

impl Tally {
    fn ack(&mut self, seq: u64) {
        mark(&mut self.acked, seq as usize);
        self.acked_count += 1;
    }
}

pub fn run(addr: SocketAddr, opts: &Opts, report: &mut Report) -> Result<(), String> {
    let n_pubs: usize = opts.get("publishers", DEFAULT_PUBLISHERS)?;
    let n_subs: usize = opts.get("subscribers", DEFAULT_SUBSCRIBERS)?;
    let size: usize = opts.get("size", DEFAULT_SIZE)?;
    let duration: f64 = opts.get("duration", DEFAULT_DURATION_SECS)?;
    let warmup: f64 = opts.get("warmup", DEFAULT_WARMUP_SECS)?;
    let room = opts.get_str("room", DEFAULT_ROOM);
    opts.finish()?;
    if size < HEADER_BYTES {
        return Err(format!("--size must be at least {HEADER_BYTES}"));
    }
    if n_pubs == 0 || duration <= 0.0 || warmup < 0.0 {
        return Err("--publishers and --duration must be positive".into());
    }

    let mut net = Net::new(addr).map_err(|e| e.to_string())?;
    let mut subs = Subscribers {
        subs: Vec::new(),
        synced: 0,
        corrupt: 0,
        latency: Histogram::new(),
        measure_from_ns: u64::MAX,
        measure_until_ns: u64::MAX,
        deliveries: 0,
        last_delivery_ns: 0,
        closing: false,
    };
    let path = format!("/ws/{room}?raw=1");
    let t_open = Instant::now();
    let plan = OpenPlan { count: n_subs, path: &path, rate_per_sec: 5000.0, max_pending: 200, deadline: t_open + OPEN_TIMEOUT };
    net::open_many(&mut net, &plan, &mut subs);
    let subs_open = net.open;
    eprintln!("loadgen publish: {subs_open}/{n_subs} subscribers open in {:.2}s", t_open.elapsed().as_secs_f64());

    let mut pubs = Publishers {
        addr,
        head: format!(
            "POST /publish/{room} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
             Content-Type: application/octet-stream\r\n"
        ),
        size,
        slots: (0..n_pubs).map(|_| None).collect(),
        next_seq: 0,
        body: Vec::with_capacity(size),
        scratch: vec![0; 16 * 1024],
    };
    let mut tally = Tally::default();

    // Sync: one SYNC publish at a time until every subscriber has seen one.
    let sync_deadline = Instant::now() + SYNC_TIMEOUT;
    while subs.synced < net.open && Instant::now() < sync_deadline {
        if pubs.slots[0].is_none()
            && let Err(e) = pubs.start(&net, 0, KIND_SYNC)
        {
            return Err(format!("sync publish: {e}"));
        }
        net.poll(POLL_SLICE, &mut subs);
        for (i, r, w) in std::mem::take(&mut net.external) {
            if let Some(outcome) = pubs.on_event(i, r, w) {
                pubs.finish(&net, i);
                if let Outcome::Answered(status) = outcome
                    && status != 202 {
                        return Err(format!("sync publish answered {status}"));
                    }
                if let Outcome::Failed(why) = outcome {
                    return Err(format!("sync publish: {why}"));
                }
            }
        }
    }
    // Let the last SYNC request end before measuring.
    while pubs.in_flight() > 0 && Instant::now() < sync_deadline {
        net.poll(POLL_SLICE, &mut subs);
        for (i, r, w) in std::mem::take(&mut net.external) {
            if pubs.on_event(i, r, w).is_some() {
                pubs.finish(&net, i);
            }
        }
    }
    let synced = subs.synced;
    eprintln!("loadgen publish: {synced} subscribers synced");

    // Publish: every slot keeps one request in flight until the end.
    let t0 = now_ns();
    let measure_from = t0 + (warmup * 1e9) as u64;
    let measure_until = measure_from + (duration * 1e9) as u64;
    subs.measure_from_ns = measure_from;
    subs.measure_until_ns = measure_until;
    let mut started = 0u64;
    let timeout_ns = REQUEST_TIMEOUT.as_nanos() as u64;
    let mut end_all = |pubs: &mut Publishers, net: &mut Net, subs: &mut Subscribers, tally: &mut Tally, keep_going: bool| {
        net.poll(POLL_SLICE, subs);
        let mut ended: Vec<(usize, Outcome)> = Vec::new();
        for (i, r, w) in std::mem::take(&mut net.external) {
            if let Some(outcome) = pubs.on_event(i, r, w) {
                ended.push((i, outcome));
            }
        }
        let now = now_ns();
        for i in 0..pubs.slots.len() {
            if pubs.slots[i].as_ref().is_some_and(|r| now.saturating_sub(r.started_ns) > timeout_ns) {
                ended.push((i, Outcome::Failed("timeout".into())));
            }
        }
        for (i, outcome) in ended {
            let Some(req) = pubs.finish(net, i) else { continue };
            let done = now_ns();
            match outcome {
                Outcome::Answered(202) => {
                    if req.kind == KIND_DATA {
                        tally.ack(req.seq);
                    }
                    if (measure_from..measure_until).contains(&done) {
                        tally.acked_in_window += 1;
                        tally.request_latency.record(done - req.started_ns);
                    }
                }
                Outcome::Answered(status) => *tally.failures.entry(format!("status {status}")).or_insert(0) += 1,
                Outcome::Failed(why) => *tally.failures.entry(why).or_insert(0) += 1,
            }
        }
        if keep_going {
            for i in 0..pubs.slots.len() {
                if pubs.slots[i].is_none() {
                    if let Err(why) = pubs.start(net, i, KIND_DATA) {
                        *tally.failures.entry(why).or_insert(0) += 1;
                    } else {
                        started += 1;
                    }
                }
            }
        }
    };
    while now_ns() < measure_until {
        end_all(&mut pubs, &mut net, &mut subs, &mut tally, true);
    }
    let stop_deadline = Instant::now() + REQUEST_TIMEOUT + Duration::from_secs(1);
    while pubs.in_flight() > 0 && Instant::now() < stop_deadline {
        end_all(&mut pubs, &mut net, &mut subs, &mut tally, false);
    }
    let published_secs = (now_ns() - t0) as f64 / 1e9;

    // Drain: until every connected subscriber has every acknowledged message,
    // or deliveries stopped for DRAIN_QUIET.
    let complete = |subs: &Subscribers, tally: &Tally| {
        subs.subs.iter().filter(|s| s.ended.is_none() && !s.seen.is_empty()).all(|s| s.unique >= tally.acked_count)
    };
    let drain_deadline = Instant::now() + DRAIN_MAX;
    let quiet_ns = DRAIN_QUIET.as_nanos() as u64;
    let drain_from = now_ns();
    while !complete(&subs, &tally)
        && Instant::now() < drain_deadline
        && now_ns().saturating_sub(subs.last_delivery_ns.max(drain_from)) < quiet_ns
    {
        net.poll(POLL_SLICE, &mut subs);
    }
    subs.closing = true;
    net::close_all(&mut net, Instant::now() + CLOSE_TIMEOUT, &mut subs);

    // Losses: acknowledged messages a subscriber still connected never got.
    let (mut lost, mut duplicates, mut slow, mut other) = (0u64, 0u64, 0u64, 0u64);
    let mut disconnect_reasons: BTreeMap<String, u64> = BTreeMap::new();
    for s in &subs.subs {
        if !s.synced {
            continue;
        }
        duplicates += s.duplicates;
        match &s.ended {
            None => {
                lost += tally
                    .acked
                    .iter()
                    .enumerate()
                    .map(|(w, &a)| (a & !s.seen.get(w).copied().unwrap_or(0)).count_ones() as u64)
                    .sum::<u64>();
            }
            Some(reason) => {
                if s.slow { slow += 1 } else { other += 1 }
                *disconnect_reasons.entry(reason.clone()).or_insert(0) += 1;
            }
        }
    }
    let failed: u64 = tally.failures.values().sum();
    report
        .int("publishers", n_pubs as u64)
        .int("subscribers", n_subs as u64)
        .int("subscribers_open", subs_open as u64)
        .int("subscribers_synced", synced as u64)
        .int("conns_failed", net.failed as u64)
        .int("size", size as u64)
        .num("duration_secs", duration)
        .num("warmup_secs", warmup)
        .num("publish_secs", published_secs)
        .int("requests", started)
        .int("acked", tally.acked_count)
        .int("acked_in_window", tally.acked_in_window)
        .num("publishes_per_sec", tally.acked_in_window as f64 / duration)
        .num("request_p50_us", us(tally.request_latency.quantile(0.50)))
        .num("request_p99_us", us(tally.request_latency.quantile(0.99)))
        .num("request_max_us", us(tally.request_latency.max()))
        .num("delivery_p50_us", us(subs.latency.quantile(0.50)))
        .num("delivery_p99_us", us(subs.latency.quantile(0.99)))
        .int("deliveries", subs.deliveries)
        .int("failed_requests", failed)
        .counts("failure_reasons", &tally.failures)
        .int("lost", lost)
        .int("duplicates", duplicates)
        .int("corrupt", subs.corrupt)
        .int("slow_disconnected", slow)
        .int("other_disconnected", other)
        .counts("disconnect_reasons", &disconnect_reasons);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(buf: &[u8]) -> Option<u16> {
        match parse_response(buf)? {
            Outcome::Answered(s) => Some(s),
            Outcome::Failed(_) => None,
        }
    }

    #[test]
    fn an_answer_is_complete_with_its_body() {
        let full = b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}";
        assert_eq!(status(full), Some(202));
        assert_eq!(status(&full[..full.len() - 1]), None);
        assert_eq!(status(b"HTTP/1.1 503 Service Unavailable\r\n\r\n"), Some(503));
        assert_eq!(status(b"HTTP/1.1 202 Acc"), None);
    }
}
