#!/usr/bin/env python3
"""Soak test: many WebSocket and SSE connect/disconnect cycles with events flowing.

Starts a ``twistd rig`` process (or attaches to one with ``--attach``), warms
it up, then records its open file descriptors, the connections in its
registry (from ``/metrics``) and its resident memory; runs ``--cycles``
connect/disconnect cycles, alternating WebSocket and SSE, while a publisher
posts matching events; lets it settle, and records the same figures again.
Exits 1 when they are not back to the baseline within the tolerances
(``--fd-slack`` descriptors, no connection left, ``--rss-slack-mb``).

A cycle connects, reads the two welcome events, on every ``--wait-every``-th
cycle also waits for a published event, and then leaves in one of three ways
in turn: a clean close (WebSocket close frame, or FIN for SSE), a FIN without
goodbye, or a reset (RST). Each cycle is bounded by ``--cycle-timeout``.

Twisted is the client here too: the point is the gateway's state afterwards,
not client speed.
"""
from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse

from loadgen import proc_rss_kb  # the script's own directory is on sys.path
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

SUBSCRIPTIONS = urllib.parse.quote(json.dumps([{"eventType": "greeting"}]))
WS_CLOSE = b"\x88\x82\x00\x00\x00\x00\x03\xe8"  # masked close frame, code 1000, zero mask


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Cycle(protocol.Protocol):
    """One connection: handshake, welcome events, maybe one event, then leave."""

    def __init__(self, kind, wait_event, leave):
        self.kind, self.wait_event, self.leave = kind, wait_event, leave
        self.buffer = b""
        self.done = defer.Deferred()
        self.welcomed = False

    def connectionMade(self):
        path = f"/_rig/v1/connection/{self.kind}?subscriptions={SUBSCRIPTIONS}"
        head = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if self.kind == "ws":
            key = base64.b64encode(os.urandom(16)).decode()
            head += ("Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
        self.transport.write((head + "\r\n").encode())

    def dataReceived(self, data):
        self.buffer += data
        if not self.welcomed and b"rig.subscriptions_set" in self.buffer:
            self.welcomed = True
            self.buffer = self.buffer[self.buffer.index(b"rig.subscriptions_set"):]
        if self.welcomed and (not self.wait_event or b'"greeting"' in self.buffer):
            self._leave()

    def _leave(self):
        if self.transport is None or self.done.called:
            return
        self.done.callback(True)
        if self.leave == "reset":
            self.transport.abortConnection()
            return
        if self.leave == "clean" and self.kind == "ws":
            self.transport.write(WS_CLOSE)
        self.transport.loseConnection()

    def connectionLost(self, reason):
        if not self.done.called:
            self.done.callback(False)


class Soak:
    def __init__(self, args):
        self.args = args
        self.ok = self.failed = self.started = 0
        self.leaves = ("clean", "fin", "reset")

    async def one(self, number):
        args = self.args
        kind = "ws" if number % 2 else "sse"
        cycle = Cycle(kind, number % args.wait_every == 0, self.leaves[number % 3])
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", args.port, timeout=args.cycle_timeout)
        timeout = reactor.callLater(args.cycle_timeout, lambda: cycle.transport
                                    and cycle.transport.abortConnection())
        try:
            await connectProtocol(endpoint, cycle)
            good = await cycle.done
        except Exception:
            good = False
        finally:
            if timeout.active():
                timeout.cancel()
        if good:
            self.ok += 1
        else:
            self.failed += 1

    async def run_cycles(self, count):
        numbers = iter(range(self.started, self.started + count))
        self.started += count

        async def worker():
            for number in numbers:
                await self.one(number)

        await defer.gatherResults([defer.ensureDeferred(worker())
                                   for _ in range(self.args.concurrency)])


class Publisher:
    """Posts a matching event every ``interval`` seconds on one kept-alive connection."""

    def __init__(self, port, interval):
        self.port, self.interval, self.sent = port, interval, 0
        self.loop = task.LoopingCall(self.post)
        self.proto = None

    async def start(self):
        self.proto = await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.port), protocol.Protocol())
        self.loop.start(self.interval)

    def post(self):
        self.sent += 1
        body = json.dumps({"specversion": "1.0", "type": "greeting", "source": "soak",
                           "id": str(self.sent), "data": {"n": self.sent}}).encode()
        self.proto.transport.write(
            b"POST /_rig/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    def stop(self):
        if self.loop.running:
            self.loop.stop()
        if self.proto is not None:
            self.proto.transport.loseConnection()


async def http_get(port, path):
    import treq

    response = await treq.get(f"http://127.0.0.1:{port}{path}", timeout=5)
    return response.code, await response.text()


async def registry_connections(api_port, metric):
    """Live connections as ``/metrics`` reports them (summed over labels)."""
    code, text = await http_get(api_port, "/metrics")
    if code != 200:
        return None
    total, found = 0.0, False
    for line in text.splitlines():
        if line.startswith((metric + "{", metric + " ")):
            total += float(line.rsplit(" ", 1)[1])
            found = True
    return int(total) if found else None


async def snapshot(args, pid):
    return {"fds": open_fds(pid), "rss_kb": proc_rss_kb(pid),
            "connections": await registry_connections(args.api_port, args.metric)}


async def settle(args, pid, baseline_connections):
    """Wait (bounded) until the registry is back to the baseline's connection count."""
    deadline = time.monotonic() + args.settle
    while time.monotonic() < deadline:
        current = await snapshot(args, pid)
        if current["connections"] == baseline_connections:
            break
        await task.deferLater(reactor, 0.2)
    await task.deferLater(reactor, 1.0)
    return await snapshot(args, pid)


def start_gateway(args):
    env = dict(os.environ, INBOUND_PORT=str(args.port), API_HTTP_PORT=str(args.api_port),
               MAX_CONNECTIONS_PER_MINUTE="10000000", LOG_LEVEL="warn")
    command = [os.path.join(os.path.dirname(sys.executable), "twistd"),
               "--nodaemon", "--pidfile=", "rig"]
    if args.taskset:
        command = ["taskset", "-c", args.taskset, *command]
    log = open(args.log, "wb")  # lives as long as the process
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


async def wait_healthy(args):
    for _ in range(200):
        try:
            code, _ = await http_get(args.api_port, "/health")
            if code == 200:
                return
        except Exception:
            pass
        await task.deferLater(reactor, 0.05)
    raise SystemExit("gateway did not become healthy")


def verdict(args, before, after):
    problems = []
    if after["fds"] - before["fds"] > args.fd_slack:
        problems.append(f"fds grew by {after['fds'] - before['fds']}")
    if after["connections"] != before["connections"]:
        problems.append(f"connections {before['connections']} -> {after['connections']}")
    growth_mb = (after["rss_kb"] - before["rss_kb"]) / 1024
    if growth_mb > args.rss_slack_mb:
        problems.append(f"RSS grew by {growth_mb:.1f} MB")
    return problems


async def main(args):
    process = None
    if args.attach:
        pid = args.attach
    else:
        args.port = args.port or free_port()
        args.api_port = args.api_port or free_port()
        process = start_gateway(args)
        pid = process.pid
    try:
        await wait_healthy(args)
        publisher = Publisher(args.port, args.interval)
        await publisher.start()
        soak = Soak(args)
        started = time.monotonic()
        await soak.run_cycles(args.warmup)
        await task.deferLater(reactor, 1.0)
        before = await snapshot(args, pid)
        await soak.run_cycles(args.cycles)
        elapsed = time.monotonic() - started
        after = await settle(args, pid, before["connections"])
        publisher.stop()
        problems = verdict(args, before, after)
        report = {
            "cycles": args.cycles, "warmup": args.warmup, "ok": soak.ok, "failed": soak.failed,
            "events_published": publisher.sent, "seconds": round(elapsed, 1),
            "before": before, "after": after,
            "tolerance": {"fd_slack": args.fd_slack, "rss_slack_mb": args.rss_slack_mb},
            "problems": problems,
        }
        print(json.dumps(report, indent=2))
        if soak.failed > args.max_failed:
            problems.append(f"{soak.failed} cycles failed")
        if problems:
            raise SystemExit(1)
    finally:
        if process is not None:
            process.terminate()
            for _ in range(100):
                if process.poll() is not None:
                    break
                await task.deferLater(reactor, 0.05)
            else:
                process.kill()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=20000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--wait-every", type=int, default=10,
                        help="every Nth cycle waits for a published event")
    parser.add_argument("--interval", type=float, default=0.01, help="seconds between events")
    parser.add_argument("--cycle-timeout", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=10.0)
    parser.add_argument("--fd-slack", type=int, default=2)
    parser.add_argument("--rss-slack-mb", type=float, default=8.0)
    parser.add_argument("--max-failed", type=int, default=0)
    parser.add_argument("--metric", default="rig_connections",
                        help="gauge of live connections in /metrics")
    parser.add_argument("--port", type=int, default=0, help="inbound port (default: free)")
    parser.add_argument("--api-port", type=int, default=0, help="internal port (default: free)")
    parser.add_argument("--attach", type=int, default=0, help="pid of a running gateway")
    parser.add_argument("--taskset", default="", help="pin the gateway (e.g. 0)")
    parser.add_argument("--log", default="/tmp/rig-soak.log")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    task.react(lambda _reactor: defer.ensureDeferred(main(arguments)))
