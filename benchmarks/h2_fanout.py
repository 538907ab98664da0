#!/usr/bin/env python3
"""SSE fan-out over HTTPS: HTTP/2 streams against HTTP/1.1 connections (issue 17).

Opens ``--sse`` SSE subscribers on the gateway's HTTPS port, either one TLS
connection each (``--mode h1``, ALPN ``http/1.1``) or ``--per-connection``
streams on each HTTP/2 connection (``--mode h2``), publishes ``bench``
CloudEvents over plain HTTP to the inbound port (``--max``: as fast as the
gateway takes them, ``--concurrency`` POSTs in flight; or ``--rate`` a
second), and counts the deliveries for ``--duration`` seconds after
``--warmup``. Prints one JSON line: deliveries a second, latency percentiles
(publish to receipt, from the ``data.t`` of the last event of a read), the
gateway's CPU (``--gateway-pid``) and this process's.

The HTTP/2 handshake (preface, SETTINGS, HPACK-coded requests, the response
heads) is h2's; after it the frames are cut by hand (9-byte headers, DATA
payloads scanned for the event marker), so that counting is not the limit.
A window of 2**31-1 bytes, given at the start, means no WINDOW_UPDATE is
needed during a run. Standard library plus ``h2``.
"""
import argparse
import json
import os
import re
import selectors
import socket
import ssl
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.settings

MARKER = b"event: bench\n"
T_FIELD = re.compile(rb'"t": ?(\d+)')
HUGE_WINDOW = 2 ** 31 - 1
DATA, RST_STREAM, GOAWAY = 0x0, 0x3, 0x7


def tls_socket(host, port, protocols):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the benchmark's self-signed certificate
    context.set_alpn_protocols(protocols)
    raw = socket.create_connection((host, port))
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock = context.wrap_socket(raw, server_hostname=host)
    assert sock.selected_alpn_protocol() == protocols[0], sock.selected_alpn_protocol()
    return sock


def read_all(sock, feed):
    """Feed what a non-blocking TLS socket has (TLS may hold more than one read)."""
    while True:
        try:
            data = sock.recv(262144)
        except ssl.SSLWantReadError:
            return
        if not data:
            raise ConnectionError("closed")
        feed(data)


class Counter:
    """Deliveries and latency samples, shared by every subscriber."""

    def __init__(self):
        self.deliveries = 0
        self.latencies = []
        self.counting = False

    def scan(self, tail, data):
        """Count markers in *data* (after a stream's *tail*); returns the new tail."""
        joined = tail + data
        found = joined.count(MARKER)
        if found and self.counting:
            self.deliveries += found
            last = joined.rfind(MARKER)
            match = T_FIELD.search(joined, last)
            if match:
                self.latencies.append(time.time_ns() - int(match.group(1)))
        return joined[-(len(MARKER) - 1):]


class H1Subscriber:
    """One SSE stream on its own TLS connection (chunked; markers never straddle
    a chunk header, so the raw bytes are scanned)."""

    def __init__(self, host, port, path, counter):
        self.sock = tls_socket(host, port, ["http/1.1"])
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        received = b""
        while b"rig.subscriptions_set" not in received:
            received += self.sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200"), received[:100]
        self.counter, self.tail = counter, b""
        self.sock.setblocking(False)

    def readable(self):
        read_all(self.sock, self._feed)

    def _feed(self, data):
        self.tail = self.counter.scan(self.tail, data)


