//! `rooms` mode: R rooms of M members each (`/ws/<prefix><r>?raw=1`), every
//! member publishing `--rate` messages per second of S bytes for D seconds;
//! every member receives every message of its room, its own included.
//!
//! The sends of all members are spread evenly over time: one send every
//! 1 / (rate × R × M) seconds, going round the rooms first (room 0's member 0,
//! room 1's member 0, ..., room 0's member 1, ...), so the members of one room
//! take turns 1 / (rate × M) seconds apart.
//!
//! Payload: `fanout`'s header ([MAGIC][kind][seq][send time ns], shared with
//! it), where seq = (room << 32) | (n × M + member) for the member's n-th
//! message, so a receiver knows which room and sender a message comes from.
//! Before measuring, one member of each room sends SYNC messages until every
//! member of the room has seen one (so a join still in flight on the server
//! is not counted as a loss). Each member keeps a bitmap of the messages of
//! its room it got, so losses, duplicates and messages from another room are
//! exact.

use crate::fanout::{build_at, read_header, HEADER_BYTES, KIND_DATA, KIND_SYNC};
use crate::frame::OP_BINARY;
use crate::hist::Histogram;
use crate::net::{self, Handler, Net, OpenPlan, Outbox, CLOSE_POLICY};
use crate::procfs::{proc_cpu_secs, proc_status};
use crate::util::{mark, now_ns, us, Opts, Report};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const DEFAULT_ROOMS: usize = 1000;
const DEFAULT_MEMBERS: usize = 5;
/// Messages per second each member sends.
const DEFAULT_RATE: f64 = 1.0;
const DEFAULT_SIZE: usize = 64;
const DEFAULT_DURATION_SECS: f64 = 5.0;
const DEFAULT_CONNECT_RATE: f64 = 5000.0;
const DEFAULT_ROOM_PREFIX: &str = "r";
const MAX_PENDING_HANDSHAKES: usize = 200;
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
/// A room not yet synced gets another SYNC this often.
const SYNC_INTERVAL: Duration = Duration::from_millis(200);
const SYNC_TIMEOUT: Duration = Duration::from_secs(20);
/// After the last send, keep reading until no delivery has arrived for
/// DRAIN_QUIET (so a lagging server's backlog counts late, not lost), at
/// most DRAIN_MAX.
const DRAIN_QUIET: Duration = Duration::from_secs(2);
const DRAIN_MAX: Duration = Duration::from_secs(15);
/// How often the drain checks whether every member has everything.
const DRAIN_CHECK: Duration = Duration::from_millis(50);
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest sleep between sends.
const MAX_POLL_SLICE: Duration = Duration::from_millis(5);

#[derive(Default, Clone)]
struct Member {
    room: usize,
    /// Connection id of this member, if its socket could be created.
    id: Option<usize>,
    synced: bool,
    /// Bit (n × M + member) set: that message of the room received.
    seen: Vec<u64>,
    unique: u64,
    duplicates: u64,
    /// Why the server disconnected it during the run, if it did.
    ended: Option<String>,
    slow: bool,
}

struct Rooms {
    /// Bits of a member's `seen` in use: M × messages per member.
    bits_per_room: usize,
    /// Member index (room × M + member) of each connection id.
    member_of: Vec<usize>,
    members: Vec<Member>,
    /// Messages of each room that were handed to the socket (bitmap), and how many.
    sent: Vec<Vec<u64>>,
    sent_count: Vec<u64>,
    room_synced: Vec<usize>,
    synced: usize,
    latency: Histogram,
    deliveries: u64,
    last_delivery_ns: u64,
    misrouted: u64,
    corrupt: u64,
    closing: bool,
}

const NO_MEMBER: usize = usize::MAX;

impl Rooms {
    fn member(&mut self, id: usize) -> Option<&mut Member> {
        let m = *self.member_of.get(id)?;
        self.members.get_mut(m)
    }
}

impl Handler for Rooms {
    fn on_open(&mut self, _id: usize, _out: &mut Outbox) {}

