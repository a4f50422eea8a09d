#!/usr/bin/env python3
"""Run the threadcast benchmark suite and write BENCHMARKS.md.

Started by bench/run.sh after it has installed and built everything; it can
also be run by hand (python3 bench/runner.py --help). Python standard library
only.

For every case of every scenario it runs the load generator against each
server in turn, interleaved over several repeats (A B C A B C ...) so that
drift of the shared machine hits every server alike. Each run gets a freshly
started server. Every run's JSON line is kept in bench/results/results.jsonl;
BENCHMARKS.md shows the median over the repeats and the ratio
threadcast/peer, with SVG plots in bench/results/.
"""

import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
LOG_DIR = os.path.join(BENCH_DIR, "target", "bench-logs")
LOADGEN = os.path.join(BENCH_DIR, "target", "release", "loadgen")
REPORT_PATH = os.path.join(ROOT, "BENCHMARKS.md")

# How long a server may take to print its listening line.
SERVER_START_TIMEOUT_S = 30
# How long a server gets to exit after SIGTERM before SIGKILL.
SERVER_STOP_TIMEOUT_S = 10
# Extra time a loadgen run gets on top of its own expected duration.
LOADGEN_TIMEOUT_SLACK_S = 90
LISTEN_RE = re.compile(r"listening\b.*\bws=(\S+)")

THREADCAST = "threadcast"
SERVERS = {
    THREADCAST: [os.path.join(ROOT, "target", "release", "threadcast"),
                 "--http", "127.0.0.1:0",
                 # Every load-generator connection comes from 127.0.0.1 and publishes
                 # as fast as the scenario asks: lift the per-client limits.
                 "--max-connections", "20000", "--max-connections-per-ip", "20000",
                 "--max-messages-per-second", "1000000", "--log-level", "info"],
    "gorilla": [os.path.join(BENCH_DIR, "go", "wspeer"), "-addr", "127.0.0.1:0"],
    "node-ws": ["node", os.path.join(BENCH_DIR, "node", "server.js"), "--port", "0"],
}
SERVER_NOTES = {
    THREADCAST: "this project: 2 threads per connection (reader + writer), tiny_http + tungstenite",
    "gorilla": "Go, gorilla/websocket (Debian package), hub goroutine + readPump/writePump per client",
    "node-ws": "Node.js, npm `ws`, single-threaded event loop",
}
SERVER_COLORS = {THREADCAST: "#d62728", "gorilla": "#1f77b4", "node-ws": "#2ca02c"}

# threadcast keeping room histories on disk (issue 16): the same command with
# --fsync MODE, and --data-dir a fresh temporary directory for every run (under
# BENCH_STORE_DIR, else the system's temp directory), removed after the run. The
# store scenarios compare them with threadcast without a store ("memory-only").
STORE_VARIANTS = {"tc-batch": "batch", "tc-always": "always", "tc-never": "never"}
# The servers of every other scenario (the default of --servers).
BASE_SERVERS = list(SERVERS)
for _name, _mode in STORE_VARIANTS.items():
    SERVERS[_name] = SERVERS[THREADCAST] + ["--fsync", _mode]
    SERVER_NOTES[_name] = f"threadcast with `--data-dir` (fresh temp directory per run) and `--fsync {_mode}`"
SERVER_COLORS.update({"tc-batch": "#ff7f0e", "tc-always": "#9467bd", "tc-never": "#8c564b"})
STORE_LABELS = {THREADCAST: "memory-only", "tc-batch": "--fsync batch",
                "tc-always": "--fsync always", "tc-never": "--fsync never"}
STORE_SCENARIOS = ("store-publish", "store-fanout")

# The floor (issue 18): a reference server built from bench/floor by run.sh, serving
# /echo and /ws/<room>?raw=1 exactly like the gorilla peer. Not one of the default
# servers: it runs only in the cases that name it (Case.extra_servers), and with an
# explicit --servers only if listed there; skipped when its binary is missing.
FLOOR = "floor"
SERVERS[FLOOR] = [os.path.join(BENCH_DIR, "target", "release", "floor"), "--addr", "127.0.0.1:0"]
SERVER_NOTES[FLOOR] = ("the floor of issue 18 (`bench/floor`): a reference server for the same endpoints, "
                       "run in the fan-out, fan-out 64 KiB, churn and many-rooms scenarios only")
SERVER_COLORS[FLOOR] = "#7f7f7f"
OPTIONAL_SERVERS = [FLOOR]


def server_available(name):
    """Whether a server's binary is there (the floor is built only once its crate exists)."""
    return name not in OPTIONAL_SERVERS or os.path.exists(SERVERS[name][0])


def store_parent():
    return os.environ.get("BENCH_STORE_DIR") or tempfile.gettempdir()


def store_filesystem():
    """What the data directories live on (fsync cost depends on it)."""
    parent = store_parent()
    df = sh(f"df --output=source,fstype,target '{parent}' | tail -1").split()
    if len(df) < 3:
        return f"{parent}: ?"
    source, fstype, target = df[:3]
    opts = next((l.split()[3] for l in read_first("/proc/mounts").splitlines()
                 if l.split()[1:2] == [target]), "?")
    dev = os.path.basename(source)
    kind = "virtio block device" if dev.startswith("vd") else ""
    rot = read_first(f"/sys/block/{dev}/queue/rotational")
    if rot in ("0", "1"):
        kind += f"{', ' if kind else ''}queue/rotational={rot}"
    return (f"{parent} on {source} ({fstype}, mounted on {target}, {opts}"
            + (f"; {kind}" if kind else "") + ")"
            + (" — tmpfs: fsync costs nothing here" if fstype == "tmpfs" else "")
            + (" — overlay: fsync reaches the filesystem underneath" if fstype == "overlay" else ""))


class Case:
    """One loadgen invocation (run once per server per repeat)."""

    def __init__(self, scenario, key, mode, args, expect_s, repeats=None, servers=None, server_args=(),
                 extra_servers=()):
        self.scenario = scenario   # table it belongs to
        self.key = key             # row label within the table
        self.mode = mode
        self.args = args           # loadgen options (strings)
        self.expect_s = expect_s   # rough wall time of one run
        self.repeats = repeats     # overrides the suite's repeat count
        self.servers = servers     # run against these instead of --servers (store cases)
        self.server_args = list(server_args)  # added to every server's command line
        self.extra_servers = list(extra_servers)  # optional servers (the floor) run in this case too

    def name(self):
        return f"{self.scenario}/{self.key}"


