//! `conns` mode: hold N idle room connections, measure what they cost the
//! server (RSS, threads) and the machine (MemAvailable), send one broadcast
//! that must reach all of them, close them, and check the server returns to
//! its baseline.
//!
//! `idle` mode: hold N idle connections for D seconds and measure the
//! server's CPU time (utime + stime) over that time.

use crate::frame::OP_BINARY;
use crate::net::{self, Handler, Net, OpenPlan, Outbox};
use crate::procfs::{
    kernel_conn_memory_kb, mem_available_kb, proc_cpu_secs, proc_status, rss_back, wait_threads_back, ProcStatus,
};
use crate::util::{now_ns, us, Opts, Report};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const DEFAULT_CONNS: usize = 1000;
const DEFAULT_CONNECT_RATE: f64 = 2000.0;
const DEFAULT_ROOM: &str = "idle";
const DEFAULT_SETTLE_SECS: f64 = 1.0;
const DEFAULT_HOLD_SECS: f64 = 30.0;
const MAX_PENDING_HANDSHAKES: usize = 100;
const OPEN_TIMEOUT: Duration = Duration::from_secs(120);
const BROADCAST_TIMEOUT: Duration = Duration::from_secs(20);
const BROADCAST_SIZE: usize = 64;
const CLOSE_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Idle {
    got_broadcast: Vec<bool>,
    broadcast_receivers: usize,
    last_broadcast_ns: u64,
    broadcast_sent_ns: u64,
    publisher: Option<usize>,
    closed_while_held: u64,
    closing: bool,
}

impl Handler for Idle {
    fn on_open(&mut self, id: usize, _out: &mut Outbox) {
        if self.got_broadcast.len() <= id {
            self.got_broadcast.resize(id + 1, false);
        }
    }

    fn on_message(&mut self, id: usize, _opcode: u8, _payload: &[u8], _out: &mut Outbox) {
        if Some(id) == self.publisher || self.got_broadcast[id] {
            return;
        }
        self.got_broadcast[id] = true;
        self.broadcast_receivers += 1;
        self.last_broadcast_ns = now_ns();
    }

    fn on_closed(&mut self, _id: usize, was_open: bool, _code: Option<u16>, _reason: &str) {
        if was_open && !self.closing {
            self.closed_while_held += 1;
        }
    }
}

struct Snapshot {
    server: ProcStatus,
    mem_available_kb: u64,
    kernel_kb: u64,
    loadgen: ProcStatus,
}

fn snapshot(pid: &str) -> Result<Snapshot, String> {
    Ok(Snapshot {
        server: proc_status(pid).ok_or_else(|| format!("cannot read /proc/{pid}/status"))?,
        mem_available_kb: mem_available_kb().ok_or("cannot read MemAvailable")?,
        kernel_kb: kernel_conn_memory_kb().unwrap_or(0),
        loadgen: proc_status("self").unwrap_or_default(),
    })
}

/// Wait (bounded) until MemAvailable stops moving, so memory still being
/// released by an earlier run, or reclaimed in the background, does not land
/// in the baseline.
fn wait_for_stable_memory() {
    const SAMPLE_EVERY: Duration = Duration::from_millis(250);
    const STABLE_WITHIN_KB: i64 = 2048;
    const MAX_WAIT: Duration = Duration::from_secs(5);
    let t = Instant::now();
    let mut last = mem_available_kb().unwrap_or(0) as i64;
    while t.elapsed() < MAX_WAIT {
        std::thread::sleep(SAMPLE_EVERY);
        let now = mem_available_kb().unwrap_or(0) as i64;
        if (now - last).abs() < STABLE_WITHIN_KB {
            return;
        }
        last = now;
    }
}

fn per_conn(delta_kb: i64, n: usize) -> f64 {
    if n == 0 { 0.0 } else { delta_kb as f64 / n as f64 }
}

