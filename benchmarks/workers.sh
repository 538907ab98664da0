#!/usr/bin/env bash
# WORKERS=1 against WORKERS=2, both allowed on CPUs 0-1, the generator unpinned.
#
#   benchmarks/workers.sh            # 3 rounds, alternating 1 and 2 workers
#   ROUNDS=5 benchmarks/workers.sh
#
# Each round, for 1 then 2 workers, starts a fresh gateway with
# `taskset -c 0,1 twistd rig` and runs two fanout.py scenarios:
#   paced: 1000 WebSockets, 50 events/s for 20 s  -> CPU seconds per 100k deliveries
#   sat:   1000 WebSockets, saturation for 10 s   -> deliveries/s
# fanout.py's --gateway-pid sums the CPU of the supervisor and its workers.
# With 2 workers each event is POSTed to one worker and crosses the cluster
# link to the other: the difference in CPU per delivery is the cluster's cost.
# The generator shares the two cores; its own CPU is reported per run.
# Results: benchmarks/results-workers-<date>.txt (JSON lines, then a table of
# medians).
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
BIN=${VENV:+$VENV/bin}
BIN=${BIN:-$(dirname "$(command -v python)")}
PY="$BIN/python"
TWISTD="$BIN/twistd"
ROUNDS=${ROUNDS:-3}
PORT=${INBOUND_PORT:-4000}
API=${API_HTTP_PORT:-4010}
URL="http://127.0.0.1:$PORT"
LOG=/tmp/rig-bench-workers.log
RESULTS="$HERE/results-workers-$(date +%Y-%m-%dT%H%M%S).txt"

export INBOUND_PORT="tcp:$PORT:interface=127.0.0.1" API_HTTP_PORT="tcp:$API:interface=127.0.0.1"
export MAX_CONNECTIONS_PER_MINUTE=10000000 LOG_LEVEL=warn
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

ready() {  # $1: workers; every worker is a live cluster member and the node answers ready
    "$PY" - "http://127.0.0.1:$API" "${1:-1}" <<'EOF' >/dev/null 2>&1
import json, sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/v3/health", timeout=1).read()
view = json.load(urllib.request.urlopen(sys.argv[1] + "/v3/cluster", timeout=1))
workers = int(sys.argv[2])
alive = [m for m in view["members"] if m["state"] == "alive"]
sys.exit(0 if workers == 1 or len(alive) == workers else 1)
EOF
}

GW_PID=
stop_gateway() {
    if [ -n "$GW_PID" ] && kill -0 "$GW_PID" 2>/dev/null; then
        kill "$GW_PID"
        for _ in $(seq 100); do kill -0 "$GW_PID" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$GW_PID" 2>/dev/null
        wait "$GW_PID" 2>/dev/null
    fi
    GW_PID=
}
trap stop_gateway EXIT
trap 'exit 130' INT TERM

start_gateway() {  # $1: workers
    ready && { echo "workers.sh: port $API already answers" >&2; exit 2; }
    (cd "$ROOT" && WORKERS=$1 exec taskset -c 0,1 "$TWISTD" -n --pidfile= --logfile="$LOG" rig) &
    GW_PID=$!
    for _ in $(seq 150); do
        ready "$1" && sleep 1 && return 0
        sleep 0.2
    done
    echo "workers.sh: gateway not ready; see $LOG" >&2
    exit 1
}

{
    echo "# txrig WORKERS benchmark, $(date -Iseconds), $ROUNDS rounds"
    echo "# host $(uname -nr), $(nproc) CPUs, gateway on CPUs 0-1 (taskset -c 0,1), generator unpinned"
    echo "# commit $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- rig 2>/dev/null || echo ' (+ uncommitted changes)')"
} | tee "$RESULTS"

for round in $(seq "$ROUNDS"); do
    for workers in 1 2; do
        for scenario in "paced|--rate 50 --duration 20" "sat|--max --duration 10"; do
            name="${scenario%%|*}-w$workers"
            read -r -a args <<< "${scenario#*|}"
            start_gateway "$workers"
            echo "## round $round: $name" | tee -a "$RESULTS"
            "$PY" "$HERE/fanout.py" --url "$URL" --gateway-pid "$GW_PID" --ws 1000 \
                --label "$name" --json-only "${args[@]}" 2>&1 | tee -a "$RESULTS"
            stop_gateway
            sleep 1
        done
    done
done

echo | tee -a "$RESULTS"
"$PY" - "$RESULTS" <<'EOF' | tee -a "$RESULTS"
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    if line.startswith("{"):
        r = json.loads(line)
        runs.setdefault(r["label"], []).append(r)

def med(rows, f):
    values = [f(r) for r in rows if f(r) is not None]
    return statistics.median(values) if values else None

def cpu_per_100k(r):
    got = r["deliveries_per_s"] * r["window_s"]
    return r["gateway_cpu_pct"] / 100 * r["window_s"] / got * 1e5 if got else None

print("%-9s %5s %10s %14s %9s %9s %7s %7s" % (
    "run", "n", "deliv/s", "CPU s/100k del", "gw CPU %", "gen CPU %", "p99 ms", "lost"))
for label in ("paced-w1", "paced-w2", "sat-w1", "sat-w2"):
    rows = runs.get(label, [])
    if not rows:
        continue
    print("%-9s %5d %10.0f %14.3f %9.1f %9.1f %7.1f %7d" % (
        label, len(rows), med(rows, lambda r: r["deliveries_per_s"]),
        med(rows, cpu_per_100k), med(rows, lambda r: r["gateway_cpu_pct"]),
        med(rows, lambda r: r["generator_cpu_pct"]),
        med(rows, lambda r: r["latency_ms"]["p99"]), sum(r["lost"] for r in rows)))
one, two = (med(runs.get(k, []), cpu_per_100k) for k in ("paced-w1", "paced-w2"))
if one and two:
    print(f"\ncluster overhead per delivery (paced, medians): {(two - one) / one * 100:+.1f} %")
sat1, sat2 = (med(runs.get(k, []), lambda r: r["deliveries_per_s"]) for k in ("sat-w1", "sat-w2"))
if sat1 and sat2:
    print(f"saturation, 2 workers against 1: {sat2 / sat1:.2f}x")
EOF
