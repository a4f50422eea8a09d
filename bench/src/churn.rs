//! `churn` mode: C clients, each in a loop for D seconds: open a TCP
//! connection, WebSocket handshake on `/echo`, send one message, read its
//! echo, close with a clean close handshake, start again.
//!
//! A cycle counts only if the echo is byte for byte what was sent and the
//! server answered the close frame with its own (a server that just drops
//! the TCP connection fails the cycle). Handshake latency is from the start
//! of the TCP connect to the `101` response; a full cycle is from the connect
//! to the server's close frame. The server's threads and RSS are read before,
//! sampled during (peak), and read again once its thread count is back at the
//! baseline after the run (bounded wait, as in `conns` mode).
//!
//! Bounded: at most `--max-cycles` cycles, each at most `--cycle-timeout`
//! seconds (then it is dropped and counted as a failure), and after the run
//! at most DRAIN_MAX for the cycles in progress to end.

use crate::frame::OP_BINARY;
use crate::hist::Histogram;
use crate::net::{Handler, Net, Outbox, CLOSE_NORMAL};
use crate::procfs::{proc_status, rss_back, wait_threads_back, ProcStatus};
use crate::util::{now_ns, us, Opts, Report};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const DEFAULT_CLIENTS: usize = 10;
const DEFAULT_DURATION_SECS: f64 = 5.0;
const DEFAULT_SIZE: usize = 64;
/// Bounds the run's connections (and the load generator's connection table,
/// which keeps one entry per connection ever opened).
const DEFAULT_MAX_CYCLES: u64 = 300_000;
const DEFAULT_CYCLE_TIMEOUT_SECS: f64 = 10.0;
/// After the run, how long the cycles still in progress get to finish.
const DRAIN_MAX: Duration = Duration::from_secs(12);
/// A client whose cycle failed waits this long before the next one, so a
/// server refusing connections is not hammered in a tight loop.
const FAILURE_BACKOFF: Duration = Duration::from_millis(10);
const POLL_SLICE: Duration = Duration::from_millis(1);
/// How often the server's threads and RSS are sampled during the run.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Payload: [cycle u64 LE][fill derived from the cycle number].
const HEADER_BYTES: usize = 8;

fn fill_byte(cycle: u64, i: usize) -> u8 {
    cycle.wrapping_mul(151).wrapping_add(i as u64 * 3) as u8
}

fn payload(buf: &mut Vec<u8>, cycle: u64, size: usize) {
    buf.clear();
    buf.extend_from_slice(&cycle.to_le_bytes());
    buf.extend((HEADER_BYTES..size).map(|i| fill_byte(cycle, i)));
}

/// One client's cycle in progress.
#[derive(Clone, Copy)]
struct Cycle {
    id: usize,
    number: u64,
    started_ns: u64,
    echoed: bool,
    echo_ok: bool,
    closing: bool,
}

struct Churn {
    size: usize,
    /// Client `c`'s cycle in progress, if any.
    clients: Vec<Option<Cycle>>,
    /// When client `c` may start its next cycle.
    next_start: Vec<Instant>,
    /// Connection id → client, for the connections of cycles in progress.
    owner: Vec<u32>,
    /// Connections whose echo arrived: close them after this poll.
    to_close: Vec<usize>,
    handshake: Histogram,
    cycle: Histogram,
    cycles_ok: u64,
    cycles_in_window: u64,
    window_end_ns: u64,
    mismatches: u64,
    failures: BTreeMap<String, u64>,
    buf: Vec<u8>,
}

const NO_OWNER: u32 = u32::MAX;

impl Churn {
    fn fail(&mut self, why: String) {
        *self.failures.entry(why).or_insert(0) += 1;
    }

    fn client_of(&self, id: usize) -> Option<usize> {
        self.owner.get(id).copied().filter(|&c| c != NO_OWNER).map(|c| c as usize)
    }
}

impl Handler for Churn {
    fn on_open(&mut self, id: usize, out: &mut Outbox) {
        let now = now_ns();
        let Some(c) = self.client_of(id) else { return };
        let Some(cy) = self.clients[c] else { return };
        self.handshake.record(now.saturating_sub(cy.started_ns));
        payload(&mut self.buf, cy.number, self.size);
        out.send(OP_BINARY, &self.buf);
    }

