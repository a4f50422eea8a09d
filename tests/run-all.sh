#!/usr/bin/env bash
# Runs every test of threadcast, installing what the tests need first:
#   bash tests/run-all.sh
# 1. format, lint and doc checks;  2. cargo test (unit, integration, examples, nginx),
# then the optional features' tests (redis against a real redis-server, tls);
# 3. the long fault/soak tests (ignored by default) in release mode;
# 4. the Autobahn|Testsuite against /echo and a raw room;  5. real-browser tests.
# Safe to run again: every install step is skipped when its tool is already there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
step() { printf '\n==> %s\n' "$*"; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }
apt_updated=""
apt_install() { # apt_install PACKAGE... (only when missing)
    if [[ -z "$apt_updated" ]]; then as_root apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

step "test dependencies"
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || apt_install nginx
command -v redis-server >/dev/null || apt_install redis-server
[[ -x /usr/bin/chromium ]] || apt_install chromium
[[ -x /usr/bin/openssl ]] || apt_install openssl   # tests/tls.rs makes its certificates
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

step "format, lint, docs"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo clippy --all-targets --all-features -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet --all-features

step "cargo test"
cargo test --quiet 2>&1 | tee /tmp/threadcast-cargo-test.log
if grep -q "test result: FAILED" /tmp/threadcast-cargo-test.log; then exit 1; fi

step "optional features: redis (against a real redis-server) and tls"
cargo test --quiet --features "redis tls" --lib --test redis --test tls --test nginx
cargo build --quiet --features "redis tls"   # for the browser tests of both features
FEATURES_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/threadcast"

step "long fault and soak tests (release build, bounded in time)"
cargo test --release --quiet --test faults -- --ignored

cargo build --release --quiet
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/threadcast"

step "Autobahn|Testsuite"
CONFORMANCE="$ROOT/../shared/conformance/autobahn.sh"
if [[ ! -f "$CONFORMANCE" ]]; then
    echo "skipped: $CONFORMANCE not found (it lives beside the repository in CI)"
else
    log=$(mktemp)
    "$BIN" --http 127.0.0.1:0 --ws 127.0.0.1:0 --no-demo-feed \
        --max-message-bytes 20000000 --public "$ROOT/public" 2>"$log" &
    server=$!
    trap 'kill $server 2>/dev/null || true' EXIT
    for _ in $(seq 100); do grep -q "listening" "$log" && break; sleep 0.1; done
    ws=$(grep -o 'ws=[^ ]*' "$log" | head -1 | cut -d= -f2)
    [[ -n "$ws" ]] || { cat "$log"; echo "server did not start"; exit 1; }
    bash "$CONFORMANCE" "ws://$ws/echo"
    bash "$CONFORMANCE" "ws://$ws/ws/autobahn?raw=1"
    kill $server; wait $server || true
    trap - EXIT
fi

step "browser tests (Debian's chromium, driven by playwright-core)"
THREADCAST_BIN="$BIN" THREADCAST_FEATURES_BIN="$FEATURES_BIN" node --test tests/browser/*.test.js

step "all tests passed"