def suite(quick):
    """The scenarios of the issue; --quick runs a smaller, shorter subset."""
    cases = []
    echo_secs, warm = ("2", "0.5") if quick else ("3", "1")
    for conns in ([10, 100] if quick else [1, 10, 100, 1000]):
        cases.append(Case("echo-64B", conns, "echo",
                          ["--conns", str(conns), "--window", "8", "--size", "64",
                           "--duration", echo_secs, "--warmup", warm],
                          float(echo_secs) + float(warm) + 0.6))
    cases.append(Case("echo-64KiB", 10, "echo",
                      ["--conns", "10", "--window", "8", "--size", "65536",
                       "--duration", echo_secs, "--warmup", warm],
                      float(echo_secs) + float(warm) + 0.6))
    fan_secs = "3" if quick else "5"
    for subs in ([100] if quick else [100, 1000, 5000]):
        cases.append(Case("fanout", subs, "fanout",
                          ["--subscribers", str(subs), "--rate", "100", "--size", "64",
                           "--duration", fan_secs], int(fan_secs) + 2 + subs / 500,
                          extra_servers=[FLOOR]))
    if not quick:
        # Issue 18: big messages. 50 msg/s of 64 KiB to 100 subscribers is 5,000
        # deliveries/s, 328 MB/s: a real load for the copy path that leaves the 2
        # shared cores headroom (each server used well under one core in trials).
        cases.append(Case("fanout-64KiB", 100, "fanout",
                          ["--subscribers", "100", "--rate", "50", "--size", "65536",
                           "--duration", fan_secs], int(fan_secs) + 3, extra_servers=[FLOOR]))
        # Issue 18: connection churn, C clients each connecting, echoing one message
        # and closing in a loop.
        for clients in (10, 100):
            cases.append(Case("churn", clients, "churn",
                              ["--clients", str(clients), "--duration", "5", "--size", "64"], 5 + 3,
                              extra_servers=[FLOOR]))
        # Issue 18: many small rooms, 1,000 rooms of 5 members, each member sending
        # 1 msg/s (5,000 msg/s, 25,000 deliveries/s), over 5,000 connections.
        cases.append(Case("many-rooms", 1000, "rooms",
                          ["--rooms", "1000", "--members", "5", "--rate", "1", "--size", "64",
                           "--duration", "5"], 5 + 5, extra_servers=[FLOOR]))
    for conns in ([1000] if quick else [1000, 5000, 10000]):
        cases.append(Case("idle-conns", conns, "conns",
                          ["--conns", str(conns), "--connect-rate", "2000"], 4 + conns / 2000))
    hold = "5" if quick else "30"
    # One 30 s window already averages over time, so the full suite runs the
    # idle-CPU case once per server to stay inside its time budget.
    cases.append(Case("idle-cpu", 1000, "idle",
                      ["--conns", "1000", "--hold", hold, "--settle", "2"], int(hold) + 4,
                      repeats=1))
    # Issue 16: what --data-dir costs, against threadcast without it, per --fsync mode.
    # HTTP publishes, each on a fresh connection, P in flight, into one room with 4
    # WebSocket subscribers (every acknowledged message must reach each). A
    # subscriber's send queue is raised so a scheduling hiccup of the shared cores
    # does not close one as a slow consumer (that would lighten the server's work).
    store_all = [THREADCAST] + list(STORE_VARIANTS)
    pub_secs, pub_warm = ("2", "0.5") if quick else ("3", "1")
    for pubs, variants in ([(8, store_all)] if quick else [(8, store_all), (64, [THREADCAST, "tc-batch"])]):
        cases.append(Case("store-publish", pubs, "publish",
                          ["--publishers", str(pubs), "--subscribers", "4", "--size", "64",
                           "--duration", pub_secs, "--warmup", pub_warm],
                          float(pub_secs) + float(pub_warm) + 1.5, servers=variants,
                          server_args=["--send-queue", "100000"]))
    # The fan-out case above at 1,000 subscribers, memory-only and --fsync batch.
    cases.append(Case("store-fanout", 1000, "fanout",
                      ["--subscribers", "1000", "--rate", "100", "--size", "64",
                       "--duration", fan_secs], int(fan_secs) + 4,
                      servers=[THREADCAST, "tc-batch"]))
    return cases


def case_servers(case, servers, explicit=False):
    """Which servers a case runs against: its own list (the store cases, when
    threadcast is selected), else the suite's plus the optional servers the case
    names (with an explicit --servers, only those listed in it) whose binary exists."""
    if case.servers is not None:
        return case.servers if THREADCAST in servers else []
    extra = [s for s in case.extra_servers if (s in servers or not explicit) and server_available(s)]
    return [s for s in servers if s in BASE_SERVERS] + extra


# ---------------------------------------------------------------- running

def start_server(name, log_path, extra_args=(), data_dir=None):
    log = open(log_path, "wb")
    cmd = SERVERS[name] + list(extra_args) + (["--data-dir", data_dir] if data_dir else [])
    # A session of its own puts the server in its own scheduler autogroup, so
    # a server with thousands of runnable threads cannot starve the load
    # generator (which gets its own session too): each gets half the CPU
    # when both want more.
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        with open(log_path, "rb") as f:
            m = LISTEN_RE.search(f.read().decode(errors="replace"))
        if m:
            return proc, m.group(1), log
        time.sleep(0.05)
    stop_server(proc, log)
    tail = open(log_path, "rb").read()[-2000:].decode(errors="replace")
    raise RuntimeError(f"{name} did not report a listening address:\n{tail}")


