//! `fanout` mode: N subscribers in one room and one publisher (also a room
//! member) sending R messages per second of S bytes for D seconds.
//!
//! Payload layout: [MAGIC u32][kind u32][seq u64][send time ns u64][zeros].
//! Before measuring, the publisher sends SYNC messages until every
//! subscriber has seen one, so a room join still in flight on the server is
//! not counted as a loss. Each subscriber keeps a bitmap of the sequence
//! numbers it got, so losses, duplicates and reordering are exact.

use crate::frame::OP_BINARY;
use crate::hist::Histogram;
use crate::net::{self, Handler, Net, OpenPlan, Outbox, CLOSE_POLICY};
use crate::util::{mark, now_ns, us, Opts, Report};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

// The payload header, shared with `publish.rs`.
pub(crate) const MAGIC: u32 = 0x5443_4653; // "TCFS"
pub(crate) const KIND_SYNC: u32 = 1;
pub(crate) const KIND_DATA: u32 = 2;
pub(crate) const HEADER_BYTES: usize = 24;
const DEFAULT_SUBSCRIBERS: usize = 100;
const DEFAULT_RATE: f64 = 100.0;
const DEFAULT_SIZE: usize = 64;
const DEFAULT_DURATION_SECS: f64 = 5.0;
const DEFAULT_CONNECT_RATE: f64 = 5000.0;
const DEFAULT_ROOM: &str = "bench";
const MAX_PENDING_HANDSHAKES: usize = 200;
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
const SYNC_INTERVAL: Duration = Duration::from_millis(100);
const SYNC_TIMEOUT: Duration = Duration::from_secs(20);
/// After the last publish, keep reading until no delivery has arrived for
/// DRAIN_QUIET (so a lagging server's backlog is counted late, not lost),
/// but no longer than DRAIN_MAX.
const DRAIN_QUIET: Duration = Duration::from_secs(2);
const DRAIN_MAX: Duration = Duration::from_secs(15);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest sleep between publisher checks.
const MAX_POLL_SLICE: Duration = Duration::from_millis(5);

#[derive(Default, Clone)]
struct Sub {
    synced: bool,
    /// Bit i set: DATA seq i received.
    seen: Vec<u64>,
    unique: u64,
    duplicates: u64,
    reordered: u64,
    highest: Option<u64>,
    /// Close code or reason, if the subscriber was disconnected.
    ended: Option<String>,
    slow: bool,
}

struct Fanout {
    subs: Vec<Sub>,
    publisher: Option<usize>,
    capacity_msgs: u64,
    latency: Histogram,
    synced: usize,
    /// Subscribers that have received every message published so far is
    /// not tracked per message; `complete` counts those with all `total`.
    complete: usize,
    total: u64,
    corrupt: u64,
    /// When the latest DATA delivery arrived (ns, `now_ns` clock).
    last_delivery_ns: u64,
    publisher_ended: Option<String>,
    /// Set once we start closing everything ourselves.
    closing: bool,
}

impl Fanout {
    fn is_sub(&self, id: usize) -> bool {
        Some(id) != self.publisher && id < self.subs.len()
    }
}

fn build(buf: &mut Vec<u8>, size: usize, kind: u32, seq: u64) {
    build_at(buf, size, (kind, seq, now_ns()));
}

/// A payload of `size` bytes with the header (kind, seq, send time in ns).
pub(crate) fn build_at(buf: &mut Vec<u8>, size: usize, (kind, seq, sent_ns): (u32, u64, u64)) {
    buf.clear();
    buf.extend_from_slice(&MAGIC.to_le_bytes());
    buf.extend_from_slice(&kind.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&sent_ns.to_le_bytes());
    buf.resize(size, 0);
}

/// A payload's header: (kind, seq, send time in ns); `None` when it is not ours.
pub(crate) fn read_header(payload: &[u8]) -> Option<(u32, u64, u64)> {
    if payload.len() < HEADER_BYTES || payload[..4] != MAGIC.to_le_bytes() {
        return None;
    }
    let kind = u32::from_le_bytes(payload[4..8].try_into().unwrap());
    let seq = u64::from_le_bytes(payload[8..16].try_into().unwrap());
    let sent = u64::from_le_bytes(payload[16..24].try_into().unwrap());
    Some((kind, seq, sent))
}

impl Handler for Fanout {
    fn on_open(&mut self, id: usize, _out: &mut Outbox) {
        if self.subs.len() <= id {
            self.subs.resize(id + 1, Sub::default());
        }
        let words = self.capacity_msgs.div_ceil(64) as usize;
        self.subs[id].seen = vec![0; words];
    }