class H2Subscribers:
    """*count* SSE streams on one HTTP/2 connection."""

    def __init__(self, host, port, path, count, counter):
        self.sock = tls_socket(host, port, ["h2"])
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: HUGE_WINDOW})
        conn.increment_flow_control_window(HUGE_WINDOW - 65535)
        streams = []
        for _ in range(count):
            stream_id = conn.get_next_available_stream_id()
            conn.send_headers(stream_id, [(":method", "GET"), (":path", path),
                                          (":scheme", "https"),
                                          (":authority", f"{host}:{port}")], end_stream=True)
            streams.append(stream_id)
        self.sock.sendall(conn.data_to_send())
        welcomed = set()
        while len(welcomed) < count:
            for event in conn.receive_data(self.sock.recv(65536)):
                if isinstance(event, h2.events.ResponseReceived):
                    assert dict(event.headers)[b":status"] == b"200", event.headers
                elif isinstance(event, h2.events.DataReceived):
                    if b"rig.subscriptions_set" in event.data:
                        welcomed.add(event.stream_id)
                elif isinstance(event, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    raise ConnectionError(repr(event))
            self.sock.sendall(conn.data_to_send())
        # a partial frame h2 had begun to read (its buffer keeps it as _data)
        self.buffer = bytes(getattr(conn.incoming_buffer, "_data", b""))
        self.tails = dict.fromkeys(streams, b"")
        self.counter = counter
        self.sock.setblocking(False)

    def readable(self):
        read_all(self.sock, self._frames)

    def _frames(self, data):
        buffer = self.buffer + data
        at, end = 0, len(buffer)
        tails, scan = self.tails, self.counter.scan
        while end - at >= 9:
            high, low, kind, _flags, stream_id = struct.unpack_from(">BHBBL", buffer, at)
            length = (high << 16) | low
            if end - at - 9 < length:
                break
            if kind == DATA:
                stream_id &= 0x7FFFFFFF
                tails[stream_id] = scan(tails[stream_id], buffer[at + 9:at + 9 + length])
            elif kind in (RST_STREAM, GOAWAY):
                raise ConnectionError(f"frame type {kind} from the server")
            at += 9 + length
        self.buffer = buffer[at:]


class Publisher:
    """Keep-alive POSTs of bench events to the plain inbound port, one in flight."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.host, self.port = host, port
        self.busy, self.buffer, self.sent = False, b"", 0

    def post(self, sequence):
        body = json.dumps({"specversion": "1.0", "type": "bench", "source": "h2_fanout",
                           "id": str(sequence),
                           "data": {"t": time.time_ns(), "pad": "x" * 100}}).encode()
        self.sock.sendall(b"POST /_rig/v1/events HTTP/1.1\r\nHost: %s:%d\r\n"
                          b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                          % (self.host.encode(), self.port, len(body), body))
        self.busy = True
        self.sent += 1

    def readable(self):
        try:
            self.buffer += self.sock.recv(65536)
        except BlockingIOError:
            return
        head, sep, rest = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        assert head.startswith(b"HTTP/1.1 202"), head
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        if length is None:  # chunked
            end = rest.find(b"0\r\n\r\n")
            if end < 0:
                return
            self.buffer = rest[end + 5:]
        elif len(rest) >= int(length.group(1)):
            self.buffer = rest[int(length.group(1)):]
        else:
            return
        self.busy = False


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])


def percentile(values, q):
    return values[min(len(values) - 1, int(q * len(values)))] if values else None


def main():  # noqa: PLR0915 - one flat run, start to end
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--https-port", type=int, default=4001)
    parser.add_argument("--port", type=int, default=4000, help="plain inbound (publishing)")
    parser.add_argument("--mode", choices=("h1", "h2"), required=True)
    parser.add_argument("--sse", type=int, default=200)
    parser.add_argument("--per-connection", type=int, default=100, help="h2 streams each")
    parser.add_argument("--max", action="store_true", help="publish as fast as accepted")
    parser.add_argument("--rate", type=float, default=50.0, help="events a second")
    parser.add_argument("--concurrency", type=int, default=4, help="POSTs in flight (--max)")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--gateway-pid", type=int)
    args = parser.parse_args()

    counter = Counter()
    path = "/_rig/v1/connection/sse?subscriptions=%5B%7B%22eventType%22%3A%22bench%22%7D%5D"
    started = time.monotonic()
    if args.mode == "h1":
        readers = [H1Subscriber(args.host, args.https_port, path, counter)
                   for _ in range(args.sse)]
    else:
        readers, left = [], args.sse
        while left:
            count = min(left, args.per_connection)
            readers.append(H2Subscribers(args.host, args.https_port, path, count, counter))
            left -= count
    setup_s = time.monotonic() - started
    publishers = [Publisher(args.host, args.port)
                  for _ in range(args.concurrency if args.max else 1)]
    selector = selectors.DefaultSelector()
    for each in readers + publishers:
        selector.register(each.sock, selectors.EVENT_READ, each)

    sequence = 0
    now = time.monotonic()
    count_from, deadline = now + args.warmup, now + args.warmup + args.duration
    next_post = now
    gateway_before = self_before = None
    while True:
        now = time.monotonic()
        if gateway_before is None and now >= count_from:
            counter.counting = True
            posted_before = sum(publisher.sent for publisher in publishers)
            self_before = os.times()
            gateway_before = cpu_ticks(args.gateway_pid) if args.gateway_pid else None
            gateway_before = gateway_before if args.gateway_pid else 0
        if now >= deadline:
            break
        for publisher in publishers:
            if not publisher.busy and (args.max or now >= next_post):
                sequence += 1
                publisher.post(sequence)
                next_post += 1.0 / args.rate
        free = any(not publisher.busy for publisher in publishers)
        wait = 0.05 if args.max or not free else max(0.0, min(0.05, next_post - now))
        for key, _mask in selector.select(wait):
            key.data.readable()
    self_after = os.times()
    elapsed = args.duration
    ticks = os.sysconf("SC_CLK_TCK")
    latencies = sorted(counter.latencies)
    result = {
        "mode": args.mode, "sse": args.sse,
        "connections": len(readers),
        "published_per_s": round((sum(p.sent for p in publishers) - posted_before) / elapsed, 1),
        "deliveries_per_s": round(counter.deliveries / elapsed),
        "latency_ms_p50": round(percentile(latencies, 0.5) / 1e6, 2) if latencies else None,
        "latency_ms_p99": round(percentile(latencies, 0.99) / 1e6, 2) if latencies else None,
        "generator_cpu_pct": round(100 * ((self_after.user + self_after.system)
                                          - (self_before.user + self_before.system)) / elapsed),
        "setup_s": round(setup_s, 2),
    }
    if args.gateway_pid:
        result["gateway_cpu_pct"] = round(
            100 * (cpu_ticks(args.gateway_pid) - gateway_before) / ticks / elapsed)
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
