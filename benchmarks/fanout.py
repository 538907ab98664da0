#!/usr/bin/env python3
"""Fan-out load generator for txrig (or any Reactive Interaction Gateway).

Runs in its own process, against a gateway running in another one.  It opens
``--ws`` WebSocket and ``--sse`` Server-Sent-Events subscribers (plus
``--extra`` WebSocket connections whose subscriptions must match nothing),
publishes CloudEvents with ``POST /_rig/v1/events`` either on a steady
schedule (``--rate``) or as fast as the gateway accepts them (``--max``), and
counts what every subscriber receives.

Speed is the point of this file: one core has to count well over 200,000
deliveries per second, so nothing here uses Twisted, autobahn or a real
HTTP/WebSocket/SSE parser on the receiving side.  Everything is raw
non-blocking sockets driven by one ``selectors`` loop; the handshakes are
written by hand and, once a stream is open, only frame boundaries are
parsed:

* WebSocket: the 2/4/10-byte header of an unmasked server frame gives the
  payload length.  Text frames holding ``"rig.`` are the control events
  (``rig.connection.create`` / ``rig.subscriptions_set``) until both have
  been seen; every later text frame is a delivery (the marker is only
  looked for until then: it costs a third of a frame's parsing).  Pings
  are answered with (masked) pongs.
* SSE: ``bytes.count`` of ``\\nevent: <type>\\n`` lines (one per event
  block).  A read of whole chunks each ending with a whole event is counted
  as it is; any other read is de-chunked first and counted up to its last
  ``\\n\\n``, the partial block being kept for the next read.

The publish time travels in the event (``data.t``, ``time.time_ns()`` at
send) and is parsed back only from a sample of deliveries (``--sample``).

Standard library only; Linux only for ``--gateway-pid`` (``/proc``).
Every loop has a deadline, so the script always exits by itself.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import urllib.parse

from loadgen import (  # the sibling module: this script's own directory is on sys.path
    LATENCY_SAMPLES_PER_S,
    MAX_PUBLISHERS,
    Group,
    Latency,
    NatsPublisher,
    Poller,
    Publisher,
    RedisPublisher,
    SSESubscriber,
    WSSubscriber,
    cpu_busy_pct,
    cpu_times,
    extra_subscriptions,
    nats_publish,
    percentile,
    pinned_cpu,
    proc_cpu_ticks,
    proc_rss_kb,
    raise_nofile,
    resp_command,
    self_cpu_s,
    sse_request,
    subscription_query,
    ws_request,
)


class Bench:
    def __init__(self, args):
        self.args = args
        url = urllib.parse.urlsplit(args.url)
        if url.scheme != "http":
            raise SystemExit("--url must be http://HOST:PORT (no TLS)")
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or 80
        self.addr = (socket.gethostbyname(self.host), self.port)
        self.host_header = f"{self.host}:{self.port}"
        self.prefix = url.path.rstrip("/")
        self.etype = args.event_type
        self.sel = Poller()
        self.lat = Latency()
        self.groups = {n: Group(n) for n in ("ws", "sse", "extra")}
        self.subs = []
        self.inflight_handshakes = 0
        self.accepted = 0        # POSTs answered 2xx
        self.rejected = {}       # other statuses
        self.post_errors = {}    # lost publisher connections
        self.sent = 0            # POSTs sent
        self.publishers = []
        self.seq = 0
        self._post_head = (
            f"POST {self.prefix}/_rig/v1/events HTTP/1.1\r\nHost: {self.host_header}\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self._body_fmt = (
            f'{{"specversion":"1.0","type":{json.dumps(self.etype)},"source":"bench","id":"%d",'
            f'"data":{{"seq":%d,"room":{json.dumps(args.room)},"t":%d}}}}'
        ).encode()

    # ---- subscribers ---------------------------------------------------
    def build_subscribers(self):
        a = self.args
        sample = self.sample
        et = self.etype.encode()
        base = self.prefix + "/_rig/v1/connection/"
        main_q = subscription_query([{"eventType": self.etype}])
        ws_path = base + "ws?subscriptions=" + main_q
        sse_path = base + "sse?subscriptions=" + main_q
        targets = [(self.addr, self.host_header)]
        if a.subscribe_url:
            targets = []
            for text in a.subscribe_url.split(","):
                url = urllib.parse.urlsplit(text.strip())
                host, port = url.hostname or "127.0.0.1", url.port or 80
                targets.append(((socket.gethostbyname(host), port), f"{host}:{port}"))
        idx = 0
        for _ in range(a.ws):
            addr, host_header = targets[idx % len(targets)]
            sub = WSSubscriber(
                self.sel, self.groups["ws"], self.lat,
                ws_request(host_header, ws_path), sample, idx % sample,
                self.sub_state)
            sub.target_addr = addr
            self.subs.append(sub)
            idx += 1
        for _ in range(a.sse):
            addr, host_header = targets[idx % len(targets)]
            sub = SSESubscriber(
                self.sel, self.groups["sse"], self.lat,
                sse_request(host_header, sse_path), sample, idx % sample,
                self.sub_state, et)
            sub.target_addr = addr
            self.subs.append(sub)
            idx += 1
        for i in range(a.extra):
            q = subscription_query(extra_subscriptions(i, self.etype))
            self.subs.append(WSSubscriber(
                self.sel, self.groups["extra"], self.lat,
                ws_request(self.host_header, base + "ws?subscriptions=" + q),
                1, 0, self.sub_state))

    def sub_state(self, sub, event):
        # "ready": got both rig.* events; "dead": failed or lost
        if event == "ready" or sub.ctl < 2:
            self.inflight_handshakes -= 1

    def connect_all(self):
        """Open every subscriber, at most --connect-concurrency handshakes at
        a time, and wait until each has its two rig.* events."""
        a = self.args
        pending = list(reversed(self.subs))
        deadline = time.monotonic() + a.connect_timeout
        sel = self.sel
        total = len(self.subs)
        last_report = time.monotonic()
        while time.monotonic() < deadline:
            while pending and self.inflight_handshakes < a.connect_concurrency:
                s = pending.pop()
                self.inflight_handshakes += 1
                s.start_connect(getattr(s, "target_addr", self.addr))
            if not pending and self.inflight_handshakes <= 0:
                return True
            sel.dispatch(0.05)
            now = time.monotonic()
            if a.verbose and now - last_report > 2:
                last_report = now
                self.log(f"connecting: {total - len(pending)}/{total} started, "
                         f"{self.ready_count()} ready, {self.failed_count()} failed")
        return False

    def ready_count(self):
        return sum(g.ready for g in self.groups.values())

    def failed_count(self):
        return sum(g.failed for g in self.groups.values())

    # ---- publishing ----------------------------------------------------
    def _new_publisher(self):
        if self.args.publish_redis:
            host, _, port = self.args.publish_redis.rpartition(":")
            return RedisPublisher(self.sel, self, (socket.gethostbyname(host), int(port)))
        if self.args.publish_nats:
            host, _, port = self.args.publish_nats.rpartition(":")
            return NatsPublisher(self.sel, self, (socket.gethostbyname(host), int(port)))
        return Publisher(self.sel, self, self.addr)

    def make_post(self):
        self.seq += 1
        seq = self.seq
        body = self._body_fmt % (seq, seq, time.time_ns())
        if self.args.publish_redis:
            return resp_command("XADD", self.args.redis_stream, "*", "event", body)
        if self.args.publish_nats:
            return nats_publish(self.args.nats_subject, body)
        return self._post_head + str(len(body)).encode() + b"\r\n\r\n" + body

    def publish_done(self, pub, status):
        if 200 <= status < 300:
            self.accepted += 1
        else:
            self.rejected[status] = self.rejected.get(status, 0) + 1

    def publisher_lost(self, pub, reason, was_busy):
        key = reason + (" (request in flight)" if was_busy else "")
        self.post_errors[key] = self.post_errors.get(key, 0) + 1
        pub.reconnects += 1

    def free_publisher(self):
        """An idle publisher for the next paced POST.  If every one is busy
        (the gateway answers slower than the tick), open one more, up to
        MAX_PUBLISHERS, so the schedule does not depend on answer times."""
        connecting = False
        for p in self.publishers:
            if p.ready():
                return p
            if p.state in (Publisher.IDLE, Publisher.DEAD) \
                    and p.reconnects < 100:
                p.ensure()
            if p.state == Publisher.CONNECTING:
                connecting = True
        if not connecting and len(self.publishers) < MAX_PUBLISHERS:
            p = self._new_publisher()
            self.publishers.append(p)
            p.ensure()
        return None

    def publishing_inflight(self):
        return sum(1 for p in self.publishers if p.busy)

    # ---- main ------------------------------------------------------------
    def run(self):  # noqa: PLR0915 - the phases read best in order
        a = self.args
        pid = a.gateway_pid
        nofile = raise_nofile()
        n_subs = a.ws + a.sse
        n_conns = n_subs + a.extra
        if n_conns + a.concurrency + 16 > nofile:
            self.log(f"warning: {n_conns} connections but RLIMIT_NOFILE is {nofile}")
        if a.sample:
            self.sample = a.sample
        elif a.max:
            self.sample = 64
        else:
            # about LATENCY_SAMPLES_PER_S samples a second: parsing every
            # delivery of 1000 subscribers at 50 ev/s would cost the
            # generator more than counting them, and delay what it measures
            self.sample = max(1, -(-int(a.rate * n_subs) // LATENCY_SAMPLES_PER_S))
        result = {
            "label": a.label, "url": a.url,
            "mode": "idle" if a.idle else ("max" if a.max else "rate"),
            "ws": a.ws, "sse": a.sse, "extra": a.extra,
            "rate": None if (a.max or a.idle) else a.rate,
            "concurrency": a.concurrency if a.max else None,
            "duration_s": a.duration, "warmup_s": a.warmup,
            "latency_sample_every": self.sample,
        }
        rss_before = proc_rss_kb(pid) if pid else None

        self.build_subscribers()
        t0 = time.monotonic()
        all_up = self.connect_all()
        connect_s = time.monotonic() - t0
        ready = {n: g.ready for n, g in self.groups.items()}
        n_ready_subs = ready["ws"] + ready["sse"]
        n_ready = n_ready_subs + ready["extra"]
        late_conns = n_conns - n_ready - self.failed_count()
        self.log(f"{n_ready}/{n_conns} connections ready in {connect_s:.1f} s"
                 + ("" if all_up else f" (timed out: {late_conns} still connecting)"))
        # let the gateway settle, then weigh it
        self.pump(time.monotonic() + a.settle)
        rss_after = proc_rss_kb(pid) if pid else None

        result.update({
            "connections": n_conns,
            "connections_ready": n_ready,
            "connect_failed": self.failed_count(),
            "connect_s": round(connect_s, 3),
            "gateway_rss_kb_before": rss_before,
            "gateway_rss_kb_after": rss_after,
            "rss_kb_per_connection": (
                round((rss_after - rss_before) / n_ready, 2)
                if rss_before is not None and rss_after is not None and n_ready
                else None),
        })

        if not a.idle:
            for _ in range(a.concurrency):
                p = self._new_publisher()
                self.publishers.append(p)
                p.ensure()
            self.pump(time.monotonic() + 0.2)

        # ---- warmup + measured window --------------------------------
        d0 = self.total_deliveries()
        t_start = time.monotonic()
        warm_end = t_start + a.warmup
        end = warm_end + a.duration
        win = None
        next_tick = t_start
        period = 1.0 / a.rate if a.rate else 0.0
        late = 0
        loops = 0
        sel = self.sel
        paced = not a.idle and not a.max
        while True:
            now = time.monotonic()
            if win is None and now >= warm_end:
                self.lat.from_ns = time.time_ns()
                win = {
                    "t": now, "deliv": self.total_deliveries(),
                    "extra": self.groups["extra"].deliveries,
                    "sent": self.sent, "accepted": self.accepted,
                    "cpu": proc_cpu_ticks(pid) if pid else None,
                    "self_cpu": self_cpu_s(), "loops": loops,
                    "cpus": cpu_times(),
                }
            if now >= end:
                break
            timeout = 0.05
            if a.max:
                for p in self.publishers:
                    if p.ready():
                        p.post(self.make_post())
                        self.sent += 1
                    elif p.state in (Publisher.IDLE, Publisher.DEAD) \
                            and p.reconnects < 100:
                        p.ensure()
                timeout = 0.01
            elif paced:
                if now >= next_tick:
                    p = self.free_publisher()
                    if p is not None:
                        p.post(self.make_post())
                        self.sent += 1
                        next_tick += period
                        if now - next_tick > 1.0:  # hopelessly behind: skip
                            skipped = int((now - next_tick) / period)
                            late += skipped
                            next_tick += skipped * period
                        timeout = 0 if now >= next_tick else next_tick - now
                    else:  # every publisher busy: wait for an answer
                        timeout = 0.001
                else:
                    timeout = next_tick - now
                timeout = min(timeout, end - now, 0.05)
            loops += 1
            sel.dispatch(timeout)
        t_end = time.monotonic()
        loops_end = loops
        cpu_end = proc_cpu_ticks(pid) if pid else None
        self_cpu_end = self_cpu_s()
        cpus_end = cpu_times()
        deliv_end = self.total_deliveries()
        window_s = t_end - win["t"]

        # ---- drain -----------------------------------------------------
        last = (self.total_deliveries(), self.publishing_inflight())
        last_progress = time.monotonic()
        hard = last_progress + a.drain_max
        while True:
            now = time.monotonic()
            expected = self.accepted * n_ready_subs
            got = self.total_deliveries()
            inflight = self.publishing_inflight()
            if got >= expected and inflight == 0:
                # complete: linger a moment for stray extra deliveries
                if now - last_progress >= min(0.2, a.drain):
                    break
            if now - last_progress >= a.drain or now >= hard:
                break
            sel.dispatch(0.05)
            cur = (self.total_deliveries(), self.publishing_inflight())
            if cur != last:
                last = cur
                last_progress = time.monotonic()
        drain_s = time.monotonic() - t_end

        # ---- results ---------------------------------------------------
        g = self.groups
        published = self.accepted
        expected = published * n_ready_subs
        received = self.total_deliveries()
        lat = sorted(self.lat.samples)

        def ms(v):
            return None if v is None else round(v / 1e6, 3)

        tck = os.sysconf("SC_CLK_TCK")
        busy = cpu_busy_pct(win["cpus"], cpus_end)
        gen_pct = round((self_cpu_end - win["self_cpu"]) / window_s * 100, 1) \
            if window_s > 0 else None

        def others(p, own):
            cpu = pinned_cpu(p) if p else None
            if cpu is None or own is None or cpu not in busy:
                return None
            return round(max(0.0, busy[cpu] - own), 1)

        cpu_pct = None
        if win["cpu"] is not None and cpu_end is not None and window_s > 0:
            cpu_pct = round((cpu_end - win["cpu"]) / tck / window_s * 100, 1)
        reasons = {}
        for grp in g.values():
            for k, v in grp.reasons.items():
                key = f"{grp.name}: {k}"
                reasons[key] = reasons.get(key, 0) + v
        result.update({
            "subscribers": n_ready_subs,
            "events_sent": self.sent,
            "events_published": published,
            "events_rejected": self.rejected,
            "publish_errors": self.post_errors,
            "publish_rate": round(
                (self.accepted - win["accepted"]) / window_s, 1)
            if window_s > 0 else None,
            "late_ticks_skipped": late,
            "publisher_connections": len(self.publishers),
            "expected_deliveries": expected,
            "deliveries_received": received,
            "received_ws": g["ws"].deliveries,
            "received_sse": g["sse"].deliveries,
            "lost": expected - received,
            "extra_unexpected": g["extra"].deliveries,
            "window_s": round(window_s, 3),
            "drain_s": round(drain_s, 3),
            "deliveries_per_s": round((deliv_end - win["deliv"]) / window_s, 1)
            if window_s > 0 else None,
            "latency_samples": len(lat),
            "latency_ms": {
                "p50": ms(percentile(lat, 0.50)),
                "p90": ms(percentile(lat, 0.90)),
                "p99": ms(percentile(lat, 0.99)),
                "max": ms(lat[-1] if lat else None),
            },
            "gateway_cpu_pct": cpu_pct,
            # the generator's own CPU over the window: near 100 means the
            # figures above are the generator's limit, not the gateway's
            "generator_cpu_pct": gen_pct,
            "loop_iterations": loops_end - win["loops"],
            # whole-machine view: a CPU busier than the process pinned to it
            # means something else was running there too
            "cpu_busy_pct": busy,
            # busy time of the pinned CPU not spent by the process itself:
            # other processes and interrupts (high values: figures skewed)
            "gateway_cpu_others_pct": others(pid, cpu_pct),
            "generator_cpu_others_pct": others(os.getpid(), gen_pct),
            "disconnects": sum(x.disconnects for x in g.values()),
            "failure_reasons": reasons,
        })
        if a.idle:
            result["deliveries_received_before"] = d0
        self.close_all()
        return result

    def pump(self, until):
        sel = self.sel
        while True:
            now = time.monotonic()
            if now >= until:
                return
            sel.dispatch(min(0.05, until - now))

    def total_deliveries(self):
        g = self.groups
        return g["ws"].deliveries + g["sse"].deliveries

    def close_all(self):
        for s in self.subs:
            s.close(abort=self.args.abort_close)
        for p in self.publishers:
            p.close()
        self.sel.close()

    def log(self, msg):
        if not self.args.quiet:
            print("fanout: " + msg, file=sys.stderr, flush=True)


def summary(r):
    lines = []
    lbl = (r.get("label") + ": ") if r.get("label") else ""
    mode = r["mode"]
    if mode == "rate":
        mode = f"paced {r['rate']:g} ev/s"
    elif mode == "max":
        mode = f"saturation ({r['concurrency']} POSTs in flight)"
    lines.append(f"{lbl}{mode}, {r['ws']} WS + {r['sse']} SSE subscribers, "
                 f"{r['extra']} extra WS")
    lines.append(f"  connections      {r['connections_ready']} ready of "
                 f"{r['connections']} ({r['connect_failed']} failed, "
                 f"connect {r['connect_s']:.1f} s)")
    if r["mode"] != "idle":
        lines.append(f"  published        {r['events_published']} events "
                     f"({r['publish_rate']} ev/s in window)")
        lines.append(f"  deliveries       {r['deliveries_received']} received of "
                     f"{r['expected_deliveries']} expected, lost {r['lost']}")
        lines.append(f"  throughput       {r['deliveries_per_s']:.0f} deliveries/s "
                     f"over {r['window_s']:.1f} s")
        lt = r["latency_ms"]
        if r["latency_samples"]:
            lines.append(f"  latency ms       p50 {lt['p50']:.2f}  p90 {lt['p90']:.2f}  "
                         f"p99 {lt['p99']:.2f}  max {lt['max']:.2f}  "
                         f"({r['latency_samples']} samples)")
        else:
            lines.append("  latency ms       no samples")
        if r["extra"]:
            bug = "" if r["extra_unexpected"] == 0 else "  <-- MATCHING BUG"
            lines.append(f"  extra conns      {r['extra_unexpected']} unexpected "
                         f"deliveries{bug}")
    if r["gateway_cpu_pct"] is not None or r["mode"] != "idle":
        lines.append(f"  CPU              gateway {r['gateway_cpu_pct']} %, "
                     f"generator {r['generator_cpu_pct']} % of one core")
        go, no = r.get("gateway_cpu_others_pct"), r.get("generator_cpu_others_pct")
        if go is not None or no is not None:
            lines.append(f"  other load       {go} % on the gateway's CPU, "
                         f"{no} % on the generator's")
        else:
            busy = ", ".join(f"{k} {v:.0f} %" for k, v in r.get("cpu_busy_pct", {}).items())
            if busy:
                lines.append(f"  machine          {busy} busy")
    if r["rss_kb_per_connection"] is not None:
        lines.append(f"  gateway RSS      {r['gateway_rss_kb_before']} -> "
                     f"{r['gateway_rss_kb_after']} KB, "
                     f"{r['rss_kb_per_connection']:.1f} KB/connection")
    if r["disconnects"] or r["failure_reasons"]:
        lines.append(f"  disconnects      {r['disconnects']}  "
                     f"{json.dumps(r['failure_reasons'])}")
    if r["publish_errors"] or r["events_rejected"]:
        rejected = {str(k): v for k, v in r["events_rejected"].items()}
        lines.append(f"  publish errors   {json.dumps(r['publish_errors'])} "
                     f"rejected {json.dumps(rejected)}")
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Fan-out load generator for the Reactive Interaction Gateway")
    p.add_argument("--url", default="http://127.0.0.1:4000",
                   help="gateway inbound base URL (default %(default)s)")
    p.add_argument("--subscribe-url", default="",
                   help="comma-separated gateway URLs the subscribers are spread over "
                        "(round robin; default: --url) -- e.g. the nodes of a cluster")
    p.add_argument("--publish-redis", default="", metavar="HOST:PORT",
                   help="publish with XADD to this Redis (the gateway consumes the stream) "
                        "instead of POSTing to the gateway")
    p.add_argument("--redis-stream", default="rig", help="stream for --publish-redis")
    p.add_argument("--publish-nats", default="", metavar="HOST:PORT",
                   help="publish with NATS PUB to this server (the gateway consumes the subject)"
                        " instead of POSTing to the gateway")
    p.add_argument("--nats-subject", default="rig", help="subject for --publish-nats")
    p.add_argument("--ws", type=int, default=0, help="WebSocket subscribers")
    p.add_argument("--sse", type=int, default=0, help="SSE subscribers")
    p.add_argument("--extra", type=int, default=0,
                   help="extra WS connections with 10 non-matching "
                        "subscriptions each (must receive nothing)")
    p.add_argument("--event-type", default="bench")
    p.add_argument("--room", default="main",
                   help="data.room of published events (default %(default)s)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--rate", type=float, default=0.0,
                      help="publish R events/s on a steady schedule")
    mode.add_argument("--max", action="store_true",
                      help="saturation: keep --concurrency POSTs in flight")
    mode.add_argument("--idle", action="store_true",
                      help="connect, weigh the gateway, publish nothing")
    p.add_argument("--concurrency", type=int, default=8,
                   help="keep-alive publisher connections: POSTs in flight "
                        "under --max; the initial pool under --rate, which "
                        "grows when every one is waiting (default %(default)s)")
    p.add_argument("--duration", type=float, default=10.0,
                   help="measured window, s (default %(default)s)")
    p.add_argument("--warmup", type=float, default=2.0,
                   help="publishing before the window, s (default %(default)s)")
    p.add_argument("--drain", type=float, default=2.0,
                   help="stop waiting for deliveries after this long without "
                        "progress, s (default %(default)s)")
    p.add_argument("--drain-max", type=float, default=30.0,
                   help="hard limit of the drain, s (default %(default)s)")
    p.add_argument("--settle", type=float, default=1.0,
                   help="pause after connecting, before weighing, s")
    p.add_argument("--sample", type=int, default=0,
                   help="parse latency from every Nth delivery per connection "
                        "(default: about 5000 samples/s under --rate, so all "
                        "of them up to 5000 deliveries/s; 1/64 under --max)")
    p.add_argument("--connect-concurrency", type=int, default=50,
                   help="handshakes in flight while connecting")
    p.add_argument("--connect-timeout", type=float, default=120.0)
    p.add_argument("--gateway-pid", type=int, default=0,
                   help="sample CPU and RSS of this process from /proc")
    p.add_argument("--abort-close", action="store_true",
                   help="close subscribers with RST (no TIME_WAIT)")
    p.add_argument("--label", default="", help="scenario name in the output")
    p.add_argument("--json-only", action="store_true",
                   help="print only the JSON line")
    p.add_argument("--quiet", "-q", action="store_true")
    p.add_argument("--verbose", "-v", action="store_true")
    a = p.parse_args(argv)
    if not (a.max or a.idle or a.rate > 0):
        p.error("choose one of --rate R, --max or --idle")
    if a.ws < 0 or a.sse < 0 or a.extra < 0 or a.ws + a.sse + a.extra == 0:
        p.error("open some connections: --ws N and/or --sse N")
    if a.idle:
        a.warmup = 0.0
    return a


def main(argv=None):
    args = parse_args(argv)
    result = Bench(args).run()
    print(json.dumps(result, sort_keys=False), flush=True)
    if not args.json_only:
        print(summary(result), flush=True)
    bad = result["connections_ready"] < result["connections"] \
        or (result["mode"] != "idle" and result["lost"] != 0) \
        or result["extra_unexpected"] or result["disconnects"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