    fn on_message(&mut self, id: usize, _opcode: u8, payload: &[u8], _out: &mut Outbox) {
        let now = now_ns();
        if !self.is_sub(id) {
            return; // the publisher's own copies
        }
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
            KIND_DATA if seq < self.capacity_msgs => {
                if !mark(&mut sub.seen, seq as usize) {
                    sub.duplicates += 1;
                    return;
                }
                sub.unique += 1;
                if sub.highest.is_some_and(|h| seq < h) {
                    sub.reordered += 1;
                }
                sub.highest = Some(sub.highest.map_or(seq, |h| h.max(seq)));
                if sub.unique == self.total {
                    self.complete += 1;
                }
                self.latency.record(now.saturating_sub(sent));
                self.last_delivery_ns = now;
            }
            _ => self.corrupt += 1,
        }
    }

    fn on_closed(&mut self, id: usize, was_open: bool, code: Option<u16>, reason: &str) {
        if !was_open || self.closing {
            return;
        }
        if Some(id) == self.publisher {
            self.publisher_ended.get_or_insert_with(|| reason.to_string());
        } else if let Some(sub) = self.subs.get_mut(id)
            && sub.ended.is_none() {
                sub.ended = Some(reason.to_string());
                sub.slow = code == Some(CLOSE_POLICY);
            }
    }
}

