#!/usr/bin/env bash
# SSE fan-out over HTTPS: HTTP/2 streams against HTTP/1.1 connections (issue 17).
#
#   benchmarks/h2.sh            # 3 rounds of every scenario, medians at the end
#   ROUNDS=5 benchmarks/h2.sh
#
# Makes a self-signed certificate, starts one gateway with HTTPS
# (taskset -c 0), and runs h2_fanout.py (taskset -c 1) for each scenario,
# rounds interleaved so that a slow spell of a shared machine hits every
# scenario alike. Results (one JSON line a run, medians at the end) go to
# benchmarks/results-h2-<date>.txt and to stdout.
#
# Environment: VENV, INBOUND_PORT (4100), INBOUND_HTTPS_PORT (4101),
# API_HTTP_PORT (4110), GATEWAY_CPU (0), GENERATOR_CPU (1), ROUNDS (3),
# H2_ARGS (more h2_fanout.py arguments for every run, e.g. "--duration 3").
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
BIN=${VENV:+$VENV/bin}
BIN=${BIN:-$(dirname "$(command -v python)")}
PY="$BIN/python"
TWISTD="$BIN/twistd"
# this tree's rig, even where the virtualenv has another one installed (pip install -e)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export INBOUND_PORT=${INBOUND_PORT:-4100}
export INBOUND_HTTPS_PORT=${INBOUND_HTTPS_PORT:-4101}
export API_HTTP_PORT=${API_HTTP_PORT:-4110}
export API_HTTPS_PORT=${API_HTTPS_PORT:-4111}
export MAX_CONNECTIONS_PER_MINUTE=10000000
ROUNDS=${ROUNDS:-3}
read -r -a EXTRA <<< "${H2_ARGS:-}"
PIN_GW=(taskset -c "${GATEWAY_CPU:-0}")
PIN_GEN=(taskset -c "${GENERATOR_CPU:-1}")
CERTS=$(mktemp -d /tmp/rig-h2-bench.XXXXXX)
LOG=/tmp/rig-h2-bench.log
RESULTS="$HERE/results-h2-$(date +%Y-%m-%dT%H%M%S).txt"
GW_PID=

"$PY" - "$CERTS" <<'EOF'
import datetime, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
now = datetime.datetime.now(datetime.UTC)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
open(sys.argv[1] + "/cert.pem", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(sys.argv[1] + "/key.pem", "wb").write(key.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
    serialization.NoEncryption()))
EOF
export HTTPS_CERTFILE="$CERTS/cert.pem" HTTPS_KEYFILE="$CERTS/key.pem"

stop_gateway() {
    if [ -n "$GW_PID" ] && kill -0 "$GW_PID" 2>/dev/null; then
        kill "$GW_PID"
        wait "$GW_PID" 2>/dev/null
    fi
    rm -rf "$CERTS"
}
trap stop_gateway EXIT
trap 'exit 130' INT TERM

(cd "$ROOT" && exec "${PIN_GW[@]}" "$TWISTD" -n --pidfile= --logfile="$LOG" rig) &
GW_PID=$!
for _ in $(seq 100); do
    "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$INBOUND_PORT/_rig/health')" \
        2>/dev/null && break
    sleep 0.2
done

# name | h2_fanout.py arguments
SCENARIOS=(
    "sat-h1|--mode h1 --sse 200 --max"
    "sat-h2|--mode h2 --sse 200 --per-connection 100 --max"
    "sat-h2x10|--mode h2 --sse 200 --per-connection 10 --max"
    "paced-h1|--mode h1 --sse 200 --rate 50"
    "paced-h2|--mode h2 --sse 200 --per-connection 100 --rate 50"
)
{
    echo "# SSE fan-out over HTTPS, $(date -Iseconds), $(nproc) CPUs, gateway on CPU ${GATEWAY_CPU:-0}, generator on CPU ${GENERATOR_CPU:-1}"
    echo "# commit $(git -C "$ROOT" rev-parse --short HEAD)"
} | tee "$RESULTS"
for round in $(seq "$ROUNDS"); do
    for scenario in "${SCENARIOS[@]}"; do
        name=${scenario%%|*}
        read -r -a args <<< "${scenario#*|}"
        line=$("${PIN_GEN[@]}" "$PY" "$HERE/h2_fanout.py" --port "$INBOUND_PORT" \
            --https-port "$INBOUND_HTTPS_PORT" --gateway-pid "$GW_PID" "${args[@]}" "${EXTRA[@]}")
        echo "$name round $round $line" | tee -a "$RESULTS"
    done
done
"$PY" - "$RESULTS" <<'EOF' | tee -a "$RESULTS"
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    if line.startswith("#"):
        continue
    name, _, _, data = line.split(" ", 3)
    runs.setdefault(name, []).append(json.loads(data))
print("# medians: scenario, deliveries/s, published/s, latency p50/p99 ms, gateway/generator CPU %")
for name, results in runs.items():
    median = lambda key: statistics.median(r[key] for r in results if r.get(key) is not None)
    print(f"{name:10} {median('deliveries_per_s'):>9} {median('published_per_s'):>8} "
          f"{median('latency_ms_p50'):>7}/{median('latency_ms_p99'):<7} "
          f"{median('gateway_cpu_pct'):>4}/{median('generator_cpu_pct'):<4} (n={len(results)})")
EOF
