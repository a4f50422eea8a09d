#!/usr/bin/env bash
# One command for the whole benchmark: install what is missing, build
# everything in release mode, raise the fd limit, run the suite, and write
# BENCHMARKS.md at the repository root.
#
#   bench/run.sh            full suite (about 20-25 minutes)
#   bench/run.sh --quick    small subset, one repeat (under 2 minutes)
# Any other arguments go to bench/runner.py (see `python3 bench/runner.py --help`).
#
# BENCH_MAX_MAP_COUNT=N bench/run.sh  raises vm.max_map_count to N for the run
# and restores it afterwards (root only). A thread-per-connection server needs
# about 8 memory mappings per connection, so the default 65,530 caps it near
# 8,000 connections; by default the suite leaves the kernel settings alone
# and reports what happens at that limit.
#
# BENCH_USE_EXISTING_THREADCAST=1 bench/run.sh  benchmarks the threadcast
# binary already in target/release instead of rebuilding it (BENCHMARKS.md
# records when that binary was built).
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
GO_PATH_DEBIAN=/usr/share/gocode
GORILLA_SRC="$GO_PATH_DEBIAN/src/github.com/gorilla/websocket"

log() { printf 'run.sh: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- install --------------------------------------------------------------
apt_missing=()
command -v go >/dev/null 2>&1 || apt_missing+=(golang-go)
[ -d "$GORILLA_SRC" ] || apt_missing+=(golang-github-gorilla-websocket-dev)
command -v node >/dev/null 2>&1 || apt_missing+=(nodejs)
command -v npm >/dev/null 2>&1 || apt_missing+=(npm)
if [ "${#apt_missing[@]}" -gt 0 ]; then
    log "installing ${apt_missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_missing[@]}" >/dev/null
fi
if [ ! -f "$BENCH_DIR/node/node_modules/ws/package.json" ]; then
    log "npm ci in bench/node"
    (cd "$BENCH_DIR/node" && npm ci --no-audit --no-fund --loglevel=error)
fi

# --- build ----------------------------------------------------------------
THREADCAST_BIN="$ROOT/target/release/threadcast"
if [ -n "${BENCH_USE_EXISTING_THREADCAST:-}" ] && [ -x "$THREADCAST_BIN" ]; then
    log "using the existing $THREADCAST_BIN (built $(date -r "$THREADCAST_BIN" -u '+%F %T UTC')); not rebuilding"
else
    log "building threadcast (release)"
    (cd "$ROOT" && cargo build --release --quiet)
fi
log "building loadgen (release)"
(cd "$BENCH_DIR" && cargo build --release --quiet)
log "building the gorilla peer"
(cd "$BENCH_DIR/go" && GOPATH="$GO_PATH_DEBIAN" GO111MODULE=off GOFLAGS= go build -o wspeer .)
# The floor (issue 18), a reference server of its own crate; the runner skips it
# when its binary is missing.
if [ -f "$BENCH_DIR/floor/Cargo.toml" ]; then
    log "building the floor (release)"
    (cd "$BENCH_DIR/floor" && CARGO_TARGET_DIR="$BENCH_DIR/target" cargo build --release --quiet)
else
    log "no bench/floor/Cargo.toml: the floor server is not built, its runs are skipped"
fi

# --- limits ---------------------------------------------------------------
# Every server and the load generator inherit this shell's limits. 10,000
# connections need 10,000+ descriptors on each side of the loopback.
hard_nofile="$(ulimit -Hn)"
ulimit -Sn "$hard_nofile"
log "limits: nofile $(ulimit -Sn)/$(ulimit -Hn), nproc $(ulimit -u)," \
    "pid_max $(cat /proc/sys/kernel/pid_max), threads-max $(cat /proc/sys/kernel/threads-max)," \
    "max_map_count $(cat /proc/sys/vm/max_map_count)"

if [ -n "${BENCH_MAX_MAP_COUNT:-}" ]; then
    old_map_count="$(cat /proc/sys/vm/max_map_count)"
    restore_map_count() { as_root sysctl -q -w vm.max_map_count="$old_map_count" || true; }
    trap restore_map_count EXIT
    as_root sysctl -q -w vm.max_map_count="$BENCH_MAX_MAP_COUNT"
    log "vm.max_map_count raised from $old_map_count to $BENCH_MAX_MAP_COUNT for this run"
fi

# --- run --------------------------------------------------------------------
python3 "$BENCH_DIR/runner.py" "$@"