pub fn run(addr: SocketAddr, opts: &Opts, report: &mut Report) -> Result<(), String> {
    let n_subs: usize = opts.get("subscribers", DEFAULT_SUBSCRIBERS)?;
    let rate: f64 = opts.get("rate", DEFAULT_RATE)?;
    let size: usize = opts.get("size", DEFAULT_SIZE)?;
    let duration: f64 = opts.get("duration", DEFAULT_DURATION_SECS)?;
    let connect_rate: f64 = opts.get("connect-rate", DEFAULT_CONNECT_RATE)?;
    let room = opts.get_str("room", DEFAULT_ROOM);
    opts.finish()?;
    if size < HEADER_BYTES {
        return Err(format!("--size must be at least {HEADER_BYTES}"));
    }
    if rate <= 0.0 || duration <= 0.0 {
        return Err("--rate and --duration must be positive".into());
    }
    let total = (rate * duration).round() as u64;
    let path = format!("/ws/{room}?raw=1");

    let mut net = Net::new(addr).map_err(|e| e.to_string())?;
    let mut st = Fanout {
        subs: Vec::new(),
        publisher: None,
        capacity_msgs: total,
        latency: Histogram::new(),
        synced: 0,
        complete: 0,
        total,
        corrupt: 0,
        last_delivery_ns: 0,
        publisher_ended: None,
        closing: false,
    };
    let t_open = Instant::now();
    let deadline = t_open + OPEN_TIMEOUT;
    let plan = OpenPlan { count: n_subs, path: &path, rate_per_sec: connect_rate, max_pending: MAX_PENDING_HANDSHAKES, deadline };
    net::open_many(&mut net, &plan, &mut st);
    let subs_open = net.open;
    let plan = OpenPlan { count: 1, path: &path, rate_per_sec: connect_rate, max_pending: 1, deadline: deadline + Duration::from_secs(5) };
    let publisher = net::open_many(&mut net, &plan, &mut st).first().copied().filter(|&id| net.is_open(id));
    let open_secs = t_open.elapsed().as_secs_f64();
    eprintln!("loadgen fanout: {subs_open}/{n_subs} subscribers open in {open_secs:.2}s");
    let Some(publisher) = publisher else {
        return Err(format!("publisher could not connect: {:?}", net.end_reasons));
    };
    st.publisher = Some(publisher);
    let mut buf = Vec::with_capacity(size);

    // Sync: every subscriber must have seen one SYNC before DATA starts.
    let sync_deadline = Instant::now() + SYNC_TIMEOUT;
    let mut next_sync = Instant::now();
    while st.synced < net.open.saturating_sub(1) && Instant::now() < sync_deadline && net.is_open(publisher) {
        if Instant::now() >= next_sync {
            build(&mut buf, size, KIND_SYNC, 0);
            net.send(publisher, OP_BINARY, &buf);
            next_sync += SYNC_INTERVAL;
        }
        net.poll(MAX_POLL_SLICE, &mut st);
    }
    let synced = st.synced;
    eprintln!("loadgen fanout: {synced} subscribers synced");

    // Publish `total` messages on a fixed schedule.
    let period = Duration::from_secs_f64(1.0 / rate);
    let t0 = Instant::now();
    let t0_ns = now_ns();
    let mut published = 0u64;
    let mut max_publish_lag = Duration::ZERO;
    while published < total && net.is_open(publisher) {
        let due = t0 + period.mul_f64(published as f64);
        let now = Instant::now();
        if now >= due {
            max_publish_lag = max_publish_lag.max(now - due);
            build(&mut buf, size, KIND_DATA, published);
            net.send(publisher, OP_BINARY, &buf);
            published += 1;
            continue;
        }
        net.poll((due - now).min(MAX_POLL_SLICE), &mut st);
    }
    let publish_secs = t0.elapsed().as_secs_f64();
    st.total = published;
    // Subscribers may already hold everything if publishing stopped early.
    st.complete = st.subs.iter().enumerate().filter(|(id, s)| st.is_sub(*id) && s.unique == published && s.ended.is_none()).count();

    let drain_deadline = Instant::now() + DRAIN_MAX;
    let quiet_ns = DRAIN_QUIET.as_nanos() as u64;
    while st.complete < net.open.saturating_sub(1)
        && Instant::now() < drain_deadline
        && now_ns().saturating_sub(st.last_delivery_ns.max(t0_ns)) < quiet_ns
    {
        net.poll(MAX_POLL_SLICE, &mut st);
    }
    let elapsed_secs = t0.elapsed().as_secs_f64();
    // Cut off: the server was still delivering when we stopped waiting, so
    // what is missing is late rather than known to be lost.
    let drain_cut_off = st.complete < net.open.saturating_sub(1)
        && now_ns().saturating_sub(st.last_delivery_ns.max(t0_ns)) < quiet_ns;
    let connected_at_end = st.subs.iter().enumerate().filter(|(id, s)| st.is_sub(*id) && !s.seen.is_empty() && s.ended.is_none()).count();
    st.closing = true;
    net::close_all(&mut net, Instant::now() + CLOSE_TIMEOUT, &mut st);

    let mut lost_connected = 0u64;
    let mut lost_all = 0u64;
    let (mut duplicates, mut reordered, mut deliveries) = (0u64, 0u64, 0u64);
    let (mut slow, mut other_disconnects) = (0u64, 0u64);
    let mut disconnect_reasons: BTreeMap<String, u64> = BTreeMap::new();
    for (id, s) in st.subs.iter().enumerate() {
        if !st.is_sub(id) || s.seen.is_empty() {
            continue;
        }
        let lost = published - s.unique;
        lost_all += lost;
        duplicates += s.duplicates;
        reordered += s.reordered;
        deliveries += s.unique;
        match &s.ended {
            None => lost_connected += lost,
            Some(reason) => {
                if s.slow {
                    slow += 1;
                } else {
                    other_disconnects += 1;
                }
                *disconnect_reasons.entry(reason.clone()).or_insert(0) += 1;
            }
        }
    }
    // From the first publish to the last delivery, so a server that lags
    // behind is not credited with deliveries made after publishing ended.
    let deliveries_per_sec = deliveries as f64 / (st.last_delivery_ns.saturating_sub(t0_ns) as f64 / 1e9).max(publish_secs);
    report
        .int("subscribers", n_subs as u64)
        .int("subscribers_open", subs_open as u64)
        .int("subscribers_synced", synced as u64)
        .int("conns_failed", net.failed as u64)
        .num("open_secs", open_secs)
        .num("rate", rate)
        .int("size", size as u64)
        .num("duration_secs", duration)
        .int("published", published)
        .num("publish_secs", publish_secs)
        .num("max_publish_lag_ms", max_publish_lag.as_secs_f64() * 1e3)
        .int("deliveries", deliveries)
        .num("deliveries_per_sec", deliveries_per_sec)
        .num("delivered_mbytes_per_sec", deliveries_per_sec * size as f64 / 1e6)
        .num("expected_deliveries_per_sec", rate * n_subs as f64)
        .num("drain_secs", elapsed_secs - publish_secs)
        .num("latency_p50_us", us(st.latency.quantile(0.50)))
        .num("latency_p99_us", us(st.latency.quantile(0.99)))
        .num("latency_max_us", us(st.latency.max()))
        .bool("drain_cut_off", drain_cut_off)
        .int("lost", lost_connected)
        .int("lost_incl_disconnected", lost_all)
        .int("duplicates", duplicates)
        .int("reordered", reordered)
        .int("corrupt", st.corrupt)
        .int("connected_at_end", connected_at_end as u64)
        .int("slow_disconnected", slow)
        .int("other_disconnected", other_disconnects)
        .counts("disconnect_reasons", &disconnect_reasons)
        .str("publisher_ended", st.publisher_ended.as_deref().unwrap_or(""));
    Ok(())
}
