#!/usr/bin/env bash
# What a cross-node event costs its publisher, over the cluster links or a broker.
#
#   benchmarks/backplane.sh mesh|redis|nats N [RATE] [SECONDS] [SUBS_PER_NODE]
#
# Starts a broker of its own (redis-server or nats-server on a free port), one
# publishing gateway (pinned to CPU 0) with no subscribers, and N gateways with
# SUBS_PER_NODE WebSocket subscribers each (default 10), all in one cluster;
# then benchmarks/fanout.py (CPU 1) POSTs RATE events/s (default 100) for SECONDS
# (default 20) to the publisher and measures each delivery's latency. The nodes,
# the broker and the generator share two cores, so the figure that compares is
# the publisher's CPU time per event (from /proc, user + system, over the whole
# run: cluster upkeep included, the same in every mode), not throughput.
# With CALLGRIND=1 the publisher runs under valgrind and the figure is its
# instructions per event instead (deterministic to about 1%, whatever else the
# machine does; use a low RATE, e.g. 20: valgrind is ~50x slower).
# Prints one JSON line.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${VENV:+$VENV/bin}
BIN=${BIN:-$(dirname "$(command -v python)")}
MODE=${1:-mesh}
N=${2:-3}
RATE=${3:-100}
DURATION=${4:-20}
SUBS=${5:-10}
WORK=$(mktemp -d)
pids=()
trap 'kill -9 "${pids[@]}" 2>/dev/null; rm -rf "$WORK"' EXIT

free_port() { "$BIN/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

export NODE_COOKIE=backplane-bench LOG_LEVEL=warn MAX_CONNECTIONS_PER_MINUTE=1000000 \
    DASHBOARD_ENABLED=false NODE_HOST=127.0.0.1
case "$MODE" in
    mesh) ;;
    redis)
        port=$(free_port)
        redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
            --dir "$WORK" >/dev/null 2>&1 & pids+=($!)
        export CLUSTER_BACKPLANE="redis://127.0.0.1:$port" ;;
    nats)
        port=$(free_port)
        nats-server -a 127.0.0.1 -p "$port" >/dev/null 2>&1 & pids+=($!)
        export CLUSTER_BACKPLANE="nats://127.0.0.1:$port" ;;
    *) echo "mode must be mesh, redis or nats" >&2; exit 2 ;;
esac

start_node() {  # name cpu inbound internal cluster [seed] [wrapper...]; sets last_pid
    local name=$1 cpu=$2 inbound=$3 internal=$4 cluster=$5 seed=${6:-}
    shift 6 || shift $#
    INBOUND_PORT="tcp:$inbound:interface=127.0.0.1" \
        API_HTTP_PORT="tcp:$internal:interface=127.0.0.1" \
        CLUSTER_PORT="tcp:$cluster:interface=127.0.0.1" CLUSTER_SEEDS="$seed" \
        taskset -c "$cpu" "$@" "$BIN/python" "$BIN/twistd" -n --pidfile= \
        --logfile="$WORK/$name.log" rig >"$WORK/$name.out" 2>&1 &
    last_pid=$!
    pids+=("$last_pid")
}

publisher_port=$(free_port)
publisher_api=$(free_port)
seed_port=$(free_port)
wrapper=()
if [ -n "${CALLGRIND:-}" ]; then
    wrapper=(valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out")
fi
start_node publisher 0 "$publisher_port" "$publisher_api" "$seed_port" "" "${wrapper[@]}"
publisher=$last_pid
subscribe_urls=()
apis=("$publisher_api")
for i in $(seq "$N"); do
    inbound=$(free_port)
    api=$(free_port)
    start_node "node$i" 1 "$inbound" "$api" "$(free_port)" "127.0.0.1:$seed_port"
    subscribe_urls+=("http://127.0.0.1:$inbound")
    apis+=("$api")
done
for api in "${apis[@]}"; do
    for _ in $(seq 900); do
        status=$(curl -s "http://127.0.0.1:$api/v3/health" || true)
        if [ "$MODE" = mesh ] && [[ "$status" == *'"status": "ok"'* ]]; then break; fi
        if [[ "$status" == *'"backplane": "ok"'* ]]; then break; fi
        sleep 0.2
    done
done
sleep 2  # membership settles

ticks() { awk '{print $14 + $15}' "/proc/$publisher/stat"; }
[ -n "${CALLGRIND:-}" ] && callgrind_control -z "$publisher" >/dev/null 2>&1
before=$(ticks)
urls=$(IFS=,; echo "${subscribe_urls[*]}")
taskset -c 1 "$BIN/python" "$HERE/fanout.py" --url "http://127.0.0.1:$publisher_port" \
    --subscribe-url "$urls" --ws $((N * SUBS)) --rate "$RATE" --duration "$DURATION" \
    --json-only >"$WORK/fanout.json" || true  # a run with losses still reports them
after=$(ticks)
instructions=0
if [ -n "${CALLGRIND:-}" ]; then
    callgrind_control -d "$publisher" >/dev/null 2>&1
    sleep 1
    instructions=$(grep -h "^summary:\|^totals:" "$WORK"/cg.out.* | head -1 | awk '{print $2}')
fi
"$BIN/python" - "$WORK/fanout.json" "$MODE" "$N" "$before" "$after" "$instructions" <<'EOF'
import json
import os
import sys

path, mode, nodes, before, after, instructions = sys.argv[1:]
result = json.load(open(path))
ticks = int(after) - int(before)
events = max(result["events_sent"], 1)
cpu_s = ticks / os.sysconf("SC_CLK_TCK")
print(json.dumps({
    "mode": mode, "interested_nodes": int(nodes), "events": result["events_sent"],
    "publisher_cpu_s": round(cpu_s, 2),
    "publisher_cpu_us_per_event": round(cpu_s / events * 1e6, 1),
    "publisher_instructions_per_event": int(instructions) // events or None,
    "deliveries": result["deliveries_received"], "expected": result["expected_deliveries"],
    "lost": result["lost"], "latency_ms": result["latency_ms"]}))
EOF
