#!/usr/bin/env bash
# The fan-out reference in C: nginx + nchan under fanout.py, as the gateway is measured.
#
#   benchmarks/nchan.sh                                  # paced: 1000 WS, 50 ev/s, 20 s
#   benchmarks/nchan.sh --ws 1000 --max --duration 10    # saturation
#
# Needs the Debian packages nginx and libnginx-mod-nchan. One nginx worker runs on
# GATEWAY_CPU (0), fanout.py on GENERATOR_CPU (1), as run.sh does for the gateway.
# nchan speaks neither RIG's welcome nor CloudEvents, so the channel is given two
# "rig.*" messages first and every subscriber starts from the oldest message: each
# gets those two (fanout.py's sign that a connection is ready), then the events
# fanout.py POSTs to /_rig/v1/events, which nchan publishes as sent. Arguments
# replace fanout.py's default ones; the summary is fanout.py's.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${VENV:+$VENV/bin}
BIN=${BIN:-$(dirname "$(command -v python)")}
PORT=${NCHAN_PORT:-4200}
MODULE=${NCHAN_MODULE:-/usr/lib/nginx/modules/ngx_nchan_module.so}
[ -f "$MODULE" ] || { echo "nchan.sh: $MODULE missing (apt-get install libnginx-mod-nchan)" >&2; exit 2; }
ARGS=("$@")
[ ${#ARGS[@]} -gt 0 ] || ARGS=(--ws 1000 --rate 50 --duration 20)
WORK=$(mktemp -d)
trap 'kill "$(cat "$WORK/nginx.pid" 2>/dev/null)" 2>/dev/null; rm -rf "$WORK"' EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
cat >"$WORK/nginx.conf" <<CONF
load_module $MODULE;
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/error.log;
events { worker_connections 20000; }
http {
    access_log off;
    client_body_temp_path $WORK;
    server {
        listen 127.0.0.1:$PORT backlog=4096;
        location /_rig/v1/connection/ {
            nchan_subscriber websocket;
            nchan_channel_id bench;
            nchan_subscriber_first_message oldest;
        }
        location = /_rig/v1/events {
            nchan_publisher;
            nchan_channel_id bench;
            nchan_message_buffer_length 10;
            nchan_message_timeout 1h;
        }
    }
}
CONF
taskset -c "${GATEWAY_CPU:-0}" "$(command -v nginx || echo /usr/sbin/nginx)" -c "$WORK/nginx.conf" -p "$WORK"
for _ in $(seq 50); do
    curl -s -o /dev/null "http://127.0.0.1:$PORT/_rig/v1/events" && break
    sleep 0.1
done
for welcome in '{"type":"rig.connection.create"}' '{"type":"rig.subscriptions_set"}'; do
    curl -s -o /dev/null -X POST --data "$welcome" "http://127.0.0.1:$PORT/_rig/v1/events"
done
worker=$(pgrep -P "$(cat "$WORK/nginx.pid")" | head -1)
taskset -c "${GENERATOR_CPU:-1}" "$BIN/python" "$HERE/fanout.py" \
    --url "http://127.0.0.1:$PORT" --gateway-pid "$worker" --label nchan "${ARGS[@]}"
