#!/usr/bin/env bash
# Runs every test of threadcast, installing what the tests need first:
#   bash tests/run-all.sh
# 1. format, lint and doc checks;  2. cargo test (unit, integration, examples, nginx),
# then the optional features' tests (redis against a real redis-server, tls);
# 3. the long fault/soak tests (ignored by default) in release mode;
# 4. the Autobahn|Testsuite against /echo and a raw room;  5. real-browser tests.
# Safe to run again: every install step is skipped when its tool is already there.
# apt waits (up to 10 minutes) for another apt/dpkg to finish instead of failing, and the
# nginx and redis-server services that this script installs are left stopped and disabled
# (the tests start their own instances); services that were there before are not touched.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
step() { printf '\n==> %s\n' "$*"; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

APT_WAIT=600   # seconds to wait for apt/dpkg locks held by another process
apt_get() { # apt_get ARG...: apt-get, waiting for the apt/dpkg locks instead of failing
    # DPkg::Lock::Timeout covers dpkg's locks (/var/lib/dpkg/lock-frontend, lock), but not
    # the lists lock of 'update' nor the archives lock of downloads (apt 2.6): on those,
    # apt-get fails at once, before doing anything, so it is run again until the deadline.
    local err rc line said="" deadline=$((SECONDS + APT_WAIT))
    err=$(mktemp)
    while :; do
        rc=0
        as_root env LC_ALL=C DEBIAN_FRONTEND=noninteractive \
            apt-get -o DPkg::Lock::Timeout=$((deadline > SECONDS ? deadline - SECONDS : 0)) \
            "$@" 2>"$err" |
            while IFS= read -r line; do   # apt says "Waiting for cache lock" each second
                if [[ "$line" != "Waiting for cache lock"* ]]; then printf '%s\n' "$line"
                elif [[ -z "$said" ]]; then echo "apt: $line" >&2; said=1; fi
            done || rc=$?
        if ((rc != 0 && SECONDS < deadline)) && grep -Eq \
            '^E: (Could not get lock|Unable to lock|Unable to acquire the dpkg frontend lock)' "$err"; then
            [[ -n "$said" ]] || echo "apt is busy (another apt or dpkg is running): waiting ..." >&2
            said=1
            sleep 5
            continue
        fi
        cat "$err" >&2
        rm -f "$err"
        return "$rc"
    done
}
apt_updated=""
# These helpers run in `a || b` lists, where `set -e` is off: they return failures themselves.
apt_install() { # apt_install PACKAGE... (only when missing)
    if [[ -z "$apt_updated" ]]; then apt_get update -qq || return; apt_updated=1; fi
    apt_get install -y -q "$@" >/dev/null   # -q, not -qq: apt then says when it waits
}

# Debian starts and enables a daemon's service when it installs it; the tests start their own.
POLICY_RC=/usr/sbin/policy-rc.d
POLICY_RC_MARK="# temporary: threadcast tests/run-all.sh is installing packages"
policy_rc_ours=""
service_present() { # is SERVICE installed (an init script or a systemd unit)?
    [[ -e /etc/init.d/$1 || -e /lib/systemd/system/$1.service ||
       -e /usr/lib/systemd/system/$1.service || -e /etc/systemd/system/$1.service ]]
}
deny_service_starts() { # a temporary policy-rc.d: invoke-rc.d and deb-systemd-invoke start nothing
    # Another policy already there (Docker images ship one that denies every start) is kept;
    # one of ours left by a killed run is taken over (and removed afterwards).
    # shellcheck disable=SC2016  # $1 and $2 are sh's arguments
    if as_root sh -c 'set -C; printf "%s\n" "#!/bin/sh" "$2" "exit 101" >"$1" && chmod 755 "$1"' \
            sh "$POLICY_RC" "$POLICY_RC_MARK" 2>/dev/null ||
        grep -qxF "$POLICY_RC_MARK" "$POLICY_RC" 2>/dev/null; then
        policy_rc_ours=1
        trap allow_service_starts EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM
        trap 'exit 129' HUP
    fi
}
allow_service_starts() {
    if [[ -n "$policy_rc_ours" ]]; then as_root rm -f "$POLICY_RC"; policy_rc_ours=""; fi
    trap - EXIT INT TERM HUP
}
systemd_running() { [[ -d /run/systemd/system ]]; }   # is systemd PID 1?
disable_service() { # stop SERVICE and keep it from starting at boot, with or without systemd
    if systemd_running; then
        as_root systemctl disable --now --quiet "$1" ||
            echo "warning: could not stop and disable the $1 service" >&2
    else                                    # sysvinit, or a container without an init
        as_root service "$1" stop >/dev/null 2>&1 || true
        as_root update-rc.d "$1" disable >/dev/null 2>&1 || true   # also its systemd links
    fi
    echo "installed $1; its system service is stopped and disabled (the tests start their own)"
}
apt_install_service() { # apt_install_service SERVICE PACKAGE...: install, SERVICE left off
    local service=$1 rc=0
    shift
    if service_present "$service"; then   # there before: not ours to stop or disable
        apt_install "$@"
        return
    fi
    deny_service_starts
    apt_install "$@" || rc=$?
    allow_service_starts
    ((rc == 0)) || return "$rc"
    if service_present "$service"; then disable_service "$service"; fi
}
# Python for the Autobahn runner (tests/autobahn): venv/ensurepip and lib2to3
ab_python_ok() { "$1" -c 'import venv, ensurepip, lib2to3' >/dev/null 2>&1; }

step "test dependencies"
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || apt_install_service nginx nginx
command -v redis-server >/dev/null || apt_install_service redis-server redis-server
[[ -x /usr/bin/chromium ]] || apt_install chromium
[[ -x /usr/bin/openssl ]] || apt_install openssl   # tests/tls.rs makes its certificates
if [[ -z "${AB_PYTHON:-}" ]]; then   # else the caller chose autobahn.sh's Python
    AB_PY=$(command -v python3.11 || command -v python3 || true)   # the one it would pick
    if [[ -z "$AB_PY" ]] || ! ab_python_ok "$AB_PY"; then
        ab_python_ok /usr/bin/python3 || apt_install python3 python3-venv python3-lib2to3
        export AB_PYTHON=/usr/bin/python3
    fi
fi
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

step "format, lint, docs"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo clippy --all-targets --all-features -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet --all-features
# The internals are documented for readers too (the source is read file by file):
# their links must resolve as well.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet --all-features --document-private-items
# The layout's limits for readers (issue 14): no import cycle between top-level
# modules, no file over 300 lines without its tests, no function over 60 lines and
# none over 40 on a room message's path. Any broken limit fails the run.
python3 tools/layout.py

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
CONFORMANCE="$ROOT/tests/autobahn/autobahn.sh"   # see tests/autobahn/README.md
log=$(mktemp)
"$BIN" --http 127.0.0.1:0 --no-demo-feed --max-message-bytes 20000000 \
    --max-messages-per-second 1000000 --public "$ROOT/public" 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    grep -q "listening" "$log" && break
    kill -0 $server 2>/dev/null || break
    sleep 0.1
done
ws=$(grep -o 'ws=[^ ]*' "$log" | head -1 | cut -d= -f2 || true)   # (pipefail: no match)
[[ -n "$ws" ]] || { cat "$log"; echo "server did not start"; exit 1; }
bash "$CONFORMANCE" "ws://$ws/echo"
bash "$CONFORMANCE" "ws://$ws/ws/autobahn?raw=1"
kill $server; wait $server || true
trap - EXIT

step "browser tests (Debian's chromium, driven by playwright-core)"
THREADCAST_BIN="$BIN" THREADCAST_FEATURES_BIN="$FEATURES_BIN" node --test tests/browser/*.test.js

step "all tests passed"
