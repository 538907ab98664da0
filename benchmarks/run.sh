#!/usr/bin/env bash
# Run the standard fan-out scenarios against a txrig gateway started here.
#
#   benchmarks/run.sh                 # all scenarios
#   benchmarks/run.sh sat-ws mem-ws   # only these (names below)
#
# The gateway runs pinned to CPU 0, the generator (fanout.py) to CPU 1; every
# scenario gets a freshly started gateway, so RSS baselines and queues left
# over from the previous scenario cannot leak into the next.  Results (one
# JSON line plus a human summary per scenario) go to
# benchmarks/results-<date>.txt and to stdout.
#
# Environment:
#   VENV             virtualenv holding twistd and python (default: the one
#                    `python` resolves to, else /work/venv)
#   INBOUND_PORT     gateway inbound port (default 4000)
#   API_HTTP_PORT    gateway internal API port (default 4010)
#   GATEWAY_CPU      CPU list for the gateway (default 0)
#   GENERATOR_CPU    CPU list for the generator (default 1)
#   FANOUT_ARGS      extra arguments for every fanout.py run
#   RETRIES          run a scenario again, up to this many times (default 0),
#   MAX_OTHER_LOAD   when other processes used more than this % (default 10)
#                    of the gateway's or the generator's CPU meanwhile
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")

if [ -n "${VENV:-}" ]; then
    BIN="$VENV/bin"
elif command -v python >/dev/null 2>&1 && [ -x "$(dirname "$(command -v python)")/twistd" ]; then
    BIN=$(dirname "$(command -v python)")
else
    BIN=/work/venv/bin
fi
PY="$BIN/python"
TWISTD="$BIN/twistd"
for exe in "$PY" "$TWISTD"; do
    [ -x "$exe" ] || { echo "run.sh: $exe not found (set VENV)" >&2; exit 2; }
done

INBOUND_PORT=${INBOUND_PORT:-4000}
API_HTTP_PORT=${API_HTTP_PORT:-4010}
GATEWAY_CPU=${GATEWAY_CPU:-0}
GENERATOR_CPU=${GENERATOR_CPU:-1}
URL="http://127.0.0.1:$INBOUND_PORT"
LOG=/tmp/rig-bench.log
RESULTS="$HERE/results-$(date +%Y-%m-%dT%H%M%S).txt"
read -r -a EXTRA_ARGS <<< "${FANOUT_ARGS:-}"
RETRIES=${RETRIES:-0}
MAX_OTHER_LOAD=${MAX_OTHER_LOAD:-10}
OUT=$(mktemp /tmp/fanout-out.XXXXXX)

# Gateway environment: the bench event's data.room is an indexed field, and
# the per-minute connection limit (5000 by default) is lifted so that the
# 10,000- and 11,000-connection scenarios can connect at full speed.
export INBOUND_PORT API_HTTP_PORT
export EXTRACTORS='{"bench":{"room":{"stable_field_index":0,"event":{"json_pointer":"/data/room"}}}}'
export MAX_CONNECTIONS_PER_MINUTE=${MAX_CONNECTIONS_PER_MINUTE:-10000000}

# Both processes may open 11,000+ sockets.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

if command -v taskset >/dev/null 2>&1 && [ "$(nproc)" -ge 2 ]; then
    PIN_GW=(taskset -c "$GATEWAY_CPU")
    PIN_GEN=(taskset -c "$GENERATOR_CPU")
else
    echo "run.sh: taskset missing or fewer than 2 CPUs: not pinning" >&2
    PIN_GW=()
    PIN_GEN=()
fi

health() {
    "$PY" - "$URL" <<'EOF' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/_rig/health", timeout=1).read()
EOF
}

GW_PID=
stop_gateway() {
    if [ -n "$GW_PID" ] && kill -0 "$GW_PID" 2>/dev/null; then
        kill "$GW_PID" 2>/dev/null
        for _ in $(seq 50); do
            kill -0 "$GW_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -9 "$GW_PID" 2>/dev/null
        wait "$GW_PID" 2>/dev/null
    fi
    GW_PID=
}
trap 'stop_gateway; rm -f "$OUT"' EXIT
trap 'exit 130' INT TERM

start_gateway() {
    if health; then
        echo "run.sh: something already answers on $URL; stop it or set INBOUND_PORT" >&2
        exit 2
    fi
    (cd "$ROOT" && exec "${PIN_GW[@]}" "$TWISTD" -n --pidfile= --logfile="$LOG" rig) &
    GW_PID=$!
    for _ in $(seq 150); do
        health && return 0
        kill -0 "$GW_PID" 2>/dev/null || break
        sleep 0.2
    done
    echo "run.sh: gateway did not become healthy; see $LOG" >&2
    tail -n 20 "$LOG" >&2
    exit 1
}

