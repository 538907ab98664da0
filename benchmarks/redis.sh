#!/usr/bin/env bash
# Events consumed from a Redis stream and delivered to 1000 WebSocket subscribers,
# next to the same load published over HTTP. Needs a Redis on REDIS (default
# 127.0.0.1:6379); the gateway runs on CPU 0, the generator on CPU 1.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${VENV:+$VENV/bin}
BIN=${BIN:-$(dirname "$(command -v python)")}
REDIS=${REDIS:-127.0.0.1:6379}
STREAM=bench-$$
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
REDIS_URL="redis://$REDIS/0" REDIS_SOURCE_STREAMS=$STREAM REDIS_CONSUMER_GROUP=bench \
MAX_CONNECTIONS_PER_MINUTE=10000000 INBOUND_PORT=tcp:4900:interface=127.0.0.1 \
API_HTTP_PORT=tcp:4910:interface=127.0.0.1 \
    taskset -c 0 "$BIN/twistd" -n --pidfile= --logfile=/tmp/rig-redis-bench.log rig > /dev/null 2>&1 &
gateway=$!
trap 'kill $gateway 2>/dev/null' EXIT
sleep 3
for mode in redis http; do
    for pace in "--max --duration 8" "--rate 50 --duration 15"; do
        echo "== published over $mode, $pace"
        extra=()
        [ "$mode" = redis ] && extra=(--publish-redis "$REDIS" --redis-stream "$STREAM")
        # shellcheck disable=SC2086
        taskset -c 1 "$BIN/python" "$HERE/fanout.py" --url http://127.0.0.1:4900 --ws 1000 \
            $pace "${extra[@]}" --gateway-pid "$gateway" --quiet | tail -8
    done
done
