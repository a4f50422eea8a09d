#!/usr/bin/env bash
# Runs every test of threadcast, installing what the tests need first.
#   bash tests/run-all.sh
# Steps: format/lint/doc checks, `cargo test`, then the Autobahn|Testsuite against
# /echo and a raw-mode room of a release build. Safe to run again: installs are skipped
# when already present.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
step() { printf '\n==> %s\n' "$*"; }

step "format, lint, docs"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet

step "cargo test"
cargo test --quiet 2>&1 | tee /tmp/threadcast-cargo-test.log
grep -q "test result: FAILED" /tmp/threadcast-cargo-test.log && exit 1

step "Autobahn|Testsuite"
CONFORMANCE="$ROOT/../shared/conformance/autobahn.sh"
if [[ ! -f "$CONFORMANCE" ]]; then
    echo "skipped: $CONFORMANCE not found (it lives beside the repository in CI)"
else
    cargo build --release --quiet
    log=$(mktemp)
    ./target/release/threadcast --http 127.0.0.1:0 --ws 127.0.0.1:0 \
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

step "all tests passed"
