"""A reconnect storm of real clients: N SSE and WebSocket connects at once.

    taskset -c 1 python benchmarks/storm_clients.py --port 4000 --count 10000 [--jwt-secret S]

Every client connects at the same moment (non-blocking connects issued in a
loop), sends its request as soon as its socket is writable (SSE: ``GET
/_rig/v1/connection/sse``; WS: the upgrade to ``/_rig/v1/connection/ws``,
half of each by default), and is done when ``rig.subscriptions_set`` arrives:
the connection is live. Clients stay connected until the end, as after a
deploy. Printed: the time until the last client is live, the connect rate
(clients / that time), percentiles of each client's set-up time, failures
(refused, reset, an answer other than 200/101, or not live by ``--seconds``),
and the kernel's counters over the run: ``TCPSynRetrans`` counts SYNs this
machine sent again (a client that waited on a retransmission, 1 s or more),
``ListenOverflows``/``ListenDrops`` the gateway's full accept queue.

Only the standard library (and PyJWT for ``--jwt-secret``); Linux only.
"""
import argparse
import base64
import json
import os
import resource
import selectors
import socket
import subprocess
import time
from urllib.parse import quote

COUNTERS = ("TcpExtTCPSynRetrans", "TcpExtListenOverflows", "TcpExtListenDrops",
            "TcpExtSyncookiesSent")
LIVE = b"rig.subscriptions_set"


def kernel_counters():
    """The counters' change since the last call (``nstat`` keeps its own history)."""
    output = subprocess.run(["nstat", "-z", *COUNTERS], capture_output=True, text=True,
                            check=True).stdout
    return {line.split()[0].removeprefix("TcpExt"): int(line.split()[1])
            for line in output.splitlines() if line and not line.startswith("#")}


def requests(host, port, query):
    """The SSE request and the WebSocket upgrade, as bytes."""
    sse = (f"GET /_rig/v1/connection/sse?{query} HTTP/1.1\r\nHost: {host}:{port}\r\n"
           "Accept: text/event-stream\r\n\r\n").encode()
    key = base64.b64encode(os.urandom(16)).decode()
    ws = (f"GET /_rig/v1/connection/ws?{query} HTTP/1.1\r\nHost: {host}:{port}\r\n"
          "Upgrade: websocket\r\nConnection: Upgrade\r\n"
          f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    return sse, ws


def percentile(sorted_values, fraction):
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def storm(host, port, count, *, ws_share, query, seconds):
    sse_request, ws_request = requests(host, port, query)
    selector = selectors.DefaultSelector()
    live, failed = [], {}
    sockets = []
    started = time.monotonic()
    for number in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex((host, port))
        is_ws = number < count * ws_share
        selector.register(sock, selectors.EVENT_WRITE, [ws_request if is_ws else sse_request, b""])
        sockets.append(sock)
    issued = time.monotonic() - started
    pending = count
    while pending and time.monotonic() - started < seconds:
        for key, events in selector.select(timeout=0.5):
            sock, state = key.fileobj, key.data
            try:
                if events & selectors.EVENT_WRITE:
                    sock.sendall(state[0])
                    selector.modify(sock, selectors.EVENT_READ, state)
                    continue
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed by the gateway")
                state[1] += chunk
                if LIVE not in state[1]:
                    head = state[1][:16]
                    if len(head) >= 12 and head[9:12] not in (b"200", b"101"):
                        raise ConnectionError(head.decode("latin-1").strip())
                    continue
                live.append(time.monotonic() - started)
            except (OSError, ConnectionError) as error:
                reason = type(error).__name__ if isinstance(error, OSError) else str(error)
                failed[reason] = failed.get(reason, 0) + 1
            selector.unregister(sock)
            pending -= 1
    elapsed = max(live) if live else time.monotonic() - started
    live.sort()
    if pending:
        failed[f"not live after {seconds:g} s"] = pending
    for sock in sockets:
        sock.close()
    return {
        "clients": count, "ws": int(count * ws_share), "live": len(live),
        "failed": failed, "connects_issued_s": round(issued, 2),
        "all_live_s": round(elapsed, 2),
        "connect_rate_per_s": round(len(live) / elapsed, 1) if live else 0,
        "setup_s_p50": round(percentile(live, 0.5), 3) if live else None,
        "setup_s_p99": round(percentile(live, 0.99), 3) if live else None,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4000)
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--ws-share", type=float, default=0.5, help="fraction of WebSocket clients")
    parser.add_argument("--jwt-secret", help="every client sends ?jwt= signed HS256 with this")
    parser.add_argument("--subscriptions", default='[{"eventType":"greeting"}]')
    parser.add_argument("--seconds", type=float, default=60.0, help="give up after")
    parser.add_argument("--label", default="")
    options = parser.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    query = "subscriptions=" + quote(options.subscriptions, safe="")
    if options.jwt_secret:
        import jwt

        token = jwt.encode({"exp": time.time() + 3600, "username": "alice", "jti": "storm"},
                           options.jwt_secret, algorithm="HS256")
        query += "&jwt=" + token
    kernel_counters()  # start nstat's history here
    result = storm(options.host, options.port, options.count, ws_share=options.ws_share,
                   query=query, seconds=options.seconds)
    result["kernel"] = kernel_counters()
    result["jwt"] = bool(options.jwt_secret)
    if options.label:
        result = {"label": options.label, **result}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
