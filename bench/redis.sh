#!/usr/bin/env bash
# The latency Redis adds per message (see bench/redis.py): installs redis-server
# if missing, builds threadcast with --features redis and the load generator,
# then writes bench/REDIS.md. About 2 minutes.
#
#   bench/redis.sh                 1, 100 and 1000 subscribers, 3 repeats
#   bench/redis.sh --repeats 1     any bench/redis.py option
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH_DIR")"
log() { printf 'redis.sh: %s\n' "$*" >&2; }

if ! command -v redis-server >/dev/null 2>&1; then
    log "installing redis-server"
    if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
log "building threadcast --features redis (release) and loadgen"
(cd "$ROOT" && cargo build --release --quiet --features redis)
(cd "$BENCH_DIR" && cargo build --release --quiet)
ulimit -Sn "$(ulimit -Hn)"
python3 "$BENCH_DIR/redis.py" "$@"