    fn on_message(&mut self, id: usize, _opcode: u8, payload: &[u8], _out: &mut Outbox) {
        let now = now_ns();
        let Some((kind, seq, sent)) = read_header(payload) else {
            self.corrupt += 1;
            return;
        };
        let bits_per_room = self.bits_per_room;
        let Some(m) = self.member(id) else { return };
        let room = m.room;
        if (seq >> 32) as usize != room {
            self.misrouted += 1;
            return;
        }
        match kind {
            KIND_SYNC => {
                if !m.synced {
                    m.synced = true;
                    self.room_synced[room] += 1;
                    self.synced += 1;
                }
            }
            KIND_DATA => {
                let bit_no = (seq & 0xFFFF_FFFF) as usize;
                if bit_no >= bits_per_room {
                    self.corrupt += 1;
                    return;
                }
                if !mark(&mut m.seen, bit_no) {
                    m.duplicates += 1;
                    return;
                }
                m.unique += 1;
                self.deliveries += 1;
                self.last_delivery_ns = now;
                self.latency.record(now.saturating_sub(sent));
            }
            _ => self.corrupt += 1,
        }
    }

    fn on_closed(&mut self, id: usize, was_open: bool, code: Option<u16>, reason: &str) {
        if !was_open || self.closing {
            return;
        }
        if let Some(m) = self.member(id)
            && m.ended.is_none()
        {
            m.ended = Some(reason.to_string());
            m.slow = code == Some(CLOSE_POLICY);
        }
    }
}

