"""The gateway's own Python per request or per connect, without sockets or a kernel.

    python benchmarks/inprocess.py proxy        # one proxied GET, client to backend and back
    python benchmarks/inprocess.py web          # one GET answered by a trivial handler
    python benchmarks/inprocess.py sse          # one SSE connect (one subscription), welcome, close
    python benchmarks/inprocess.py proxy --profile   # cProfile, by own time
    PYTHONPATH=/tmp/old python benchmarks/inprocess.py proxy   # another checkout

The gateway is built as twistd builds it (``RigService.build`` with the
environment's settings) but never listens: the inbound site's channel and,
for the proxy, one keep-alive backend connection run on in-memory transports,
and the backend's answer is fed in by hand. What a socket costs (the
``send``/``recv`` system calls, the reactor's dispatch) is left out, so this is
the part of a request that Python code decides, measured in microseconds with
little noise; ``proxy.sh`` and ``instructions.sh`` measure the whole.
"""
import argparse
import cProfile
import json
import pstats
import statistics
import time

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from rig.service import RigService
from rig.settings import Settings
from rig.web.http import RigSite, Router

BACKEND = ("http", "127.0.0.1", 5050)
API = [{"id": "bench", "name": "bench", "proxy": {"target_url": "127.0.0.1", "port": 5050},
        "version_data": {"default": {"endpoints": [
            {"id": "hello", "method": "GET", "path_regex": "/hello"}]}}}]
GET = b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:4000\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
# as connect_rate.py connects: one subscription in the query
SSE = (b"GET /_rig/v1/connection/sse?subscriptions=%5B%7B%22eventType%22%3A%22greeting%22%7D%5D"
       b" HTTP/1.1\r\nHost: 127.0.0.1:4000\r\nAccept: text/event-stream\r\n\r\n")
BACKEND_ANSWER = (b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 07 Dec 2026 20:30:00 GMT\r\n"
                  b"Content-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive"
                  b"\r\n\r\nok")
CLOSED = Failure(ConnectionDone())


class _Transport(StringTransport):
    """A TCP transport's producer calls, which a StringTransport refuses."""

    def unregisterProducer(self):
        self.producer = None


def _inbound_site(extra_env):
    env = {"LOG_LEVEL": "warn", "MAX_CONNECTIONS_PER_MINUTE": "1000000000", **extra_env}
    service = RigService.build(Settings.load(None, env), reactor, environ=env)
    inbound = Settings.load(None, env).inbound_listen
    for child in service:
        if getattr(child, "description", "").startswith(inbound):
            return child.factory
    raise SystemExit(f"no inbound listener ({inbound}) in the service")


def _open(site):
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    transport = _Transport()
    channel.makeConnection(transport)
    return channel, transport


def proxy_cycle():
    from rig.proxy.upstream import UpstreamConnection  # the proxy's client since ae716ef

    site = _inbound_site({"PROXY_CONFIG_FILE": json.dumps(API)})
    pool = site.resource._fallback._forwarder._pool
    backend = UpstreamConnection(pool, BACKEND)
    backend_transport = _Transport()
    backend.makeConnection(backend_transport)
    pool.release(backend)
    channel, transport = _open(site)

    def one():
        transport.clear()
        backend_transport.clear()
        channel.dataReceived(GET)
        backend.dataReceived(BACKEND_ANSWER)

    return one, transport, b"HTTP/1.1 200 OK"


def web_cycle():
    def hello(_request):
        return b"ok"

    site = RigSite(Router([(r"/hello", {b"GET": hello})], hello))
    channel, transport = _open(site)

    def one():
        transport.clear()
        channel.dataReceived(GET)

    return one, transport, b"HTTP/1.1 200 OK"


def sse_cycle():
    site = _inbound_site({})
    last = []

    def one():
        channel, transport = _open(site)
        channel.dataReceived(SSE)
        reactor.runUntilCurrent()  # the welcome goes out at the end of the reactor's turn
        last[:] = [transport.value()]
        channel.connectionLost(CLOSED)

    class Last:
        def value(self):
            return last[0] if last else b""

    return one, Last(), b"rig.connection.create"


CYCLES = {"proxy": proxy_cycle, "web": web_cycle, "sse": sse_cycle}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("case", choices=sorted(CYCLES))
    parser.add_argument("--count", type=int, default=20000, help="cycles per measurement")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    options = parser.parse_args()
    one, transport, expected = CYCLES[options.case]()
    one()
    if expected not in transport.value():
        raise SystemExit(f"unexpected answer: {transport.value()[:300]!r}")
    for _ in range(2000):  # warm-up: caches, the routes remembered
        one()
    if options.profile:
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(options.count):
            one()
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
        return
    runs = []
    for _ in range(options.runs):
        started = time.perf_counter()
        for _ in range(options.count):
            one()
        runs.append((time.perf_counter() - started) / options.count * 1e6)
    print(json.dumps({"case": options.case, "us_median": round(statistics.median(runs), 2),
                      "us_min": round(min(runs), 2), "runs": len(runs),
                      "count": options.count}))


if __name__ == "__main__":
    main()
