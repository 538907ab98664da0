#!/usr/bin/env bash
# Instructions the gateway executes for a fixed piece of work, counted by callgrind.
#
#   benchmarks/instructions.sh proxy  [N] [HEADER]   # N keep-alive proxied GETs (default 2000)
#   benchmarks/instructions.sh fanout                # 200 WS subscribers, 20 ev/s for 10 s
#   benchmarks/instructions.sh connect [N] [ARGS]    # N connects, each closed once live
#                                                    # (connect_rate.py ARGS: --transport ws,
#                                                    # --jwt-secret benchsecret; default 2000 SSE)
#   PYTHONPATH=/tmp/old benchmarks/instructions.sh proxy   # another checkout's gateway
#   KEEP=/tmp/prof benchmarks/instructions.sh fanout   # keep the profile for callgrind_annotate
#   NATS_SERVERS=127.0.0.1:4222 FANOUT_ARGS="--publish-nats 127.0.0.1:4222" \
#       benchmarks/instructions.sh fanout        # events from NATS instead of HTTP POSTs
#
# Wall-clock figures on this (shared, virtual) machine drift by 10-25% within an
# hour; callgrind's instruction count for the same work repeats within about 1%,
# so a cost of a few percent (tracing without an exporter, issue 16) is measured
# here rather than with wrk. The count runs from the gateway being ready (after a
# warm-up of 50 requests for the proxy) to the end of the work: start-up is not
# counted. Needs valgrind, nginx (the proxy's backend) and curl.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/nginx_backend.sh"
BIN=${VENV:+$VENV/bin}
BIN=${BIN:-$(dirname "$(command -v python)")}
CASE=${1:-proxy}
N=${2:-2000}
HEADER=${3:-}
WORK=$(mktemp -d)
pids=()
# TERM, not KILL: a killed nginx master leaves its worker holding the port (and stdout)
trap 'kill "${pids[@]}" 2>/dev/null; sleep 0.2; kill -9 "${pids[@]}" 2>/dev/null; rm -rf "$WORK"' EXIT
export INBOUND_PORT="tcp:4300:interface=127.0.0.1" API_HTTP_PORT="tcp:4310:interface=127.0.0.1"
export LOG_LEVEL=warn MAX_CONNECTIONS_PER_MINUTE=1000000 DASHBOARD_ENABLED=false
[ "$CASE" = connect ] && export JWT_SECRET_KEY=${JWT_SECRET_KEY:-benchsecret}
if [ "$CASE" = proxy ]; then
    nginx_conf "$WORK" 5050 >"$WORK/nginx.conf"
    "$(command -v nginx || echo /usr/sbin/nginx)" -c "$WORK/nginx.conf" -p "$WORK" & pids+=($!)
    export PROXY_CONFIG_FILE='[{"id":"bench","name":"bench","proxy":{"target_url":"127.0.0.1","port":5050},"version_data":{"default":{"endpoints":[{"id":"hello","method":"GET","path_regex":"/hello"}]}}}]'
fi
valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" "$BIN/python" "$BIN/twistd" -n \
    --pidfile= --logfile="$WORK/rig.log" rig >"$WORK/valgrind.log" 2>&1 & gateway=$!
pids+=($gateway)
for _ in $(seq 600); do
    curl -sf "http://127.0.0.1:4300/_rig/health" >/dev/null 2>&1 && break
    sleep 0.5
done
if [ "$CASE" = proxy ]; then
    "$BIN/python" "$HERE/keepalive_get.py" 4300 /hello 50 "$HEADER"
    callgrind_control -z "$gateway" >/dev/null 2>&1
    "$BIN/python" "$HERE/keepalive_get.py" 4300 /hello "$N" "$HEADER"
    work=$N
elif [ "$CASE" = connect ]; then
    # shellcheck disable=SC2086  # HEADER holds connect_rate.py's arguments here
    "$BIN/python" "$HERE/connect_rate.py" --url http://127.0.0.1:4300 --count 100 $HEADER >/dev/null
    callgrind_control -z "$gateway" >/dev/null 2>&1
    # shellcheck disable=SC2086
    "$BIN/python" "$HERE/connect_rate.py" --url http://127.0.0.1:4300 --count "$N" $HEADER \
        >"$WORK/connect.json"
    work=$N
else
    callgrind_control -z "$gateway" >/dev/null 2>&1
    "$BIN/python" "$HERE/fanout.py" --url http://127.0.0.1:4300 --ws 200 --rate 20 \
        --duration 10 --json-only ${FANOUT_ARGS:-} >"$WORK/fanout.json"
    work=$("$BIN/python" -c "import json; print(json.load(open('$WORK/fanout.json'))['deliveries_received'])")
fi
callgrind_control -d "$gateway" >/dev/null 2>&1
sleep 1
total=$(grep -h "^summary:\|^totals:" "$WORK"/cg.out.* | head -1 | awk '{print $2}')
# KEEP=DIR keeps the profile, for callgrind_annotate --inclusive=yes DIR/cg.out.*
[ -z "${KEEP:-}" ] || cp "$WORK"/cg.out.* "$KEEP"/
unit=$(case "$CASE" in proxy) echo request;; connect) echo connection;; *) echo delivery;; esac)
echo "$CASE ${PYTHONPATH:+PYTHONPATH=$PYTHONPATH }instructions=$total per_$unit=$((total / work))"
