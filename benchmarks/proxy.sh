#!/usr/bin/env bash
# Requests/s and latency through the proxy versus calling the backend directly.
#
#   benchmarks/proxy.sh                  # needs wrk and nginx (Debian packages)
#   CONNECTIONS="10 50" ROUNDS=5 benchmarks/proxy.sh
#   PYTHONPATH=/tmp/old LABEL=before benchmarks/proxy.sh   # another checkout's gateway
#   WRK_HEADER="traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" \
#       benchmarks/proxy.sh                # every request with that header
#   OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:5050 benchmarks/proxy.sh
#                                          # spans exported (the nginx backend takes them)
#
# The gateway runs alone on CPU 0 (GATEWAY_CPU); wrk and the backend share
# CPU 1 (GENERATOR_CPU). The backend is nginx answering ``return 200`` from one
# worker process (about 50,000 req/s on one core here, an order of magnitude
# more than the proxy, so it is never the limit); BACKEND=twisted uses
# benchmarks/backend.py instead (about 4,000 req/s: it would be the limit).
# Each case runs ROUNDS times (default 3) for DURATION (default 8s) and the
# median run by requests/s is reported.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/nginx_backend.sh"
BIN=${VENV:+$VENV/bin}
BIN=${BIN:-$(dirname "$(command -v python)")}
command -v wrk >/dev/null || { echo "proxy.sh: install wrk (apt-get install wrk)" >&2; exit 2; }
BACKEND=${BACKEND:-nginx}
BACKEND_PORT=${BACKEND_PORT:-5050}
INBOUND=${INBOUND:-4300}
API=${API:-4310}
GATEWAY_CPU=${GATEWAY_CPU:-0}
GENERATOR_CPU=${GENERATOR_CPU:-1}
CONNECTIONS=${CONNECTIONS:-1 10 50}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8s}
LABEL=${LABEL:-}
WORK=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$WORK"' EXIT

if [ "$BACKEND" = nginx ]; then
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
    [ -x "$NGINX" ] || { echo "proxy.sh: install nginx (apt-get install nginx)" >&2; exit 2; }
    nginx_conf "$WORK" "$BACKEND_PORT" >"$WORK/nginx.conf"
    taskset -c "$GENERATOR_CPU" "$NGINX" -c "$WORK/nginx.conf" -p "$WORK" & pids+=($!)
else
    taskset -c "$GENERATOR_CPU" "$BIN/python" "$HERE/backend.py" "$BACKEND_PORT" & pids+=($!)
fi
CONFIG="[{\"id\":\"bench\",\"name\":\"bench\",\"proxy\":{\"target_url\":\"127.0.0.1\",\"port\":$BACKEND_PORT},\"version_data\":{\"default\":{\"endpoints\":[{\"id\":\"hello\",\"method\":\"GET\",\"path_regex\":\"/hello\"}]}}}]"
INBOUND_PORT="tcp:$INBOUND:interface=127.0.0.1" API_HTTP_PORT="tcp:$API:interface=127.0.0.1" \
    PROXY_CONFIG_FILE="$CONFIG" taskset -c "$GATEWAY_CPU" "$BIN/twistd" -n --pidfile= \
    --logfile="$WORK/rig.log" rig & pids+=($!)
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$INBOUND/hello" >/dev/null 2>&1 \
        && curl -sf "http://127.0.0.1:$BACKEND_PORT/hello" >/dev/null 2>&1 && break
    sleep 0.1
done
run() {  # label url connections
    for _ in $(seq "$ROUNDS"); do
        taskset -c "$GENERATOR_CPU" wrk -t1 -c"$3" -d"$DURATION" --latency \
            ${WRK_HEADER:+-H "$WRK_HEADER"} "$2" | awk -v label="$1" '
            /Requests\/sec/ {rps=$2}
            /^ +50%/ {p50=$2} /^ +99%/ {p99=$2}
            /Non-2xx|Socket errors/ {errors=errors " " $0}
            END {printf "%s rps=%s p50=%s p99=%s%s\n", label, rps, p50, p99, errors}'
    done | sort -t= -k2 -n | sed -n "$(( (ROUNDS + 1) / 2 ))p"
}
for connections in $CONNECTIONS; do
    [ -n "${SKIP_DIRECT:-}" ] || run "${LABEL:+$LABEL }direct  c=$connections" \
        "http://127.0.0.1:$BACKEND_PORT/hello" "$connections"
    run "${LABEL:+$LABEL }proxied c=$connections" "http://127.0.0.1:$INBOUND/hello" "$connections"
done