/// Open `n` idle subscribers and one publisher in the room.
fn open_idle(net: &mut Net, st: &mut Idle, n: usize, rate: f64, room: &str) -> (usize, f64) {
    let path = format!("/ws/{room}?raw=1");
    let t = Instant::now();
    let plan = OpenPlan { count: n, path: &path, rate_per_sec: rate, max_pending: MAX_PENDING_HANDSHAKES, deadline: t + OPEN_TIMEOUT };
    net::open_many(net, &plan, st);
    let opened = net.open;
    let plan = OpenPlan { count: 1, path: &path, rate_per_sec: rate, max_pending: 1, deadline: Instant::now() + Duration::from_secs(10) };
    st.publisher = net::open_many(net, &plan, st).first().copied().filter(|&id| net.is_open(id));
    (opened, t.elapsed().as_secs_f64())
}

pub fn run_conns(addr: SocketAddr, opts: &Opts, report: &mut Report) -> Result<(), String> {
    let n: usize = opts.get("conns", DEFAULT_CONNS)?;
    let rate: f64 = opts.get("connect-rate", DEFAULT_CONNECT_RATE)?;
    let settle: f64 = opts.get("settle", DEFAULT_SETTLE_SECS)?;
    let room = opts.get_str("room", DEFAULT_ROOM);
    let pid = opts.get_str("server-pid", "");
    opts.finish()?;
    if pid.is_empty() {
        return Err("conns mode needs --server-pid".into());
    }

    wait_for_stable_memory();
    let base = snapshot(&pid)?;
    let mut net = Net::new(addr).map_err(|e| e.to_string())?;
    let mut st = Idle::default();
    let (opened, open_secs) = open_idle(&mut net, &mut st, n, rate, &room);
    eprintln!("loadgen conns: {opened}/{n} open in {open_secs:.2}s");
    net::run_until(&mut net, Instant::now() + Duration::from_secs_f64(settle), &mut st);
    let held = snapshot(&pid).map_err(|e| {
        format!("{e} (server gone; at most {} connections were open at once; ends: {:?})", net.peak_open, net.end_reasons)
    })?;
    let held_open = net.open.saturating_sub(st.publisher.is_some() as usize);

    // One broadcast that every held connection must receive.
    let mut broadcast_ms = None;
    if let Some(publisher) = st.publisher {
        let mut payload = vec![0u8; BROADCAST_SIZE];
        st.broadcast_sent_ns = now_ns();
        payload[..8].copy_from_slice(&st.broadcast_sent_ns.to_le_bytes());
        net.send(publisher, OP_BINARY, &payload);
        let deadline = Instant::now() + BROADCAST_TIMEOUT;
        while st.broadcast_receivers < held_open && Instant::now() < deadline {
            net.poll(Duration::from_millis(5), &mut st);
        }
        if st.broadcast_receivers > 0 {
            broadcast_ms = Some(us(st.last_broadcast_ns - st.broadcast_sent_ns) / 1e3);
        }
    }
    let closed_while_held = st.closed_while_held;

    st.closing = true;
    let t_close = Instant::now();
    net::close_all(&mut net, t_close + CLOSE_TIMEOUT, &mut st);
    let close_secs = t_close.elapsed().as_secs_f64();
    let failed = net.failed;
    drop(net);

    // Wait for the server's threads to return to the baseline.
    let threads_returned_secs = wait_threads_back(&pid, base.server.threads, held.server.threads, 0)?;
    // Give the allocator and kernel a moment after the threads are gone.
    std::thread::sleep(Duration::from_millis(500));
    let after = snapshot(&pid)?;

    let rss_growth = held.server.rss_kb as i64 - base.server.rss_kb as i64;
    let rss_returned = rss_back(base.server.rss_kb, held.server.rss_kb, after.server.rss_kb);
    let mem_used_kb = base.mem_available_kb as i64 - held.mem_available_kb as i64;
    let loadgen_growth_kb = held.loadgen.rss_kb as i64 - base.loadgen.rss_kb as i64;
    let mem_left_kb = base.mem_available_kb as i64 - after.mem_available_kb as i64;
    report
        .int("conns", n as u64)
        .int("conns_open", held_open as u64)
        .int("conns_failed", failed as u64)
        .num("open_secs", open_secs)
        .num("connect_rate", rate)
        .int("server_rss_base_kb", base.server.rss_kb)
        .int("server_rss_held_kb", held.server.rss_kb)
        .int("server_rss_after_kb", after.server.rss_kb)
        .num("server_rss_per_conn_kb", per_conn(rss_growth, held_open))
        .int("server_threads_base", base.server.threads)
        .int("server_threads_held", held.server.threads)
        .int("server_threads_after", after.server.threads)
        .num("server_threads_per_conn", per_conn(held.server.threads as i64 - base.server.threads as i64, held_open))
        .int("machine_mem_used_kb", mem_used_kb)
        .num("machine_kb_per_conn", per_conn(mem_used_kb, held_open))
        .num("machine_kb_per_conn_excl_loadgen", per_conn(mem_used_kb - loadgen_growth_kb, held_open))
        .int("loadgen_rss_growth_kb", loadgen_growth_kb)
        .num("kernel_kb_per_conn", per_conn(held.kernel_kb as i64 - base.kernel_kb as i64, held_open))
        .int("machine_mem_left_after_kb", mem_left_kb)
        .int("broadcast_receivers", st.broadcast_receivers as u64)
        .opt_num("broadcast_all_ms", broadcast_ms.filter(|_| st.broadcast_receivers >= held_open))
        .opt_num("broadcast_last_ms", broadcast_ms)
        .int("closed_while_held", closed_while_held)
        .num("close_secs", close_secs)
        .opt_num("threads_returned_secs", threads_returned_secs)
        .bool("threads_returned", threads_returned_secs.is_some())
        .bool("rss_returned", rss_returned);
    Ok(())
}

