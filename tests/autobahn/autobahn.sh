#!/usr/bin/env bash
# threadcast's copy of the shared conformance runner (see README.md here); tests/run-all.sh
# runs it against /echo and a raw room.
#
# RFC 6455 conformance check of a WebSocket *server* with the Autobahn|Testsuite
# fuzzing client (wstest -m fuzzingclient), ported on the fly to Python 3.
#
#   usage: autobahn.sh ws://127.0.0.1:PORT/path
#
# The server under test must echo every text/binary message back unchanged.
# Runs all cases except 12.* and 13.* (permessage-deflate), then prints
#   conformance: N cases, OK=a NON-STRICT=b INFORMATIONAL=c UNIMPLEMENTED=d FAILED=e
# and the failed case ids; exit status 1 if any case FAILED (or did not run),
# 2 on a setup/usage error.
#
# Setup (first run only, ~1 min, needs PyPI and a Python with venv/ensurepip
# and lib2to3: on Debian, python3-venv and python3-lib2to3): a venv at $AB_VENV with pinned
# Twisted/txaio/pyOpenSSL, autobahn 0.10.9 and autobahntestsuite 25.10.1; the
# Python 2 test suite is then converted by the recipe ab_py3patch.py (2to3 +
# targeted edits) applied to the installed copy. Later runs reuse the venv.
#
# Environment knobs:
#   AB_VENV      venv location            (default /tmp/threadcast-autobahn/venv)
#   AB_OUT       report directory         (default: a fresh mktemp dir under /tmp)
#   AB_CASES     space-separated case ids/globs to run      (default "*")
#   AB_EXCLUDE   space-separated case ids/globs to skip     (default "12.* 13.*")
#   AB_DEADLINE  seconds before wstest is stopped; cases not run by then
#                count as FAILED                           (default 170)
#   AB_VERDICT   "strict" (default): a case counts as the worse of Autobahn's
#                behavior and close-handshake columns; "behavior": Autobahn's
#                behavior column only
#   AB_PYTHON    interpreter for the venv; needs lib2to3, i.e. Python <= 3.12
#                (default python3.11 if present, else python3)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
URL="${1:-}"
if [[ -z "$URL" || ! "$URL" =~ ^wss?:// ]]; then
    echo "usage: $0 ws://HOST:PORT/path" >&2
    exit 2
fi

AB_VENV="${AB_VENV:-/tmp/threadcast-autobahn/venv}"
AB_CASES="${AB_CASES:-*}"
AB_EXCLUDE="${AB_EXCLUDE-12.* 13.*}"
AB_DEADLINE="${AB_DEADLINE:-170}"
if [[ -z "${AB_PYTHON:-}" ]]; then
    if command -v python3.11 >/dev/null 2>&1; then AB_PYTHON=python3.11; else AB_PYTHON=python3; fi
fi

# ---------------------------------------------------------------- setup
setup_venv() {
    local py="$AB_VENV/bin/python"
    local stamp
    stamp="$(cat "$HERE/ab_py3patch.py" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)"
    if [[ -f "$AB_VENV/.conformance-ready" && "$(cat "$AB_VENV/.conformance-ready")" == "$stamp" ]]; then
        return 0    # already set up by this version of the recipe
    fi
    echo "[autobahn.sh] setting up $AB_VENV (one-time) ..." >&2
    command -v "$AB_PYTHON" >/dev/null 2>&1 || {
        echo "[autobahn.sh] no $AB_PYTHON (on Debian: apt-get install python3 python3-venv python3-lib2to3)" >&2; exit 2; }
    "$AB_PYTHON" -c 'import lib2to3' 2>/dev/null || {
        echo "[autobahn.sh] $AB_PYTHON has no lib2to3 (needs Python <= 3.12; on Debian: apt-get install python3-lib2to3); set AB_PYTHON" >&2; exit 2; }
    "$AB_PYTHON" -c 'import ensurepip, venv' 2>/dev/null || {
        echo "[autobahn.sh] $AB_PYTHON cannot make a venv (on Debian: apt-get install python3-venv); set AB_PYTHON" >&2; exit 2; }
    rm -rf "$AB_VENV"
    mkdir -p "$(dirname "$AB_VENV")"
    "$AB_PYTHON" -m venv "$AB_VENV"
    "$py" -m pip install -q --disable-pip-version-check \
        'setuptools==65.5.0' 'six==1.17.0' 'txaio==26.6.1' 'Twisted==26.10.0' \
        'zope.interface==8.7' 'pyOpenSSL==26.4.0' 'service-identity==26.1.0' 'Jinja2==3.1.6' >&2
    # Python-2-era packages: no dependency resolution (their pins are py2-only)
    "$py" -m pip install -q --disable-pip-version-check --no-deps --no-compile \
        'autobahn==0.10.9' 'autobahntestsuite==25.10.1' >&2
    local sp
    sp="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    "$py" "$HERE/ab_py3patch.py" "$sp" >&2
    "$py" -c 'import autobahntestsuite.fuzzing' >&2
    echo "$stamp" > "$AB_VENV/.conformance-ready"
}
mkdir -p "$(dirname "$AB_VENV")"
if command -v flock >/dev/null 2>&1; then
    exec {setup_lock}>"$AB_VENV.lock"
    flock "$setup_lock"      # a concurrent first run finishes its setup before this one looks
    setup_venv
    exec {setup_lock}>&-
else
    setup_venv
fi

# ---------------------------------------------------------------- run
OUT="${AB_OUT:-$(mktemp -d /tmp/autobahn-report.XXXXXX)}"
mkdir -p "$OUT"
rm -f "$OUT/index.json" "$OUT/results.jsonl"
SPEC="$OUT/fuzzingclient.json"
"$AB_VENV/bin/python" - "$URL" "$OUT" "$AB_CASES" "$AB_EXCLUDE" > "$SPEC" <<'EOF'
import json, sys
url, out, cases, excl = sys.argv[1:5]
print(json.dumps({"outdir": out,
                  "servers": [{"agent": "target", "url": url}],
                  "cases": cases.split(),
                  "exclude-cases": excl.split(),
                  "exclude-agent-cases": {}}, indent=2))
EOF

echo "[autobahn.sh] running wstest -m fuzzingclient against $URL (log: $OUT/wstest.log, deadline ${AB_DEADLINE}s)" >&2
T0=$(date +%s)
set +e
(cd "$OUT" && PYTHONWARNINGS=ignore timeout -s INT -k 10 "$AB_DEADLINE" \
    "$AB_VENV/bin/wstest" -m fuzzingclient -s "$SPEC" > "$OUT/wstest.log" 2>&1)
RC=$?
set -e
echo "[autobahn.sh] wstest exited $RC after $(( $(date +%s) - T0 ))s" >&2

# ---------------------------------------------------------------- summary
"$AB_VENV/bin/python" - "$OUT" "$RC" <<'EOF'
import ast, json, os, re, sys
out, rc = sys.argv[1], int(sys.argv[2])
log = open(os.path.join(out, "wstest.log"), errors="replace").read()
m = re.search(r"^Cases = (\[.*\])$", log, re.M)
planned = ast.literal_eval(m.group(1)) if m else []

results = {}
jl = os.path.join(out, "results.jsonl")
if os.path.exists(jl):                         # per-case lines, written as cases finish
    for line in open(jl):
        r = json.loads(line)
        results[r["id"]] = r
idx = os.path.join(out, "index.json")
if os.path.exists(idx):                        # written at the end of a complete run
    for agent, cases in json.load(open(idx)).items():
        for cid, r in cases.items():
            results.setdefault(cid, {}).update(r)
if planned and not results:
    print("no case completed: is the server up at that URL? (see %s/wstest.log)" % out)

def key(c):
    return [int(x) if x.isdigit() else x for x in c.split(".")]

cats = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
# Autobahn judges each case twice: "behavior" (what was exchanged) and
# "behaviorClose" (who closed, how, with which code); its HTML report shows both
# columns. Default verdict = the worse of the two, with the close column mapped
# as Autobahn colours it: WRONG CODE / FAILED BY CLIENT -> NON-STRICT,
# UNCLEAN / FAILED -> FAILED, INFORMATIONAL -> neutral.
# AB_VERDICT=behavior counts Autobahn's "behavior" column only.
mode = os.environ.get("AB_VERDICT", "strict")
RANK = {"OK": 0, "INFORMATIONAL": 1, "NON-STRICT": 2, "FAILED": 4}
CLOSE = {"OK": "OK", "INFORMATIONAL": "OK", "WRONG CODE": "NON-STRICT",
         "FAILED BY CLIENT": "NON-STRICT", "UNCLEAN": "FAILED", "FAILED": "FAILED"}

def verdict(r, strict):
    b = r.get("behavior")
    if b == "UNIMPLEMENTED":
        return b
    if b not in RANK:                          # anything else is a failure, as in Autobahn's report
        b = "FAILED"
    if strict:
        c = CLOSE.get(r.get("behaviorClose"), "FAILED")
        if RANK[c] > RANK[b]:
            b = c
    return b

count = dict.fromkeys(cats, 0)
headline = dict.fromkeys(cats, 0)
failed, details = [], []
for c in sorted(set(planned) | set(results), key=key):
    r = results.get(c)
    if r is None:
        count["FAILED"] += 1
        headline["FAILED"] += 1
        failed.append(c)
        details.append("%s: not run (wstest stopped, crashed or hit the deadline)" % c)
        continue
    v = verdict(r, mode != "behavior")
    count[v] += 1
    headline[verdict(r, False)] += 1
    if v == "FAILED":
        failed.append(c)
        details.append("%s: behavior=%s behaviorClose=%s remoteCloseCode=%s | %s | %s"
                       % (c, r.get("behavior"), r.get("behaviorClose"), r.get("remoteCloseCode"),
                          r.get("result"), r.get("resultClose")))

n = sum(count.values())
if n == 0:
    print("conformance: no case ran (wstest exit %d; see %s/wstest.log)" % (rc, out))
    sys.exit(2)
with open(os.path.join(out, "failures.txt"), "w") as f:
    f.write("".join(d + "\n" for d in details))
print("report: %s" % out)
if mode != "behavior":
    print("autobahn 'behavior' column alone: " + " ".join("%s=%d" % (k, headline[k]) for k in cats))
print("conformance: %d cases, " % n + " ".join("%s=%d" % (k, count[k]) for k in cats))
print("failed: " + (" ".join(failed) if failed else "none"))
sys.exit(1 if failed else 0)
EOF
