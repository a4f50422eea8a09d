//! `echo` mode: N connections to /echo, W messages in flight on each,
//! payload S bytes, for D seconds. Every echo is checked byte for byte.
//!
//! Payload layout: [seq u64 LE][send time ns u64 LE][fill...], where the fill
//! is a pattern derived from (connection, seq) so a wrong or reordered echo
//! is a mismatch.

use crate::frame::OP_BINARY;
use crate::hist::Histogram;
use crate::net::{self, Handler, Net, OpenPlan, Outbox};
use crate::util::{now_ns, us, Opts, Report};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const HEADER_BYTES: usize = 16;
const DEFAULT_CONNS: usize = 10;
const DEFAULT_WINDOW: usize = 8;
const DEFAULT_SIZE: usize = 64;
const DEFAULT_DURATION_SECS: f64 = 5.0;
const DEFAULT_WARMUP_SECS: f64 = 1.0;
const DEFAULT_CONNECT_RATE: f64 = 5000.0;
const MAX_PENDING_HANDSHAKES: usize = 200;
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// After the measuring window, wait this long for echoes still in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default, Clone)]
struct ConnState {
    next_send: u64,
    next_recv: u64,
    in_flight: usize,
}

struct Echo {
    conns: Vec<ConnState>,
    size: usize,
    /// Messages sent before this instant keep being replaced by new ones.
    send_until_ns: u64,
    measure_from_ns: u64,
    measure_until_ns: u64,
    rtt: Histogram,
    bytes_measured: u64,
    mismatches: u64,
    in_flight_total: usize,
    closed_while_open: u64,
    buf: Vec<u8>,
}

fn fill_byte(id: usize, seq: u64, i: usize) -> u8 {
    (id as u64).wrapping_mul(131).wrapping_add(seq.wrapping_mul(7)).wrapping_add(i as u64) as u8
}

impl Echo {
    fn build(&mut self, id: usize, seq: u64) {
        self.buf.clear();
        self.buf.extend_from_slice(&seq.to_le_bytes());
        self.buf.extend_from_slice(&now_ns().to_le_bytes());
        self.buf.extend((HEADER_BYTES..self.size).map(|i| fill_byte(id, seq, i)));
    }

    fn send_one(&mut self, id: usize, out: &mut Outbox) {
        let seq = self.conns[id].next_send;
        self.build(id, seq);
        out.send(OP_BINARY, &self.buf);
        let c = &mut self.conns[id];
        c.next_send += 1;
        c.in_flight += 1;
        self.in_flight_total += 1;
    }

    fn payload_ok(&self, id: usize, opcode: u8, payload: &[u8], seq: u64) -> bool {
        opcode == OP_BINARY
            && payload.len() == self.size
            && seq == self.conns[id].next_recv
            && payload[HEADER_BYTES..].iter().enumerate().all(|(i, &b)| b == fill_byte(id, seq, i + HEADER_BYTES))
    }
}

impl Handler for Echo {
    fn on_open(&mut self, id: usize, _out: &mut Outbox) {
        if self.conns.len() <= id {
            self.conns.resize(id + 1, ConnState::default());
        }
    }

    fn on_message(&mut self, id: usize, opcode: u8, payload: &[u8], out: &mut Outbox) {
        let now = now_ns();
        if payload.len() < HEADER_BYTES || self.conns[id].in_flight == 0 {
            self.mismatches += 1;
            return;
        }
        let seq = u64::from_le_bytes(payload[..8].try_into().unwrap());
        let sent = u64::from_le_bytes(payload[8..16].try_into().unwrap());
        if !self.payload_ok(id, opcode, payload, seq) {
            self.mismatches += 1;
        }
        let c = &mut self.conns[id];
        c.next_recv = seq.wrapping_add(1);
        c.in_flight -= 1;
        self.in_flight_total -= 1;
        if now >= self.measure_from_ns && now < self.measure_until_ns && sent >= self.measure_from_ns {
            self.rtt.record(now.saturating_sub(sent));
            self.bytes_measured += payload.len() as u64;
        }
        if now < self.send_until_ns {
            self.send_one(id, out);
        }
    }