pub fn run(addr: SocketAddr, opts: &Opts, report: &mut Report) -> Result<(), String> {
    let n_rooms: usize = opts.get("rooms", DEFAULT_ROOMS)?;
    let per_room: usize = opts.get("members", DEFAULT_MEMBERS)?;
    let rate: f64 = opts.get("rate", DEFAULT_RATE)?;
    let size: usize = opts.get("size", DEFAULT_SIZE)?;
    let duration: f64 = opts.get("duration", DEFAULT_DURATION_SECS)?;
    let connect_rate: f64 = opts.get("connect-rate", DEFAULT_CONNECT_RATE)?;
    let prefix = opts.get_str("room-prefix", DEFAULT_ROOM_PREFIX);
    let pid = opts.get_str("server-pid", "");
    opts.finish()?;
    if size < HEADER_BYTES {
        return Err(format!("--size must be at least {HEADER_BYTES}"));
    }
    if n_rooms == 0 || per_room == 0 || rate <= 0.0 || duration <= 0.0 {
        return Err("--rooms, --members, --rate and --duration must be positive".into());
    }
    // Messages each member sends; bits per room = per_room × that.
    let per_member = (rate * duration).round().max(1.0) as usize;
    let bits_per_room = per_room * per_member;
    if n_rooms > u32::MAX as usize || bits_per_room > u32::MAX as usize {
        return Err("too many rooms or messages per room".into());
    }
    let n_members = n_rooms * per_room;
    let words = bits_per_room.div_ceil(64);

    let mut net = Net::new(addr).map_err(|e| e.to_string())?;
    let mut st = Rooms {
        bits_per_room,
        member_of: Vec::new(),
        members: (0..n_members).map(|i| Member { room: i / per_room, seen: vec![0; words], ..Member::default() }).collect(),
        sent: vec![vec![0; words]; n_rooms],
        sent_count: vec![0; n_rooms],
        room_synced: vec![0; n_rooms],
        synced: 0,
        latency: Histogram::new(),
        deliveries: 0,
        last_delivery_ns: 0,
        misrouted: 0,
        corrupt: 0,
        closing: false,
    };

    // Open: member i joins room i / M.
    let t_open = Instant::now();
    let plan = OpenPlan { count: n_members, path: "", rate_per_sec: connect_rate, max_pending: MAX_PENDING_HANDSHAKES, deadline: t_open + OPEN_TIMEOUT };
    let ids = net::open_each(&mut net, &plan, |i| format!("/ws/{prefix}{}?raw=1", i / per_room), &mut st);
    let open_secs = t_open.elapsed().as_secs_f64();
    for (i, id) in ids.iter().enumerate() {
        if let Some(id) = *id {
            if st.member_of.len() <= id {
                st.member_of.resize(id + 1, NO_MEMBER);
            }
            st.member_of[id] = i;
            st.members[i].id = Some(id);
        }
    }
    let opened = net.open;
    eprintln!("loadgen rooms: {opened}/{n_members} members open in {open_secs:.2}s");
    let is_open = |net: &Net, m: &Member| m.id.is_some_and(|id| net.is_open(id));
    let open_in_room = |net: &Net, st: &Rooms, r: usize| {
        (r * per_room..(r + 1) * per_room).filter(|&i| is_open(net, &st.members[i])).count()
    };
    let mut buf = Vec::with_capacity(size);

    // Sync: in every room, the first open member sends SYNC until every open
    // member of the room has seen one.
    let sync_deadline = Instant::now() + SYNC_TIMEOUT;
    let mut next_sync = Instant::now();
    while st.synced < net.open && Instant::now() < sync_deadline {
        if Instant::now() >= next_sync {
            for r in 0..n_rooms {
                if st.room_synced[r] >= open_in_room(&net, &st, r) {
                    continue;
                }
                let sender = (r * per_room..(r + 1) * per_room).find(|&i| is_open(&net, &st.members[i]));
                if let Some(id) = sender.and_then(|i| st.members[i].id) {
                    build_at(&mut buf, size, (KIND_SYNC, (r as u64) << 32, now_ns()));
                    net.send(id, OP_BINARY, &buf);
                }
            }
            next_sync = Instant::now() + SYNC_INTERVAL;
        }
        net.poll(MAX_POLL_SLICE, &mut st);
    }
    let synced = st.synced;
    let status_held = proc_status(&pid);
    eprintln!("loadgen rooms: {synced} members synced");

    // Send: one message every `period`, round the rooms first.
    let total = (n_members * per_member) as u64;
    let period = Duration::from_secs_f64(1.0 / (rate * n_members as f64));
    let server_cpu0 = proc_cpu_secs(&pid);
    let own_cpu0 = proc_cpu_secs("self");
    let t0 = Instant::now();
    let t0_ns = now_ns();
    let (mut k, mut unsent) = (0u64, 0u64);
    let mut max_send_lag = Duration::ZERO;
    while k < total {
        let due = t0 + period.mul_f64(k as f64);
        let now = Instant::now();
        if now < due {
            net.poll((due - now).min(MAX_POLL_SLICE), &mut st);
            continue;
        }
        max_send_lag = max_send_lag.max(now - due);
        let pos = (k % n_members as u64) as usize;
        let n = (k / n_members as u64) as usize;
        let (room, member) = (pos % n_rooms, pos / n_rooms);
        k += 1;
        let Some(id) = st.members[room * per_room + member].id.filter(|&id| net.is_open(id)) else {
            unsent += 1;
            continue;
        };
        let bit_no = n * per_room + member;
        build_at(&mut buf, size, (KIND_DATA, ((room as u64) << 32) | bit_no as u64, now_ns()));
        net.send(id, OP_BINARY, &buf);
        if net.is_open(id) {
            mark(&mut st.sent[room], bit_no);
            st.sent_count[room] += 1;
        } else {
            unsent += 1;
        }
    }
    let send_secs = t0.elapsed().as_secs_f64();

    // Drain: until every member still connected has every message sent in its
    // room, or deliveries stopped for DRAIN_QUIET.
    let all_in = |net: &Net, st: &Rooms| {
        st.members.iter().all(|m| !is_open(net, m) || m.ended.is_some() || m.unique >= st.sent_count[m.room])
    };
    let drain_deadline = Instant::now() + DRAIN_MAX;
    let quiet_ns = DRAIN_QUIET.as_nanos() as u64;
    let quiet = |st: &Rooms| now_ns().saturating_sub(st.last_delivery_ns.max(t0_ns)) >= quiet_ns;
    let mut complete = all_in(&net, &st);
    let mut next_check = Instant::now() + DRAIN_CHECK;
    while !complete && Instant::now() < drain_deadline && !quiet(&st) {
        net.poll(MAX_POLL_SLICE, &mut st);
        if Instant::now() >= next_check {
            complete = all_in(&net, &st);
            next_check = Instant::now() + DRAIN_CHECK;
        }
    }
    let drain_cut_off = !complete && !all_in(&net, &st) && !quiet(&st);
    let server_cpu = server_cpu0.zip(proc_cpu_secs(&pid)).map(|(a, b)| b - a);
    let own_cpu = own_cpu0.zip(proc_cpu_secs("self")).map(|(a, b)| b - a);
    let elapsed_secs = t0.elapsed().as_secs_f64();
    let connected: Vec<bool> = st.members.iter().map(|m| is_open(&net, m) && m.ended.is_none()).collect();
    st.closing = true;
    net::close_all(&mut net, Instant::now() + CLOSE_TIMEOUT, &mut st);

    let (mut lost, mut lost_all, mut duplicates) = (0u64, 0u64, 0u64);
    let (mut slow, mut other_disconnects) = (0u64, 0u64);
    let mut disconnect_reasons: BTreeMap<String, u64> = BTreeMap::new();
    for (m, still) in st.members.iter().zip(&connected) {
        if m.id.is_none() || m.ended.is_none() && !still {
            continue; // never opened
        }
        let missing: u64 = st.sent[m.room].iter().zip(&m.seen).map(|(s, g)| (s & !g).count_ones() as u64).sum();
        lost_all += missing;
        duplicates += m.duplicates;
        if *still {
            lost += missing;
        } else if let Some(reason) = &m.ended {
            if m.slow {
                slow += 1;
            } else {
                other_disconnects += 1;
            }
            *disconnect_reasons.entry(reason.clone()).or_insert(0) += 1;
        }
    }
    let published: u64 = st.sent_count.iter().sum();
    let span_secs = (st.last_delivery_ns.saturating_sub(t0_ns) as f64 / 1e9).max(send_secs);
    report
        .int("rooms", n_rooms as u64)
        .int("members_per_room", per_room as u64)
        .int("members", n_members as u64)
        .int("members_open", opened as u64)
        .int("members_synced", synced as u64)
        .int("conns_failed", net.failed as u64)
        .num("open_secs", open_secs)
        .num("rate_per_member", rate)
        .int("size", size as u64)
        .num("duration_secs", duration)
        .int("published", published)
        .int("unsent", unsent)
        .num("send_secs", send_secs)
        .num("max_send_lag_ms", max_send_lag.as_secs_f64() * 1e3)
        .int("deliveries", st.deliveries)
        // From the first send to the last delivery, so a server that lags
        // behind is not credited with deliveries made after sending ended.
        .num("deliveries_per_sec", st.deliveries as f64 / span_secs)
        .num("expected_deliveries_per_sec", rate * (n_members * per_room) as f64)
        .num("drain_secs", elapsed_secs - send_secs)
        .num("latency_p50_us", us(st.latency.quantile(0.50)))
        .num("latency_p99_us", us(st.latency.quantile(0.99)))
        .num("latency_max_us", us(st.latency.max()))
        .bool("drain_cut_off", drain_cut_off)
        .int("lost", lost)
        .int("lost_incl_disconnected", lost_all)
        .int("duplicates", duplicates)
        .int("misrouted", st.misrouted)
        .int("corrupt", st.corrupt)
        .int("connected_at_end", connected.iter().filter(|&&c| c).count() as u64)
        .int("slow_disconnected", slow)
        .int("other_disconnected", other_disconnects)
        .counts("disconnect_reasons", &disconnect_reasons)
        .opt_num("server_cpu_secs", server_cpu)
        .opt_num("loadgen_cpu_secs", own_cpu);
    if let Some(s) = status_held {
        report.int("server_threads", s.threads).int("server_rss_kb", s.rss_kb);
    }
    Ok(())
}