    fn on_message(&mut self, id: usize, opcode: u8, data: &[u8], _out: &mut Outbox) {
        let Some(c) = self.client_of(id) else { return };
        let Some(cy) = self.clients[c].as_mut() else { return };
        if cy.echoed {
            self.mismatches += 1; // a second message: /echo sends exactly one back
            return;
        }
        cy.echoed = true;
        payload(&mut self.buf, cy.number, self.size);
        cy.echo_ok = opcode == OP_BINARY && data == self.buf.as_slice();
        if !cy.echo_ok {
            self.mismatches += 1;
        }
        self.to_close.push(id);
    }

    fn on_closed(&mut self, id: usize, was_open: bool, code: Option<u16>, reason: &str) {
        let now = now_ns();
        let Some(c) = self.client_of(id) else { return };
        self.owner[id] = NO_OWNER;
        let Some(cy) = self.clients[c].take() else { return };
        let clean = cy.closing && code.is_some();
        if clean && cy.echo_ok {
            self.cycles_ok += 1;
            if now <= self.window_end_ns {
                self.cycles_in_window += 1;
            }
            self.cycle.record(now.saturating_sub(cy.started_ns));
            self.next_start[c] = Instant::now();
            return;
        }
        let why = if !was_open {
            reason.to_string()
        } else if !cy.echoed {
            format!("closed before the echo: {reason}")
        } else if !cy.echo_ok {
            "echo mismatch".to_string()
        } else {
            format!("no close frame from the server: {reason}")
        };
        self.fail(why);
        self.next_start[c] = Instant::now() + FAILURE_BACKOFF;
    }
}

/// Server threads and RSS: peak of the samples taken during the run.
#[derive(Default)]
struct Peak {
    threads: u64,
    rss_kb: u64,
}

impl Peak {
    fn sample(&mut self, pid: &str) {
        if let Some(s) = proc_status(pid) {
            self.threads = self.threads.max(s.threads);
            self.rss_kb = self.rss_kb.max(s.rss_kb);
        }
    }
}