    fn on_closed(&mut self, id: usize, was_open: bool, _code: Option<u16>, _reason: &str) {
        if was_open {
            self.closed_while_open += 1;
            if let Some(c) = self.conns.get_mut(id) {
                self.in_flight_total -= c.in_flight;
                c.in_flight = 0;
            }
        }
    }
}

pub fn run(addr: SocketAddr, opts: &Opts, report: &mut Report) -> Result<(), String> {
    let conns: usize = opts.get("conns", DEFAULT_CONNS)?;
    let window: usize = opts.get("window", DEFAULT_WINDOW)?;
    let size: usize = opts.get("size", DEFAULT_SIZE)?;
    let duration: f64 = opts.get("duration", DEFAULT_DURATION_SECS)?;
    let warmup: f64 = opts.get("warmup", DEFAULT_WARMUP_SECS)?;
    let rate: f64 = opts.get("connect-rate", DEFAULT_CONNECT_RATE)?;
    let path = opts.get_str("path", "/echo");
    opts.finish()?;
    if size < HEADER_BYTES {
        return Err(format!("--size must be at least {HEADER_BYTES}"));
    }

    let mut net = Net::new(addr).map_err(|e| e.to_string())?;
    let mut echo = Echo {
        conns: Vec::new(),
        size,
        send_until_ns: u64::MAX,
        measure_from_ns: u64::MAX,
        measure_until_ns: 0,
        rtt: Histogram::new(),
        bytes_measured: 0,
        mismatches: 0,
        in_flight_total: 0,
        closed_while_open: 0,
        buf: Vec::with_capacity(size),
    };
    let t_open = Instant::now();
    let plan = OpenPlan { count: conns, path: &path, rate_per_sec: rate, max_pending: MAX_PENDING_HANDSHAKES, deadline: t_open + OPEN_TIMEOUT };
    let ids = net::open_many(&mut net, &plan, &mut echo);
    let open_secs = t_open.elapsed().as_secs_f64();
    let opened = net.open;
    eprintln!("loadgen echo: {opened}/{conns} open in {open_secs:.2}s");

    let start = now_ns();
    echo.measure_from_ns = start + (warmup * 1e9) as u64;
    echo.measure_until_ns = echo.measure_from_ns + (duration * 1e9) as u64;
    echo.send_until_ns = echo.measure_until_ns;
    for &id in &ids {
        for _ in 0..window {
            net.send_with(id, |out| echo.send_one(id, out));
        }
    }
    let end = Instant::now() + Duration::from_nanos(echo.measure_until_ns - start);
    net::run_until(&mut net, end, &mut echo);
    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    while echo.in_flight_total > 0 && net.open > 0 && Instant::now() < drain_deadline {
        net.poll(Duration::from_millis(10), &mut echo);
    }
    let unanswered = echo.in_flight_total;
    let closed_during_run = echo.closed_while_open;
    net::close_all(&mut net, Instant::now() + CLOSE_TIMEOUT, &mut echo);

    let n = echo.rtt.count();
    report
        .int("conns", conns as u64)
        .int("conns_open", opened as u64)
        .int("conns_failed", net.failed as u64)
        .num("open_secs", open_secs)
        .int("window", window as u64)
        .int("size", size as u64)
        .num("duration_secs", duration)
        .int("round_trips", n)
        .num("round_trips_per_sec", n as f64 / duration)
        .num("mbytes_per_sec", echo.bytes_measured as f64 / duration / 1e6)
        .num("rtt_p50_us", us(echo.rtt.quantile(0.50)))
        .num("rtt_p99_us", us(echo.rtt.quantile(0.99)))
        .num("rtt_max_us", us(echo.rtt.max()))
        .int("mismatches", echo.mismatches)
        .int("unanswered", unanswered as u64)
        .int("closed_during_run", closed_during_run)
        .counts("end_reasons", &net.end_reasons);
    Ok(())
}
