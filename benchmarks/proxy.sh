#!/usr/bin/env bash
# Requests/s and latency through the proxy versus calling the backend directly.
#
#   benchmarks/proxy.sh            # needs wrk (Debian package "wrk")
#
# The backend (benchmarks/backend.py) and the gateway run on CPU 0, wrk on
# CPU 1, so both the direct and the proxied case cross between the two CPUs
# once per round trip (on this VM a cross-CPU wake-up costs ~0.4 ms, which
# would otherwise dominate the comparison). Each case runs three times and
# the median run is reported.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${VENV:+$VENV/bin}
BIN=${BIN:-$(dirname "$(command -v python)")}
command -v wrk >/dev/null || { echo "proxy.sh: install wrk (apt-get install wrk)" >&2; exit 2; }
BACKEND_PORT=${BACKEND_PORT:-5050}
INBOUND=${INBOUND:-4300}
API=${API:-4310}
taskset -c 0 "$BIN/python" "$HERE/backend.py" "$BACKEND_PORT" & backend=$!
CONFIG="[{\"id\":\"bench\",\"name\":\"bench\",\"proxy\":{\"target_url\":\"127.0.0.1\",\"port\":$BACKEND_PORT},\"version_data\":{\"default\":{\"endpoints\":[{\"id\":\"hello\",\"method\":\"GET\",\"path_regex\":\"/hello\"}]}}}]"
INBOUND_PORT="tcp:$INBOUND:interface=127.0.0.1" API_HTTP_PORT="tcp:$API:interface=127.0.0.1" \
    PROXY_CONFIG_FILE="$CONFIG" taskset -c 0 "$BIN/twistd" -n --pidfile= --logfile=/tmp/rig-proxy-bench.log rig & gateway=$!
trap 'kill $backend $gateway 2>/dev/null' EXIT
sleep 2
run() {  # label url connections
    for i in 1 2 3; do
        taskset -c 1 wrk -t1 -c"$3" -d8s --latency "$2" | awk -v label="$1" '
            /Requests\/sec/ {rps=$2}
            /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
            END {printf "%s rps=%s p50=%s p99=%s\n", label, rps, p50, p99}'
    done | sort -t= -k2 -n | sed -n 2p
}
for connections in 1 10 50; do
    run "direct  c=$connections" "http://127.0.0.1:$BACKEND_PORT/hello" "$connections"
    run "proxied c=$connections" "http://127.0.0.1:$INBOUND/hello" "$connections"
done