pub fn run(addr: SocketAddr, opts: &Opts, report: &mut Report) -> Result<(), String> {
    let n_clients: usize = opts.get("clients", DEFAULT_CLIENTS)?;
    let duration: f64 = opts.get("duration", DEFAULT_DURATION_SECS)?;
    let size: usize = opts.get("size", DEFAULT_SIZE)?;
    let max_cycles: u64 = opts.get("max-cycles", DEFAULT_MAX_CYCLES)?;
    let cycle_timeout: f64 = opts.get("cycle-timeout", DEFAULT_CYCLE_TIMEOUT_SECS)?;
    let path = opts.get_str("path", "/echo");
    let pid = opts.get_str("server-pid", "");
    opts.finish()?;
    if size < HEADER_BYTES {
        return Err(format!("--size must be at least {HEADER_BYTES}"));
    }
    if n_clients == 0 || duration <= 0.0 || cycle_timeout <= 0.0 {
        return Err("--clients, --duration and --cycle-timeout must be positive".into());
    }
    let cycle_timeout_ns = (cycle_timeout * 1e9) as u64;
    let base: Option<ProcStatus> = proc_status(&pid);
    if !pid.is_empty() && base.is_none() {
        return Err(format!("cannot read /proc/{pid}/status"));
    }

    let mut net = Net::new(addr).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let t0_ns = now_ns();
    let end = t0 + Duration::from_secs_f64(duration);
    let mut st = Churn {
        size,
        clients: vec![None; n_clients],
        next_start: vec![t0; n_clients],
        owner: Vec::new(),
        to_close: Vec::new(),
        handshake: Histogram::new(),
        cycle: Histogram::new(),
        cycles_ok: 0,
        cycles_in_window: 0,
        window_end_ns: t0_ns + (duration * 1e9) as u64,
        mismatches: 0,
        failures: BTreeMap::new(),
        buf: Vec::with_capacity(size),
    };
    let mut peak = Peak::default();
    peak.sample(&pid);
    let mut next_sample = t0;
    let mut started = 0u64;
    let mut left_in_progress = 0;
    loop {
        let now = Instant::now();
        if now >= next_sample {
            peak.sample(&pid);
            next_sample = now + SAMPLE_EVERY;
        }
        let starting = now < end && started < max_cycles;
        if !starting && st.clients.iter().all(Option::is_none) {
            break;
        }
        if now >= end + DRAIN_MAX {
            let stuck: Vec<usize> = st.clients.iter().flatten().map(|cy| cy.id).collect();
            left_in_progress = stuck.len();
            for id in stuck {
                net.abort(id, "still in progress after the run", &mut st);
            }
            break;
        }
        let now_n = now_ns();
        for c in 0..n_clients {
            match st.clients[c] {
                Some(cy) if now_n.saturating_sub(cy.started_ns) > cycle_timeout_ns => {
                    net.abort(cy.id, "cycle timeout", &mut st);
                }
                Some(_) => {}
                None if starting && now >= st.next_start[c] && started < max_cycles => {
                    let started_ns = now_ns();
                    let number = started;
                    started += 1;
                    match net.connect(&path) {
                        Some(id) => {
                            if st.owner.len() <= id {
                                st.owner.resize(id + 1, NO_OWNER);
                            }
                            st.owner[id] = c as u32;
                            st.clients[c] = Some(Cycle { id, number, started_ns, echoed: false, echo_ok: false, closing: false });
                        }
                        None => {
                            // Why is in `end_reasons` ("connect: ...").
                            st.fail("socket could not be created".into());
                            st.next_start[c] = now + FAILURE_BACKOFF;
                        }
                    }
                }
                None => {}
            }
        }
        net.poll(POLL_SLICE, &mut st);
        for id in std::mem::take(&mut st.to_close) {
            if let Some(c) = st.client_of(id)
                && let Some(cy) = st.clients[c].as_mut()
            {
                cy.closing = true;
                net.close(id, CLOSE_NORMAL);
                if !net.is_live(id) {
                    // Writing the close frame failed; the connection is gone.
                    st.on_closed(id, true, None, "close frame could not be written");
                }
            }
        }
    }
    let run_secs = t0.elapsed().as_secs_f64();
    let conns_failed = net.failed;
    let end_reasons = std::mem::take(&mut net.end_reasons);
    drop(net);
    eprintln!(
        "loadgen churn: {} cycles ({} in the {duration}s window), {} failed, {left_in_progress} still in progress at the end",
        st.cycles_ok,
        st.cycles_in_window,
        st.failures.values().sum::<u64>()
    );

    // Once everything is closed: the server's threads back at the baseline?
    let mut threads_returned_secs = None;
    let mut after = None;
    if let Some(base) = base {
        peak.sample(&pid);
        // A server whose threads grew by fewer than the clients does not run a
        // thread per connection: what it added are runtime threads, kept.
        threads_returned_secs = wait_threads_back(&pid, base.threads, peak.threads, n_clients as u64)?;
        // Give the allocator and kernel a moment after the threads are gone.
        std::thread::sleep(Duration::from_millis(500));
        after = Some(proc_status(&pid).ok_or("server exited")?);
    }

    let failed: u64 = st.failures.values().sum();
    report
        .int("clients", n_clients as u64)
        .num("duration_secs", duration)
        .int("size", size as u64)
        .int("cycles_started", started)
        .int("cycles", st.cycles_ok)
        .int("cycles_in_window", st.cycles_in_window)
        .num("conns_per_sec", st.cycles_in_window as f64 / duration)
        .num("run_secs", run_secs)
        .num("handshake_p50_us", us(st.handshake.quantile(0.50)))
        .num("handshake_p99_us", us(st.handshake.quantile(0.99)))
        .num("handshake_max_us", us(st.handshake.max()))
        .num("cycle_p50_us", us(st.cycle.quantile(0.50)))
        .num("cycle_p99_us", us(st.cycle.quantile(0.99)))
        .num("cycle_max_us", us(st.cycle.max()))
        .int("failed_cycles", failed)
        .counts("failure_reasons", &st.failures)
        .int("mismatches", st.mismatches)
        .int("left_in_progress", left_in_progress as u64)
        .int("conns_failed", conns_failed as u64)
        .counts("end_reasons", &end_reasons);
    if let (Some(base), Some(after)) = (base, after) {
        report
            .int("server_threads_base", base.threads)
            .int("server_threads_peak", peak.threads)
            .int("server_threads_after", after.threads)
            .int("server_rss_base_kb", base.rss_kb)
            .int("server_rss_peak_kb", peak.rss_kb)
            .int("server_rss_after_kb", after.rss_kb)
            .opt_num("threads_returned_secs", threads_returned_secs)
            .bool("threads_returned", threads_returned_secs.is_some())
            .bool("rss_returned", rss_back(base.rss_kb, peak.rss_kb, after.rss_kb));
    }
    Ok(())
}