# name | fanout.py arguments
SCENARIOS=(
    "sat-ws|--ws 1000 --max --duration 10"
    "paced-ws|--ws 1000 --rate 50 --duration 20"
    "sat-sse|--sse 1000 --max --duration 10"
    "paced-sse|--sse 1000 --rate 50 --duration 20"
    "match-ws|--ws 1000 --extra 10000 --max --duration 10"
    "mem-ws|--ws 10000 --idle --duration 2"
)

SELECTED=("$@")
if [ ${#SELECTED[@]} -gt 0 ]; then
    for w in "${SELECTED[@]}"; do
        found=
        for s in "${SCENARIOS[@]}"; do [ "${s%%|*}" = "$w" ] && found=1; done
        [ -n "$found" ] || { echo "run.sh: unknown scenario $w" >&2; exit 2; }
    done
fi

if health; then
    echo "run.sh: something already answers on $URL; stop it or set INBOUND_PORT" >&2
    exit 2
fi

{
    echo "# txrig fan-out benchmark, $(date -Iseconds)"
    echo "# host $(uname -nr), $(nproc) CPUs, $("$PY" -V 2>&1), gateway on CPU $GATEWAY_CPU, generator on CPU $GENERATOR_CPU"
    echo "# gateway tree $ROOT, commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo none)$(git -C "$ROOT" diff --quiet HEAD -- . ':!benchmarks' 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
} | tee "$RESULTS"

status=0
for s in "${SCENARIOS[@]}"; do
    name=${s%%|*}
    read -r -a args <<< "${s#*|}"
    if [ ${#SELECTED[@]} -gt 0 ]; then
        ok=
        for w in "${SELECTED[@]}"; do [ "$w" = "$name" ] && ok=1; done
        [ -n "$ok" ] || continue
    fi
    for attempt in $(seq $((RETRIES + 1))); do
        start_gateway
        echo | tee -a "$RESULTS"
        echo "## $name: fanout.py ${args[*]}" | tee -a "$RESULTS"
        "${PIN_GEN[@]}" "$PY" "$HERE/fanout.py" --url "$URL" --gateway-pid "$GW_PID" \
            --label "$name" "${args[@]}" "${EXTRA_ARGS[@]}" 2>&1 | tee "$OUT" | tee -a "$RESULTS"
        rc=${PIPESTATUS[0]}
        stop_gateway
        sleep 1
        # Other processes busy on a pinned CPU skew the figures: try again.
        other=$("$PY" -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
vals = [rows[-1].get(k) for k in ("gateway_cpu_others_pct", "generator_cpu_others_pct")] if rows else []
print(int(max([v for v in vals if v is not None], default=0)))' "$OUT" 2>/dev/null || echo 0)
        if [ "$other" -gt "$MAX_OTHER_LOAD" ] && [ "$attempt" -le "$RETRIES" ]; then
            echo "(other load ${other} % > ${MAX_OTHER_LOAD} %: running $name again)" | tee -a "$RESULTS"
            sleep 5
            continue
        fi
        break
    done
    [ "$rc" -eq 0 ] || { status=1; echo "(fanout.py exit status $rc)" | tee -a "$RESULTS"; }
done
rm -f "$OUT"

# One table of the headline figures.
echo | tee -a "$RESULTS"
"$PY" - "$RESULTS" <<'EOF' | tee -a "$RESULTS"
import json, sys
rows = {}
for l in open(sys.argv[1]):
    if l.startswith("{"):
        r = json.loads(l)
        rows[r["label"]] = r  # the last attempt of each scenario
rows = rows.values()
fmt = "%-10s %6s %9s %10s %8s %9s %8s %8s %6s %6s %6s %6s %8s"
print(fmt % ("scenario", "conns", "published", "deliv/s", "lost", "p50 ms", "p99 ms",
             "max ms", "gw %", "(oth)", "gen %", "(oth)", "KB/conn"))
def f(v, spec="%.1f"):
    return "-" if v is None else spec % v
for r in rows:
    lat = r.get("latency_ms") or {}
    idle = r["mode"] == "idle"
    print(fmt % (r["label"], r["connections_ready"],
                 "-" if idle else r["events_published"],
                 "-" if idle else f(r["deliveries_per_s"], "%.0f"),
                 "-" if idle else r["lost"],
                 f(lat.get("p50"), "%.2f"), f(lat.get("p99"), "%.2f"), f(lat.get("max"), "%.1f"),
                 f(r["gateway_cpu_pct"], "%.0f"), f(r.get("gateway_cpu_others_pct"), "%.0f"),
                 f(r["generator_cpu_pct"], "%.0f"), f(r.get("generator_cpu_others_pct"), "%.0f"),
                 f(r["rss_kb_per_connection"])))
print("(oth): busy time of that pinned CPU spent by other processes and interrupts")
EOF
echo "results: $RESULTS"
exit $status