def stop_server(proc, log):
    """Stop the server we started; returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()
    return proc.returncode


def machine_busy_secs():
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + (fields[7] if len(fields) > 7 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


def store_figures(addr):
    """The store's figures from the server's /stats (commits, fsyncs, commit time)."""
    try:
        with urllib.request.urlopen(f"http://{addr}/stats", timeout=5) as r:
            store = json.loads(r.read()).get("store") or {}
    except Exception:  # noqa: BLE001 - the figures are extra
        return {}
    return {f"store_{k}": v for k, v in store.items() if isinstance(v, (int, float))}


def run_case(case, server, repeat, run_no):
    tag = f"{run_no:03d}-{case.scenario}-{case.key}-{server}-r{repeat}"
    server_log = os.path.join(LOG_DIR, tag + ".server.log")
    result = {"scenario": case.scenario, "key": case.key, "server": server,
              "repeat": repeat, "mode": case.mode}
    # A fresh, empty data directory for every run with a store.
    data_dir = tempfile.mkdtemp(prefix="threadcast-bench-", dir=store_parent()) \
        if server in STORE_VARIANTS else None
    try:
        return _run_case(case, server, result, server_log, tag, data_dir)
    finally:
        if data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)


def _run_case(case, server, result, server_log, tag, data_dir):
    try:
        proc, addr, log = start_server(server, server_log, case.server_args,
                                       os.path.join(data_dir, "data") if data_dir else None)
    except Exception as e:  # noqa: BLE001 - reported in the results
        result["error"] = f"server start: {e}"
        return result
    cmd = [LOADGEN, case.mode, "--addr", addr, "--label", server,
           "--server-pid", str(proc.pid)] + case.args
    busy0, wall0 = machine_busy_secs(), time.monotonic()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, start_new_session=True,
                             timeout=case.expect_s + LOADGEN_TIMEOUT_SLACK_S)
        with open(os.path.join(LOG_DIR, tag + ".loadgen.log"), "w") as f:
            f.write(out.stderr)
        lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
        if lines:
            result.update(json.loads(lines[-1]))
        else:
            result["error"] = f"loadgen exit {out.returncode}: {out.stderr[-500:]}"
    except subprocess.TimeoutExpired:
        result["error"] = "loadgen timed out"
    busy, wall = machine_busy_secs() - busy0, time.monotonic() - wall0
    if "server_cpu_secs_total" in result and "loadgen_cpu_secs_total" in result:
        # CPU that neither the server nor the load generator used: other
        # processes on the machine, a measure of how disturbed the run was.
        other = max(0.0, busy - result["server_cpu_secs_total"] - result["loadgen_cpu_secs_total"])
        result["other_cpu_percent"] = 100 * other / (wall * (os.cpu_count() or 1))
    alive = proc.poll() is None
    if alive and data_dir:
        result.update(store_figures(addr))
        if result.get("store_commits"):
            # Messages written per commit (group size); the few commits of
            # start-up and the SYNC messages are included.
            result["messages_per_commit"] = (result.get("acked") or result.get("published", 0)) \
                / result["store_commits"]
    status = stop_server(proc, log)
    if not alive:
        result["server_died"] = True
        result["server_exit"] = status
        result.setdefault("error", f"server exited during the run (status {status})")
    return result


# ------------------------------------------------------------ aggregation

# Counters where the worst repeat matters more than the median.
WORST_OF = {"mismatches", "unanswered", "lost", "lost_incl_disconnected", "duplicates",
            "reordered", "corrupt", "slow_disconnected", "other_disconnected",
            "closed_during_run", "closed_while_held", "conns_failed", "failed_requests",
            "failed_cycles", "left_in_progress", "misrouted", "unsent"}


def aggregate(results):
    """{(scenario, key, server): {metric: value}} over the successful repeats."""
    groups = {}
    for r in results:
        groups.setdefault((r["scenario"], r["key"], r["server"]), []).append(r)
    agg = {}
    for k, runs in groups.items():
        ok = [r for r in runs if "error" not in r]
        a = {"runs": len(runs), "ok_runs": len(ok),
             "errors": sorted({r["error"] for r in runs if "error" in r})}
        metrics = {m for r in ok for m, v in r.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for m in metrics:
            vals = [r[m] for r in ok if isinstance(r.get(m), (int, float))]
            if vals:
                a[m] = max(vals) if m in WORST_OF else statistics.median(vals)
        for m in {m for r in ok for m, v in r.items() if isinstance(v, bool)}:
            vals = [r[m] for r in ok if m in r]
            a[m] = (sum(vals), len(vals))
        reasons = {}
        for r in ok:
            for src in ("disconnect_reasons",):
                for reason, n in (r.get(src) or {}).items():
                    reasons[reason] = reasons.get(reason, 0) + n
        a["disconnect_reasons"] = reasons
        agg[k] = a
    return agg


# ------------------------------------------------------------- formatting

def fmt(v, digits=3):
    if v is None:
        return "–"
    if isinstance(v, tuple):  # (true count, runs) of a boolean
        yes, n = v
        return "yes" if yes == n else ("no" if yes == 0 else f"{yes}/{n} runs")
    if isinstance(v, float) and not math.isfinite(v):
        return "–"
    av = abs(v)
    if av >= 1000:
        return f"{v:,.0f}"
    if av >= 100 or float(v).is_integer():
        return f"{v:.0f}"
    return f"{v:.{digits}g}"


def ratio(a, b):
    if a is None or b is None or isinstance(a, tuple) or a <= 0 or b <= 0:
        return "–"
    r = a / b
    return f"{r:.2f}" if r >= 0.1 else f"{r:.2g}"


# Table layout per scenario: (title, row-key heading, [(metric, heading, ratio?)], notes)
TABLES = [
    ("echo-64B", "Echo, 64 B messages, 8 in flight per connection", "conns", [
        ("round_trips_per_sec", "round trips/s", True),
        ("rtt_p50_us", "RTT p50 µs", True),
        ("rtt_p99_us", "RTT p99 µs", True),
        ("rtt_max_us", "RTT max µs", False),
        ("server_cpu_secs_total", "server CPU s", False),
        ("mismatches", "mismatches", False),
    ]),
    ("echo-64KiB", "Echo, 64 KiB messages, 8 in flight per connection", "conns", [
        ("round_trips_per_sec", "round trips/s", True),
        ("mbytes_per_sec", "MB/s echoed", True),
        ("rtt_p50_us", "RTT p50 µs", True),
        ("rtt_p99_us", "RTT p99 µs", True),
        ("rtt_max_us", "RTT max µs", False),
        ("mismatches", "mismatches", False),
    ]),
    ("fanout", "Fan-out: 1 publisher, 100 msg/s of 64 B, to N subscribers", "subscribers", [
        ("deliveries_per_sec", "deliveries/s", True),
        ("expected_deliveries_per_sec", "offered/s", False),
        ("latency_p50_us", "latency p50 µs", True),
        ("latency_p99_us", "latency p99 µs", True),
        ("latency_max_us", "latency max µs", False),
        ("lost", "lost", False),
        ("drain_cut_off", "cut off", False),
        ("duplicates", "dup", False),
        ("slow_disconnected", "slow-dropped", False),
        ("other_disconnected", "other drops", False),
        ("server_cpu_secs_total", "server CPU s", False),
    ]),
    ("fanout-64KiB", "Fan-out, 64 KiB messages: 1 publisher, 50 msg/s, to 100 subscribers", "subscribers", [
        ("deliveries_per_sec", "deliveries/s", True),
        ("delivered_mbytes_per_sec", "MB/s delivered", False),
        ("expected_deliveries_per_sec", "offered/s", False),
        ("latency_p50_us", "latency p50 µs", True),
        ("latency_p99_us", "latency p99 µs", True),
        ("latency_max_us", "latency max µs", False),
        ("lost", "lost", False),
        ("drain_cut_off", "cut off", False),
        ("duplicates", "dup", False),
        ("slow_disconnected", "slow-dropped", False),
        ("other_disconnected", "other drops", False),
        ("server_cpu_secs_total", "server CPU s", True),
    ]),
    ("churn", "Connection churn: C clients each connecting, echoing one message and closing, in a loop for 5 s",
     "clients", [
        ("conns_per_sec", "conns/s", True),
        ("handshake_p50_us", "handshake p50 µs", False),
        ("handshake_p99_us", "handshake p99 µs", True),
        ("cycle_p50_us", "cycle p50 µs", False),
        ("cycle_p99_us", "cycle p99 µs", True),
        ("failed_cycles", "failed", False),
        ("server_threads_base", "threads before", False),
        ("server_threads_peak", "threads peak", False),
        ("server_threads_after", "threads after", False),
        ("threads_returned", "threads back", False),
        ("server_rss_base_kb", "RSS before KiB", False),
        ("server_rss_after_kb", "RSS after KiB", False),
        ("rss_returned", "RSS back", False),
        ("server_cpu_secs_total", "server CPU s", False),
    ]),
    ("many-rooms", "Many rooms: 1,000 rooms × 5 members, every member sending 1 msg/s of 64 B", "rooms", [
        ("deliveries_per_sec", "deliveries/s", True),
        ("expected_deliveries_per_sec", "offered/s", False),
        ("latency_p50_us", "latency p50 µs", True),
        ("latency_p99_us", "latency p99 µs", True),
        ("latency_max_us", "latency max µs", False),
        ("lost", "lost", False),
        ("drain_cut_off", "cut off", False),
        ("duplicates", "dup", False),
        ("slow_disconnected", "slow-dropped", False),
        ("other_disconnected", "other drops", False),
        ("server_cpu_secs", "server CPU s", True),
        ("loadgen_cpu_secs", "loadgen CPU s", False),
    ]),
    ("idle-conns", "Idle connections held, then one broadcast to all, then closed", "conns", [
        ("conns_open", "held", False),
        ("open_secs", "open s", False),
        ("server_rss_per_conn_kb", "server RSS KiB/conn", True),
        ("kernel_kb_per_conn", "kernel KiB/conn", True),
        ("machine_kb_per_conn_excl_loadgen", "MemAvailable KiB/conn", True),
        ("server_threads_held", "server threads", False),
        ("broadcast_receivers", "broadcast got", False),
        ("broadcast_all_ms", "broadcast to all ms", True),
        ("threads_returned", "threads back", False),
        ("rss_returned", "RSS back", False),
        ("server_rss_after_kb", "RSS after KiB", False),
    ]),
    ("idle-cpu", "Idle CPU: 1,000 idle connections held", "conns", [
        ("hold_secs", "held s", False),
        ("server_cpu_secs", "server CPU s", True),
        ("server_cpu_percent", "server CPU %", False),
        ("server_threads", "server threads", False),
        ("server_rss_kb", "server RSS KiB", True),
    ]),
]


# The store scenarios: one row per server variant, ratios against memory-only.
STORE_TABLES = [
    ("store-publish", "HTTP publish throughput with `--data-dir`, per `--fsync` mode", "publishers", [
        ("publishes_per_sec", "publishes/s", True),
        ("request_p50_us", "POST p50 µs", True),
        ("request_p99_us", "POST p99 µs", True),
        ("delivery_p99_us", "delivery p99 µs", False),
        ("messages_per_commit", "msgs/commit", False),
        ("store_commit_micros_avg", "commit µs avg", False),
        ("store_commit_micros_max", "commit µs max", False),
        ("failed_requests", "failed", False),
        ("lost", "lost", False),
        ("slow_disconnected", "slow-dropped", False),
        ("server_cpu_secs_total", "server CPU s", False),
    ]),
    ("store-fanout", "Fan-out latency with `--data-dir`: 1 publisher, 100 msg/s of 64 B", "subscribers", [
        ("deliveries_per_sec", "deliveries/s", True),
        ("latency_p50_us", "latency p50 µs", True),
        ("latency_p99_us", "latency p99 µs", True),
        ("latency_max_us", "latency max µs", False),
        ("messages_per_commit", "msgs/commit", False),
        ("store_commit_micros_avg", "commit µs avg", False),
        ("store_commit_micros_max", "commit µs max", False),
        ("lost", "lost", False),
        ("drain_cut_off", "cut off", False),
        ("slow_disconnected", "slow-dropped", False),
        ("server_cpu_secs_total", "server CPU s", False),
    ]),
]
STORE_NOTES = {
    "store-publish": "`loadgen publish --publishers P --subscribers 4 --size 64`: P HTTP publishers, each "
                     "with one `POST /publish/bench-publish` in flight on a fresh connection (`Connection: close`), "
                     "1 s warm-up then 3 s measured; 4 WebSocket subscribers (`?raw=1`) must receive every "
                     "acknowledged (202) message. Servers also run with `--send-queue 100000`. **publishes/s**: "
                     "202 answers per second in the measured window; **POST p50/p99**: connect to complete answer; "
                     "**delivery p99**: POST sent to a subscriber's receive; **msgs/commit**, **commit µs**: "
                     "from the server's `/stats` (`store`) at the end of the run.",
    "store-fanout": "The fan-out case above (`loadgen fanout --subscribers 1000 --rate 100 --size 64 --duration 5`), "
                    "memory-only against `--fsync batch`.",
}
# Issue 16's targets: (scenario, key, metric, variant, bound, "min"|"max", wording, unit).
STORE_TARGETS = [
    ("store-publish", 8, "publishes_per_sec", "tc-batch", 0.5, "min",
     "HTTP publish throughput with `--fsync batch` ≥ 0.5× memory-only (8 publishers)", "publishes/s"),
    ("store-fanout", 1000, "latency_p99_us", "tc-batch", 1.2, "max",
     "fan-out p99 at 1,000 subscribers with `--fsync batch` ≤ 1.2× memory-only", "µs"),
]


def store_table_md(scenario, key_heading, columns, agg, keys):
    variants = [THREADCAST] + list(STORE_VARIANTS)
    head = [key_heading, "store"]
    for m, h, r in columns:
        head.append(h)
        if r:
            head.append("÷ memory")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for key in keys:
        base = agg.get((scenario, key, THREADCAST), {})
        for s in variants:
            a = agg.get((scenario, key, s))
            if a is None:
                continue
            failed = a["ok_runs"] == 0
            row = [fmt(key), STORE_LABELS[s]]
            for m, h, r in columns:
                row.append("failed" if failed else ("" if s == THREADCAST and m.startswith(("store_", "messages_"))
                                                   else fmt(a.get(m))))
                if r:
                    row.append("" if s == THREADCAST or failed else ratio(a.get(m), base.get(m)))
            lines.append("| " + " | ".join(row) + " |")
            if a["errors"]:
                notes.append(f"- {fmt(key)} / {STORE_LABELS[s]}: {a['runs'] - a['ok_runs']} of {a['runs']} runs "
                             "failed: " + "; ".join(e.splitlines()[0][:200] for e in a["errors"]))
            if a.get("disconnect_reasons"):
                notes.append(f"- {fmt(key)} / {STORE_LABELS[s]}: subscribers disconnected during the run: "
                             + ", ".join(f"{k} ×{v}" for k, v in sorted(a["disconnect_reasons"].items())))
    return "\n".join(lines + ([""] + notes if notes else []))


# Above this median share of the CPU used by other processes, a target's verdict is
# marked as not conclusive.
DISTURBED_PERCENT = 20


def store_targets_md(agg, results):
    lines = ["| target | memory-only | `--fsync batch` | ratio | met? |", "|---|---|---|---|---|"]
    for scenario, key, metric, variant, bound, kind, wording, unit in STORE_TARGETS:
        base = agg.get((scenario, key, THREADCAST), {}).get(metric)
        got = agg.get((scenario, key, variant), {}).get(metric)
        if not base or not got:
            lines.append(f"| {wording} | {fmt(base)} | {fmt(got)} | – | not measured |")
            continue
        r = got / base
        met = r >= bound if kind == "min" else r <= bound
        # Figures taken while other processes held much of the CPU say little.
        others = [x["other_cpu_percent"] for x in results
                  if x["scenario"] == scenario and x["key"] == key and "other_cpu_percent" in x]
        busy = statistics.median(others) if others else 0
        caveat = (f" (not conclusive: other processes used a median {busy:.0f} % of the CPU)"
                  if busy > DISTURBED_PERCENT else "")
        lines.append(f"| {wording} | {fmt(base)} {unit} | {fmt(got)} {unit} | **{r:.2f}×** | "
                     f"{'yes' if met else '**no**'}{caveat} |")
    return "\n".join(lines)


# Issue 18's targets: (scenario, key, metric, bound, "min"|"max", wording, unit), each
# threadcast's median against gorilla's; the floor's figure and tc/floor are shown too.
ISSUE18_TARGETS = [
    ("fanout", 5000, "deliveries_per_sec", 0.8, "min",
     "fan-out to 5,000 subscribers: deliveries/s ≥ 0.8× gorilla", "deliveries/s"),
    ("fanout", 5000, "latency_p99_us", 1.5, "max",
     "fan-out to 5,000 subscribers: latency p99 ≤ 1.5× gorilla", "µs"),
    ("fanout", 1000, "latency_p99_us", 1.0, "max",
     "fan-out to 1,000 subscribers: latency p99 ≤ 1.0× gorilla", "µs"),
    ("churn", 10, "conns_per_sec", 0.8, "min", "churn, 10 clients: conns/s ≥ 0.8× gorilla", "conns/s"),
    ("churn", 100, "conns_per_sec", 0.8, "min", "churn, 100 clients: conns/s ≥ 0.8× gorilla", "conns/s"),
    ("many-rooms", 1000, "deliveries_per_sec", 1.0, "min",
     "many rooms (1,000 × 5): deliveries/s ≥ 1.0× gorilla", "deliveries/s"),
    ("many-rooms", 1000, "latency_p99_us", 1.0, "max",
     "many rooms (1,000 × 5): latency p99 ≤ 1.0× gorilla", "µs"),
]


def issue18_targets_md(agg, results):
    """The issue 18 targets table, or "" when none of its scenarios has results."""
    if not any(agg.get((sc, k, THREADCAST)) for sc, k, *_ in ISSUE18_TARGETS):
        return ""
    lines = ["| target | threadcast | gorilla | tc/gorilla | floor | tc/floor | met? |",
             "|---|---|---|---|---|---|---|"]
    for scenario, key, metric, bound, kind, wording, unit in ISSUE18_TARGETS:
        def fig(server):
            a = agg.get((scenario, key, server))
            return a.get(metric) if a and a["ok_runs"] else None
        tc, peer, floor = fig(THREADCAST), fig("gorilla"), fig(FLOOR)
        cells = [wording] + [f"{fmt(v)} {unit}" if v is not None else "–" for v in (tc, peer)]
        cells.append(f"**{ratio(tc, peer)}×**" if tc and peer else "–")
        cells += [f"{fmt(floor)} {unit}" if floor is not None else "not run",
                  f"{ratio(tc, floor)}×" if tc and floor else "–"]
        if not tc or not peer:
            cells.append("not measured")
        else:
            # Compared as shown (2 decimals): closer than that is within the noise.
            r = round(tc / peer, 2)
            met = r >= bound if kind == "min" else r <= bound
            others = [x["other_cpu_percent"] for x in results
                      if x["scenario"] == scenario and x["key"] == key and "other_cpu_percent" in x]
            busy = statistics.median(others) if others else 0
            caveat = (f" (not conclusive: other processes used a median {busy:.0f} % of the CPU)"
                      if busy > DISTURBED_PERCENT else "")
            cells.append(("yes" if met else "**no**") + caveat)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def background_load(results, scenario):
    vals = [r["other_cpu_percent"] for r in results
            if r["scenario"] == scenario and "other_cpu_percent" in r]
    if not vals:
        return ""
    return (f"_Other processes used a median {statistics.median(vals):.0f} % (max {max(vals):.0f} %) "
            "of the machine's CPU during these runs._")


def table_md(scenario, key_heading, columns, agg, servers, keys):
    peers = [s for s in servers if s != THREADCAST]
    # Where the floor ran, its ratio gets a column of its own (on the floor's row),
    # next to tc/peer (threadcast against gorilla and node-ws, on their rows).
    floor = FLOOR in servers and any(agg.get((scenario, k, FLOOR)) for k in keys)
    ratios = THREADCAST in servers and peers
    head = [key_heading, "server"]
    for m, h, r in columns:
        head.append(h)
        if r and ratios:
            head += ["tc/peer", "tc/floor"] if floor else ["tc/peer"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in keys:
        tc = agg.get((scenario, key, THREADCAST), {})
        for s in servers:
            a = agg.get((scenario, key, s))
            if a is None:
                continue
            row = [fmt(key), s]
            failed = a["ok_runs"] == 0
            for m, h, r in columns:
                row.append("failed" if failed else fmt(a.get(m)))
                if r and ratios:
                    cell = "" if s == THREADCAST or failed else ratio(tc.get(m), a.get(m))
                    if floor:
                        row += ["", cell] if s == FLOOR else [cell, ""]
                    else:
                        row.append(cell)
            lines.append("| " + " | ".join(row) + " |")
    notes = []
    for key in keys:
        for s in servers:
            a = agg.get((scenario, key, s))
            if not a:
                continue
            if a["errors"]:
                notes.append(f"- {fmt(key)} / {s}: {a['runs'] - a['ok_runs']} of {a['runs']} runs failed: "
                             + "; ".join(e.splitlines()[0][:200] for e in a["errors"]))
            if a.get("disconnect_reasons"):
                notes.append(f"- {fmt(key)} / {s}: subscribers disconnected during the run: "
                             + ", ".join(f"{k} ×{v}" for k, v in sorted(a["disconnect_reasons"].items())))
    return "\n".join(lines + ([""] + notes if notes else []))


# ---------------------------------------------------------------- SVG plots

SVG_W, SVG_H = 640, 380
MARGIN_L, MARGIN_R, MARGIN_T, MARGIN_B = 70, 140, 40, 50


def _esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _nice_ticks(lo, hi, log):
    if log:
        decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
        mults = (1, 2, 5) if len(decades) <= 3 else (1,)
        return [m * 10 ** e for e in decades for m in mults]
    step = 10 ** math.floor(math.log10(max(hi - lo, 1e-9)))
    for mult in (1, 2, 5, 10):
        if (hi - lo) / (step * mult) <= 6:
            step *= mult
            break
    t, out = math.floor(lo / step) * step, []
    while t <= hi + step * 1e-9:
        out.append(t)
        t += step
    return out


def _svg_frame(title, xlabel, ylabel):
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_W}" height="{SVG_H}" '
            f'viewBox="0 0 {SVG_W} {SVG_H}" font-family="sans-serif" font-size="12">',
            f'<rect width="{SVG_W}" height="{SVG_H}" fill="white"/>',
            f'<text x="{SVG_W / 2}" y="22" text-anchor="middle" font-size="15">{_esc(title)}</text>',
            f'<text x="{MARGIN_L + (SVG_W - MARGIN_L - MARGIN_R) / 2}" y="{SVG_H - 10}" '
            f'text-anchor="middle">{_esc(xlabel)}</text>',
            f'<text transform="translate(16,{MARGIN_T + (SVG_H - MARGIN_T - MARGIN_B) / 2}) rotate(-90)" '
            f'text-anchor="middle">{_esc(ylabel)}</text>']


def _legend(names):
    out = []
    for i, n in enumerate(names):
        y = MARGIN_T + 10 + i * 20
        x = SVG_W - MARGIN_R + 15
        out.append(f'<rect x="{x}" y="{y - 9}" width="12" height="12" fill="{SERVER_COLORS.get(n, "#777")}"/>')
        out.append(f'<text x="{x + 18}" y="{y + 1}">{_esc(n)}</text>')
    return out


def _tick_label(v):
    if v >= 1e6:
        return f"{v / 1e6:g}M"
    if v >= 1e3:
        return f"{v / 1e3:g}k"
    return f"{v:g}"


def line_chart(path, title, xlabel, ylabel, series, logx=True, logy=True):
    """series: {name: [(x, y), ...]}; points with y <= 0 on a log axis are skipped."""
    pts = [(x, y) for s in series.values() for x, y in s if y is not None and (y > 0 or not logy)]
    if not pts:
        return False
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    xlo, xhi = min(xs), max(xs)
    ylo, yhi = (min(ys), max(ys))
    if logy:
        ylo, yhi = 10 ** math.floor(math.log10(ylo)), 10 ** math.ceil(math.log10(yhi))
    else:
        ylo, yhi = 0, yhi * 1.1
    if xlo == xhi:
        xlo, xhi = xlo / 2, xhi * 2
    pw, ph = SVG_W - MARGIN_L - MARGIN_R, SVG_H - MARGIN_T - MARGIN_B

    def tx(x):
        f = (math.log10(x) - math.log10(xlo)) / (math.log10(xhi) - math.log10(xlo)) if logx \
            else (x - xlo) / (xhi - xlo)
        return MARGIN_L + f * pw

    def ty(y):
        f = (math.log10(y) - math.log10(ylo)) / (math.log10(yhi) - math.log10(ylo)) if logy \
            else (y - ylo) / (yhi - ylo)
        return MARGIN_T + ph - f * ph

    out = _svg_frame(title, xlabel, ylabel)
    for t in _nice_ticks(ylo, yhi, logy):
        if ylo <= t <= yhi:
            y = ty(t)
            out.append(f'<line x1="{MARGIN_L}" x2="{MARGIN_L + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{MARGIN_L - 6}" y="{y + 4:.1f}" text-anchor="end">{_tick_label(t)}</text>')
    for x in sorted(set(xs)):
        out.append(f'<text x="{tx(x):.1f}" y="{MARGIN_T + ph + 18}" text-anchor="middle">{_tick_label(x)}</text>')
    out.append(f'<rect x="{MARGIN_L}" y="{MARGIN_T}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
    for name, s in series.items():
        s = [(x, y) for x, y in s if y is not None and (y > 0 or not logy)]
        color = SERVER_COLORS.get(name, "#777")
        if len(s) > 1:
            d = " ".join(f"{tx(x):.1f},{ty(y):.1f}" for x, y in s)
            out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"/>')
        for x, y in s:
            out.append(f'<circle cx="{tx(x):.1f}" cy="{ty(y):.1f}" r="4" fill="{color}"><title>'
                       f'{_esc(name)}: {y:,.1f}</title></circle>')
    out += _legend(list(series))
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    return True


def bar_chart(path, title, xlabel, ylabel, groups, series):
    """groups: x labels; series: {name: [value per group or None]}."""
    vals = [v for s in series.values() for v in s if v is not None]
    if not vals:
        return False
    yhi = max(max(vals) * 1.1, 1e-9)
    pw, ph = SVG_W - MARGIN_L - MARGIN_R, SVG_H - MARGIN_T - MARGIN_B
    out = _svg_frame(title, xlabel, ylabel)
    for t in _nice_ticks(0, yhi, False):
        if t <= yhi:
            y = MARGIN_T + ph - t / yhi * ph
            out.append(f'<line x1="{MARGIN_L}" x2="{MARGIN_L + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{MARGIN_L - 6}" y="{y + 4:.1f}" text-anchor="end">{_tick_label(t)}</text>')
    gw = pw / len(groups)
    bw = gw * 0.8 / len(series)
    for gi, g in enumerate(groups):
        out.append(f'<text x="{MARGIN_L + gw * (gi + 0.5):.1f}" y="{MARGIN_T + ph + 18}" '
                   f'text-anchor="middle">{_esc(g)}</text>')
        for si, (name, s) in enumerate(series.items()):
            v = s[gi]
            x = MARGIN_L + gw * gi + gw * 0.1 + si * bw
            if v is None:  # the run failed: say so where the bar would be
                out.append(f'<text x="{x + bw / 2:.1f}" y="{MARGIN_T + ph - 4}" text-anchor="end" '
                           f'font-size="10" fill="{SERVER_COLORS.get(name, "#777")}" '
                           f'transform="rotate(-90 {x + bw / 2:.1f} {MARGIN_T + ph - 4})">failed / no data</text>')
                continue
            h = max(v, 0) / yhi * ph  # a negative reading (noise) draws no bar
            out.append(f'<rect x="{x:.1f}" y="{MARGIN_T + ph - h:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" '
                       f'fill="{SERVER_COLORS.get(name, "#777")}"><title>{_esc(name)}: {v:,.2f}</title></rect>')
            out.append(f'<text x="{x + bw / 2 - 1:.1f}" y="{MARGIN_T + ph - h - 4:.1f}" text-anchor="middle" '
                       f'font-size="10">{v:,.1f}</text>')
    out.append(f'<rect x="{MARGIN_L}" y="{MARGIN_T}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
    out += _legend(list(series))
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")
    return True


def make_plots(agg, servers, cases):
    keys = lambda sc: sorted({c.key for c in cases if c.scenario == sc})  # noqa: E731
    made = []
    # The floor, where it ran, is in the fan-out plot.
    fan_servers = list(servers) + [s for s in OPTIONAL_SERVERS if s not in servers
                                   and any(k[0] == "fanout" and k[2] == s for k in agg)]

    def ok(sc, k, s, m):
        a = agg.get((sc, k, s))
        return a.get(m) if a and a["ok_runs"] else None

    p = os.path.join(RESULTS_DIR, "fanout-p99.svg")
    if line_chart(p, "Fan-out delivery latency p99 (100 msg/s)", "subscribers", "p99 latency (ms, log)",
                  {s: [(k, (ok("fanout", k, s, "latency_p99_us") or 0) / 1e3) for k in keys("fanout")]
                   for s in fan_servers}):
        made.append(("Fan-out p99 delivery latency vs subscribers", p))
    p = os.path.join(RESULTS_DIR, "echo-throughput.svg")
    if line_chart(p, "Echo round trips/s (64 B, window 8)", "connections", "round trips/s (log)",
                  {s: [(k, ok("echo-64B", k, s, "round_trips_per_sec")) for k in keys("echo-64B")]
                   for s in servers}):
        made.append(("Echo throughput vs connections", p))
    ks = keys("idle-conns")
    for metric, fname, title in [
            ("server_rss_per_conn_kb", "idle-memory-rss.svg", "Server RSS per idle connection"),
            ("kernel_kb_per_conn", "idle-memory-kernel.svg",
             "Kernel memory per idle connection (stacks, page tables, slab, TCP)"),
            ("machine_kb_per_conn_excl_loadgen", "idle-memory-machine.svg",
             "MemAvailable drop per idle connection (excl. loadgen RSS)")]:
        p = os.path.join(RESULTS_DIR, fname)
        if bar_chart(p, title, "connections held", "KiB per connection", [fmt(k) for k in ks],
                     {s: [ok("idle-conns", k, s, metric) for k in ks] for s in servers}):
            made.append((title, p))
    ks = keys("store-publish")
    variants = [THREADCAST] + list(STORE_VARIANTS)
    p = os.path.join(RESULTS_DIR, "store-publish.svg")
    if ks and bar_chart(p, "HTTP publishes/s: memory-only vs --data-dir per --fsync mode", "publishers in flight",
                        "publishes acknowledged per second", [fmt(k) for k in ks],
                        {s: [ok("store-publish", k, s, "publishes_per_sec") for k in ks] for s in variants
                         if any(agg.get(("store-publish", k, s)) for k in ks)}):
        made.append(("HTTP publish throughput with --data-dir, per --fsync mode", p))
    return made


# ------------------------------------------------------------------ report

def sh(cmd):
    try:
        return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:  # noqa: BLE001
        return "?"


def read_first(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "?"


# Memory mappings per thread in a Rust program: the thread's stack and its
# guard page (glibc), and the alternate signal stack and its guard page that
# Rust's std sets up in every thread it spawns.
MAPS_PER_THREAD = 4
# Threads per threadcast connection (reader + writer).
THREADS_PER_CONN = 2
# Mappings, pids and fds a server needs besides its connections.
RESERVE = 200


def capacity_limits():
    """How many thread-per-connection connections each kernel limit allows."""
    out = []
    try:
        maps = int(read_first("/proc/sys/vm/max_map_count"))
        out.append(f"vm.max_map_count {maps:,} → ~{(maps - RESERVE) // (MAPS_PER_THREAD * THREADS_PER_CONN):,}")
        pids = int(read_first("/proc/sys/kernel/pid_max"))
        out.append(f"kernel.pid_max {pids:,} → ~{(pids - RESERVE) // THREADS_PER_CONN:,}")
        tmax = int(read_first("/proc/sys/kernel/threads-max"))
        out.append(f"kernel.threads-max {tmax:,} → ~{tmax // THREADS_PER_CONN:,}")
        nproc = sh("ulimit -u")
        if nproc.isdigit():
            out.append(f"ulimit -u {int(nproc):,} → ~{int(nproc) // THREADS_PER_CONN:,}")
        nofile = sh("ulimit -Sn")
        if nofile.isdigit():
            out.append(f"ulimit -n {int(nofile):,} → ~{int(nofile) - RESERVE:,}")
    except ValueError:
        pass
    return "; ".join(out)


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")


def threadcast_build_info():
    binary = SERVERS[THREADCAST][0]
    try:
        built = datetime.datetime.fromtimestamp(os.path.getmtime(binary), datetime.timezone.utc)
    except OSError:
        return "missing"
    head = sh(f"git -C '{ROOT}' rev-parse --short HEAD 2>/dev/null") or "no commit yet"
    dirty = " (work tree has changes)" if sh(f"git -C '{ROOT}' status --porcelain -- src Cargo.toml") else ""
    return f"built {built:%Y-%m-%d %H:%M} UTC; repository at {head}{dirty}"


def machine_info(date=None, build=None, store_fs=None):
    model = "?"
    for line in read_first("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = next((l.split()[1] for l in read_first("/proc/meminfo").splitlines() if l.startswith("MemTotal")), "0")
    return [
        ("date (UTC)", date or utc_now()),
        ("cores", f"{os.cpu_count()} ({model})"),
        ("memory", f"{int(mem) / 1048576:.1f} GiB"),
        ("kernel", f"{platform.system()} {platform.release()}"),
        ("open files (ulimit -n, soft/hard)", sh("ulimit -Sn") + " / " + sh("ulimit -Hn")),
        ("max user processes (ulimit -u)", sh("ulimit -u")),
        ("kernel.pid_max / threads-max", read_first("/proc/sys/kernel/pid_max") + " / "
         + read_first("/proc/sys/kernel/threads-max")),
        ("vm.max_map_count", read_first("/proc/sys/vm/max_map_count")),
        ("scheduler autogroups", read_first("/proc/sys/kernel/sched_autogroup_enabled").replace("1", "on")
         .replace("0", "off")),
        ("ephemeral ports", read_first("/proc/sys/net/ipv4/ip_local_port_range").replace("\t", "–")),
        ("connections a 2-threads-per-connection server can hold, by limit", capacity_limits()),
        ("threadcast binary", build or threadcast_build_info()),
        ("data directories of the store runs", store_fs or store_filesystem()),
        ("rustc", sh("rustc --version")),
        ("go", sh("go version")),
        ("gorilla/websocket", sh("dpkg-query -W -f='${Version}' golang-github-gorilla-websocket-dev")),
        ("node / ws", sh("node --version") + " / " + sh(
            f"node -p \"require('{BENCH_DIR}/node/node_modules/ws/package.json').version\"")),
    ]


def write_report(results, cases, servers, repeats, quick, elapsed, plots, date=None, note="", build=None,
                 partial_runs=(), store_fs=None):
    agg = aggregate(results)
    # The optional servers (the floor) appear where they ran.
    servers = list(servers) + [s for s in OPTIONAL_SERVERS
                               if s not in servers and any(r["server"] == s for r in results)]
    out = ["# threadcast benchmarks", "",
           f"Generated by `bench/run.sh{' --quick' if quick else ''}` (see bench/README.md for how to run "
           "it and what every column means). All traffic is on 127.0.0.1; the load generator "
           "(one thread, non-blocking sockets) shares the machine's cores with the server under test.",
           "",
           f"Each figure is the **median over {repeats} repeat(s)** (error counters: the worst repeat); "
           "runs were interleaved server by server (A B C A B C) and every run had a freshly started "
           "server. **tc/peer** is threadcast's figure divided by that peer's: above 1 means threadcast's "
           "number is higher (better for throughput, worse for latency, memory and CPU).",
           ] + (["**tc/floor** (in the tables where the floor ran, on the floor's row): threadcast's figure "
                 "divided by the floor's."] if FLOOR in servers else []) + [
           f"Suite wall time: {elapsed / 60:.1f} min.", ""]
    if note:
        out += [f"**Note:** {note}", ""]
    for p in partial_runs:
        out += [f"**{', '.join(p['scenarios'])}: from a later run,** `bench/run.sh --only "
                f"{','.join(p['scenarios'])}` on {p['date']} UTC ({p['repeats']} repeat(s), "
                f"{p['elapsed'] / 60:.1f} min; threadcast binary {p['threadcast_build']})"
                + (f"; note: {p['note']}" if p.get("note") else "")
                + ". Every other section is from the run dated below.", ""]
    out += ["## Machine", "",
           "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in machine_info(date, build, store_fs)]
    out += ["", "## Servers", ""] + [f"- **{s}**: {SERVER_NOTES[s]}" for s in servers]
    for scenario, title, key_heading, columns in TABLES:
        # Rows with results (a results file from before a scenario existed has none).
        keys = sorted({c.key for c in cases if c.scenario == scenario
                       and any(k[:2] == (scenario, c.key) for k in agg)})
        if not keys:
            continue
        reps = next((c.repeats for c in cases if c.scenario == scenario and c.repeats), repeats)
        out += ["", f"## {title}", ""]
        if reps != repeats:
            out += [f"_{reps} repeat(s) per server._", ""]
        out.append(table_md(scenario, key_heading, columns, agg, servers, keys))
        load = background_load(results, scenario)
        if load:
            out += ["", load]
    targets = issue18_targets_md(agg, results)
    if targets:
        out += ["", "## Targets (issue 18): threadcast against gorilla, and the floor", "",
                "Computed from the medians above. A ratio is compared with its bound as shown (2 decimals); "
                "**tc/floor** is threadcast's figure divided by the floor's.", "", targets]
    store_keys = {sc: sorted({c.key for c in cases if c.scenario == sc
                              and any(r["scenario"] == sc and r["key"] == c.key for r in results)})
                  for sc in STORE_SCENARIOS}
    if any(store_keys.values()):
        out += ["", "## Durable store (`--data-dir`, issue 16): cost against memory-only", "",
                "Same binary and flags, with and without `--data-dir`; each run gets a fresh, empty data "
                "directory (the machine table says where: fsync cost depends on the disk). "
                "**÷ memory** is the figure divided by memory-only's in the same run (runs interleaved "
                "memory-only, batch, always, never, memory-only, ...).", ""]
        out += [store_targets_md(agg, results)]
        for scenario, title, key_heading, columns in STORE_TABLES:
            if not store_keys[scenario]:
                continue
            out += ["", f"### {title}", "", STORE_NOTES[scenario], ""]
            out.append(store_table_md(scenario, key_heading, columns, agg, store_keys[scenario]))
            load = background_load(results, scenario)
            if load:
                out += ["", load]
        # The reading (why, and what would close a gap) is written by hand.
        reading = os.path.join(BENCH_DIR, "ANALYSIS-store.md")
        if os.path.exists(reading):
            with open(reading) as f:
                out += ["", f.read().strip()]
    if plots:
        out += ["", "## Plots", ""]
        for title, p in plots:
            out.append(f"![{title}]({os.path.relpath(p, ROOT)})")
            out.append("")
    # The reading of the figures (targets met or not, and why) is written by hand in
    # bench/ANALYSIS.md, since a cause is found by profiling, not by a formula.
    analysis = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ANALYSIS.md")
    if os.path.exists(analysis):
        with open(analysis) as f:
            out += ["", f.read().strip()]
    with open(REPORT_PATH, "w") as f:
        f.write("\n".join(out).replace("\n\n\n", "\n\n") + "\n")


# -------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small subset, 1 repeat (< 2 min)")
    ap.add_argument("--repeats", type=int, help="repeats per case (default 3, --quick 1)")
    ap.add_argument("--servers", default=None,
                    help=f"comma-separated servers (default {','.join(BASE_SERVERS)}, plus {', '.join(OPTIONAL_SERVERS)} "
                         "in the scenarios that name it, when built; listed explicitly it runs only if named here); "
                         "the store scenarios run when threadcast is in it")
    ap.add_argument("--only", default="", help="comma-separated scenarios to run (e.g. fanout,idle-conns)")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite BENCHMARKS.md and the plots from bench/results/results.jsonl "
                         "(with --quick: results-quick.jsonl) without running")
    ap.add_argument("--note", default="", help="a remark printed under the report's heading "
                                               "(e.g. what else ran on the machine)")
    args = ap.parse_args()
    explicit = args.servers is not None
    servers = [s for s in (args.servers.split(",") if explicit else BASE_SERVERS) if s]
    for s in servers:
        if s not in BASE_SERVERS + OPTIONAL_SERVERS:
            sys.exit(f"unknown server {s!r}; known: {', '.join(BASE_SERVERS + OPTIONAL_SERVERS)}")
    repeats = args.repeats or (1 if args.quick else 3)
    cases = suite(args.quick)
    if args.only:
        wanted = set(args.only.split(","))
        cases = [c for c in cases if c.scenario in wanted]
    os.makedirs(RESULTS_DIR, exist_ok=True)
    os.makedirs(LOG_DIR, exist_ok=True)
    # A --quick run keeps its raw results apart, so it does not replace the
    # last full run's (BENCHMARKS.md can be rebuilt from those with
    # --report-only).
    jsonl = os.path.join(RESULTS_DIR, "results-quick.jsonl" if args.quick else "results.jsonl")

    if args.report_only:
        meta, results = read_results(jsonl)
        plots = make_plots(aggregate(results), servers, cases)
        write_report(results, cases, servers, meta.get("repeats", repeats), meta.get("quick", args.quick),
                     meta.get("elapsed", 0), plots, meta.get("date"), args.note or meta.get("note", ""),
                     meta.get("threadcast_build"), meta.get("partial_runs", []), meta.get("store_fs"))
        print(f"wrote {REPORT_PATH}")
        return

    for s in OPTIONAL_SERVERS:
        if (s in servers or not explicit) and not server_available(s) \
                and any(s in c.extra_servers for c in cases):
            print(f"bench: {s}: no binary at {SERVERS[s][0]}; its runs are skipped", flush=True)
    runs = [(c, rep, s) for c in cases for rep in range(c.repeats or repeats)
            for s in case_servers(c, servers, explicit)]
    budget = sum(c.expect_s + 0.3 for c, _, _ in runs)
    print(f"bench: {len(runs)} runs, roughly {budget / 60:.1f} min", flush=True)
    t0 = time.monotonic()
    started = utc_now()
    build = threadcast_build_info()
    results = []
    for i, (case, rep, server) in enumerate(runs, 1):
        t = time.monotonic()
        r = run_case(case, server, rep, i)
        results.append(r)
        summary = r.get("error") or ", ".join(
            f"{k}={fmt(r[k])}" for k in ("round_trips_per_sec", "rtt_p99_us", "deliveries_per_sec",
                                         "latency_p99_us", "publishes_per_sec", "request_p99_us",
                                         "conns_per_sec", "handshake_p99_us", "cycle_p99_us",
                                         "failed_cycles",
                                         "messages_per_commit", "lost", "conns_open",
                                         "server_rss_per_conn_kb", "server_cpu_secs",
                                         "other_cpu_percent")
            if k in r)
        print(f"[{i}/{len(runs)} {time.monotonic() - t0:5.0f}s] {case.name():20s} {server:10s} "
              f"r{rep} ({time.monotonic() - t:4.1f}s): {summary}", flush=True)
    elapsed = time.monotonic() - t0
    meta = {"meta": True, "quick": args.quick, "repeats": repeats, "elapsed": elapsed,
            "servers": [s for s in servers if s in BASE_SERVERS], "date": started, "note": args.note,
            "threadcast_build": build, "store_fs": store_filesystem(), "partial_runs": []}
    report_cases = cases
    if args.only and os.path.exists(jsonl):
        # A run of some scenarios replaces those scenarios' results (per server)
        # in the last run's file and keeps the rest, so BENCHMARKS.md stays whole;
        # the report says which sections come from which run.
        old_meta, old = read_results(jsonl)
        if old_meta:
            ran = {(c.scenario, s) for c, _, s in runs}
            scenarios = sorted({c.scenario for c, _, _ in runs})
            results = [r for r in old if (r["scenario"], r["server"]) not in ran] + results
            partial = []
            for p in old_meta.get("partial_runs", []):
                p["scenarios"] = [sc for sc in p["scenarios"] if sc not in scenarios]
                if p["scenarios"]:
                    partial.append(p)
            partial.append({"date": started, "scenarios": scenarios, "repeats": repeats, "elapsed": elapsed,
                            "threadcast_build": build, "note": args.note})
            meta = dict(old_meta, partial_runs=partial, store_fs=meta["store_fs"])
            report_cases = [c for c in suite(args.quick)
                            if any(r["scenario"] == c.scenario for r in results)]
    with open(jsonl, "w") as f:
        f.write(json.dumps(meta) + "\n")
        for r in results:
            f.write(json.dumps(r) + "\n")
    report_servers = meta.get("servers", servers)
    plots = make_plots(aggregate(results), report_servers, report_cases)
    write_report(results, report_cases, report_servers, meta["repeats"], meta["quick"], meta["elapsed"], plots,
                 meta["date"], meta.get("note", ""), meta["threadcast_build"], meta.get("partial_runs", []),
                 meta.get("store_fs"))
    print(f"bench: done in {elapsed / 60:.1f} min; wrote {REPORT_PATH} and {jsonl}")


def read_results(path):
    """(run metadata, results) from a results file."""
    with open(path) as f:
        results = [json.loads(l) for l in f if l.strip()]
    meta = results[0] if results and results[0].get("meta") else {}
    return meta, [r for r in results if not r.get("meta")]


if __name__ == "__main__":
    main()