pub fn run_idle(addr: SocketAddr, opts: &Opts, report: &mut Report) -> Result<(), String> {
    let n: usize = opts.get("conns", DEFAULT_CONNS)?;
    let rate: f64 = opts.get("connect-rate", DEFAULT_CONNECT_RATE)?;
    let settle: f64 = opts.get("settle", DEFAULT_SETTLE_SECS)?;
    let hold: f64 = opts.get("hold", DEFAULT_HOLD_SECS)?;
    let room = opts.get_str("room", DEFAULT_ROOM);
    let pid = opts.get_str("server-pid", "");
    opts.finish()?;
    if pid.is_empty() {
        return Err("idle mode needs --server-pid".into());
    }

    let mut net = Net::new(addr).map_err(|e| e.to_string())?;
    let mut st = Idle::default();
    let (opened, open_secs) = open_idle(&mut net, &mut st, n, rate, &room);
    eprintln!("loadgen idle: {opened}/{n} open in {open_secs:.2}s, holding {hold}s");
    net::run_until(&mut net, Instant::now() + Duration::from_secs_f64(settle), &mut st);
    let cpu0 = proc_cpu_secs(&pid).ok_or_else(|| {
        format!("cannot read server CPU time (server gone; at most {} connections were open at once)", net.peak_open)
    })?;
    let own0 = proc_cpu_secs("self").unwrap_or(0.0);
    let t = Instant::now();
    net::run_until(&mut net, t + Duration::from_secs_f64(hold), &mut st);
    let held_secs = t.elapsed().as_secs_f64();
    let cpu1 = proc_cpu_secs(&pid).ok_or("cannot read server CPU time")?;
    let own1 = proc_cpu_secs("self").unwrap_or(0.0);
    let status = proc_status(&pid).unwrap_or_default();
    let held_open = net.open.saturating_sub(st.publisher.is_some() as usize);
    let closed_while_held = st.closed_while_held;
    st.closing = true;
    net::close_all(&mut net, Instant::now() + CLOSE_TIMEOUT, &mut st);

    let server_cpu = cpu1 - cpu0;
    report
        .int("conns", n as u64)
        .int("conns_open", held_open as u64)
        .num("open_secs", open_secs)
        .num("hold_secs", held_secs)
        .num("server_cpu_secs", server_cpu)
        .num("server_cpu_percent", 100.0 * server_cpu / held_secs)
        .num("server_cpu_us_per_conn_per_sec", 1e6 * server_cpu / held_secs / n.max(1) as f64)
        .num("loadgen_cpu_secs", own1 - own0)
        .int("server_threads", status.threads)
        .int("server_rss_kb", status.rss_kb)
        .int("closed_while_held", closed_while_held);
    Ok(())
}
