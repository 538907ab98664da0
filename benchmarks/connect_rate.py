"""Connection set-up rate: SSE or WebSocket connects per second, with and without a JWT.

Each connection sends ``GET /_rig/v1/connection/sse`` (or the WebSocket
upgrade with ``--transport ws``; optionally with ``?jwt=``), waits for
``rig.subscriptions_set`` (the connection is live), and closes. With a JWT, each
connection has a token of its own (another ``jti``), made before the clock starts,
as the clients of a real storm have.
``--concurrency`` connections are in flight at once. Run the gateway on
another core (``taskset -c 0``) with ``MAX_CONNECTIONS_PER_MINUTE`` high
enough, and this with ``taskset -c 1``.

    python benchmarks/connect_rate.py --url http://127.0.0.1:4000 --count 5000
    python benchmarks/connect_rate.py --jwt-secret mysecret --count 5000
    python benchmarks/connect_rate.py --transport ws --count 5000
"""
import argparse
import json
import selectors
import socket
import statistics
import time
from urllib.parse import quote, urlsplit


def make_token(secret, claims):
    import jwt

    payload = {"exp": time.time() + 3600, **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


def run(host, port, paths, count, *, concurrency, timeout, websocket=False):
    """*paths*: one request target per connection (cycled when fewer)."""
    upgrade = ("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n") if websocket else ""
    requests = [(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{upgrade}\r\n").encode()
                for path in paths]
    selector = selectors.DefaultSelector()
    started = done = failed = 0
    latencies = []
    deadline = time.monotonic() + timeout

    def open_one():
        nonlocal started
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex((host, port))
        selector.register(sock, selectors.EVENT_WRITE,
                          [time.monotonic(), b"", False, requests[started % len(requests)]])
        started += 1

    begin = time.monotonic()
    while started < min(concurrency, count):
        open_one()
    while done + failed < count and time.monotonic() < deadline:
        for key, events in selector.select(timeout=1.0):
            sock, state = key.fileobj, key.data
            try:
                if events & selectors.EVENT_WRITE and not state[2]:
                    sock.sendall(state[3])
                    state[2] = True
                    selector.modify(sock, selectors.EVENT_READ, state)
                    continue
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                state[1] += chunk
                if b"rig.subscriptions_set" not in state[1]:
                    if state[1][9:12] not in (b"200", b"101") and b"\r\n\r\n" in state[1]:
                        raise ConnectionError(state[1].split(b"\r\n", 1)[0].decode())
                    continue
                latencies.append(time.monotonic() - state[0])
                done += 1
            except (OSError, ConnectionError):
                failed += 1
            selector.unregister(sock)
            sock.close()
            if started < count:
                open_one()
    elapsed = time.monotonic() - begin
    return {
        "connections": done, "failed": failed, "seconds": round(elapsed, 3),
        "connects_per_s": round(done / elapsed, 1),
        "setup_ms_p50": round(statistics.median(latencies) * 1000, 2) if latencies else None,
        "setup_ms_p99": round(sorted(latencies)[int(len(latencies) * 0.99) - 1] * 1000, 2)
        if latencies else None,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--url", default="http://127.0.0.1:4000")
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--jwt-secret", help="add ?jwt= signed HS256 with this secret")
    parser.add_argument("--subscriptions", default='[{"eventType":"greeting"}]')
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--transport", choices=("sse", "ws"), default="sse")
    args = parser.parse_args()
    url = urlsplit(args.url)
    path = f"/_rig/v1/connection/{args.transport}?subscriptions=" + quote(
        args.subscriptions, safe="")
    paths = [path]
    if args.jwt_secret:
        paths = [path + "&jwt=" + make_token(args.jwt_secret, {"username": "alice",
                                                                "jti": f"bench-{n}"})
                 for n in range(args.count)]
    result = run(url.hostname, url.port or 80, paths, args.count, concurrency=args.concurrency,
                 timeout=args.timeout, websocket=args.transport == "ws")
    result.update(transport=args.transport, jwt=bool(args.jwt_secret))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
