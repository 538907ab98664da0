#!/usr/bin/env bash
# Deliveries/s with 1000 WebSocket subscribers on one node versus spread over two
# clustered nodes (one process per core), and the latency of a cross-node hop.
#
#   benchmarks/cluster.sh
#
# Node A runs on CPU 0, node B on CPU 1; the generator is not pinned (both
# cores are taken by the gateways in the two-node case, which is the point:
# two processes can use both cores). Events are always published to node A.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${VENV:+$VENV/bin}
BIN=${BIN:-$(dirname "$(command -v python)")}
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
export MAX_CONNECTIONS_PER_MINUTE=10000000 NODE_COOKIE=bench-cookie NODE_HOST=127.0.0.1
start() {  # name cpu inbound api cluster seeds
    INBOUND_PORT="tcp:$3:interface=127.0.0.1" API_HTTP_PORT="tcp:$4:interface=127.0.0.1" \
    CLUSTER_PORT="tcp:$5:interface=127.0.0.1" CLUSTER_SEEDS="$6" \
        taskset -c "$2" "$BIN/twistd" -n --pidfile= --logfile="/tmp/rig-cluster-$1.log" rig \
        > /dev/null 2>&1 &
}
start a 0 4500 4510 4520 ""; a=$!
start b 1 4600 4610 4620 "127.0.0.1:4520"; b=$!
trap 'kill $a $b 2>/dev/null' EXIT
sleep 4
run() { "$BIN/python" "$HERE/fanout.py" --url http://127.0.0.1:4500 --gateway-pid "$a" "$@" --quiet | tail -9; }
echo "== one node: 1000 WS on A, saturation"
run --ws 1000 --max --duration 10 --label one-node
echo "== two nodes: 500 WS on A + 500 WS on B, saturation"
run --ws 1000 --subscribe-url http://127.0.0.1:4500,http://127.0.0.1:4600 --max --duration 10 --label two-nodes
# For the hop, B (which does the delivering) keeps CPU 1 to itself: the generator
# shares CPU 0 with A, which only parses the POST and forwards one message.
echo "== cross-node hop: 1000 WS on B only, published on A, 50 events/s"
taskset -c 0 "$BIN/python" "$HERE/fanout.py" --url http://127.0.0.1:4500 --gateway-pid "$b" \
    --ws 1000 --subscribe-url http://127.0.0.1:4600 --rate 50 --duration 15 --label cross-node \
    --quiet | tail -9
echo "== same node, same placement: 1000 WS on B, published on B, 50 events/s"
taskset -c 0 "$BIN/python" "$HERE/fanout.py" --url http://127.0.0.1:4600 --gateway-pid "$b" \
    --ws 1000 --rate 50 --duration 15 --label same-node --quiet | tail -9
