#!/usr/bin/env python3
"""Deterministic discrete-event simulation of a txrig cluster's membership at scale.

Why: the SWIM/Lifeguard core (``rig.cluster.membership``) is sans-IO, so hundreds
of real ``Membership`` objects can run on one simulated clock in one process.
For fleets of 100 and 500 members, with the production ``SwimConfig()``
defaults, this answers without a fleet: how long until a dead member is dead
everywhere, how often healthy members are falsely suspected under message loss,
what membership costs on the wire, and how long a new interest takes to reach
every member.

The network is a heap of message deliveries.  Every node is ticked every
``TICK`` (0.1 s, as ``ClusterNode`` does) at its own random phase.  A link has a
fixed one-way ``latency``.  Loss is modelled two ways:

* ``drop``: each message is independently lost with probability ``loss``
  (UDP-like; pessimistic, since txrig's links are TCP).
* ``tcp``: each transmission is lost with probability ``loss``; a lost one
  arrives an RTO (200 ms, doubling per repeated loss) later, and later messages
  on the same src->dst link wait behind it (head-of-line blocking).

Not modelled: CPU time (a node handles any number of messages instantly), TCP
connection set-up and breakage (``link_down`` is never called: a killed member
just goes silent, like a hung host or a partition), and the anti-entropy that
repairs interest a node missed.  A last section measures the real per-event
cost of the full-mesh event fan-out on loopback TCP sockets.

``python benchmarks/cluster_sim.py --help`` lists the options;
``tests/test_cluster_sim.py`` runs the same functions at a tiny scale.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import pickle
import random
import select
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from rig.cluster.links import encode_frame
from rig.cluster.membership import ALIVE, DEAD, SUSPECT, Member, Membership, SwimConfig, make_boot

TICK = 0.1  # ClusterNode's tick_interval
RTO = 0.2  # Linux's minimum retransmission timeout
ACK_TIMEOUT = 1.0  # an interest confirmation stops waiting for acks after this
INTEREST = "rig.interest"
INTEREST_ACK = "rig.interest-ack"
MODELS = ("drop", "tcp")


def node_names(n: int) -> list[str]:
    """``host:port`` names (name == address) as long as real ones, so bytes are real."""
    return [f"10.0.{i // 250}.{i % 250 + 1}:4010" for i in range(n)]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q / 100 * len(ordered))) - 1]


class _Watch:
    """An ``on_change`` callback that knows its observer (and survives pickling)."""

    __slots__ = ("observer", "sim")

    def __init__(self, sim: ClusterSim, observer: str) -> None:
        self.sim = sim
        self.observer = observer

    def __call__(self, member: Member) -> None:
        self.sim.changed(self.observer, member)


class _Interest:
    """One interest change in flight: who must get the delta, who has it, who acked."""

    __slots__ = ("acks", "have", "origin", "peers", "start")

    def __init__(self, origin: str, start: float, peers: list[str]) -> None:
        self.origin = origin
        self.start = start
        self.peers = set(peers)
        self.have: dict[str, float] = {}
        self.acks: dict[str, float] = {}


class ClusterSim:
    """N ``Membership`` nodes on one simulated clock and an in-memory network.

    Built for 500 nodes: deliveries are a heap, ticks walk a fixed phase
    order, and each observer's view is mirrored from ``on_change`` so that
    convergence and detection are counted rather than scanned for.
    """

    def __init__(
        self,
        n: int,
        *,
        seed: int = 0,
        latency: float = 0.001,
        config: SwimConfig | None = None,
    ) -> None:
        self.rng = random.Random(seed)
        self.config = config or SwimConfig()
        self.latency = latency
        self.loss = 0.0
        self.model = "drop"
        self.now = 0.0
        self.names = node_names(n)
        self.nodes: dict[str, Membership] = {}
        self.heap: list[tuple[float, int, str, str, dict[str, Any]]] = []
        self._seq = 0
        self.link_last: dict[tuple[str, str], float] = {}  # tcp: last delivery per link
        self.killed: dict[str, float] = {}  # name -> time of death
        self.view: dict[str, dict[str, str]] = {}  # observer -> member -> state
        self.alive_seen: dict[str, int] = {}  # observer -> members it holds ALIVE
        self.dead_seen: dict[str, dict[str, float]] = {}  # victim -> observer -> when
        self.first_suspect: dict[str, float] = {}  # victim -> first suspicion after death
        self.interests: dict[int, _Interest] = {}
        self.reset_counters()
        for i, name in enumerate(self.names):
            boot = make_boot(1_800_000_000 + i * 1e-3, random.Random(self.rng.random()))
            node = Membership(
                name, name, boot, config=self.config, rng=random.Random(self.rng.random())
            )
            node.on_change.append(_Watch(self, name))
            self.nodes[name] = node
            self.view[name] = {}
            self.alive_seen[name] = 0
        phased = sorted((self.rng.random() * TICK, name) for name in self.names)
        self._phases = [p for p, _ in phased]
        self._tick_order = [name for _, name in phased]
        self._tick_index = 0
        self._tick_base = 0.0

    def clone(self) -> ClusterSim:
        """An independent copy (RNG states included, so runs stay deterministic)."""
        return pickle.loads(pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL))

    # -- accounting ----------------------------------------------------------------

    def reset_counters(self, *, count_bytes: bool = False) -> None:
        """Start a measurement window: the counters cover only what happens after this."""
        self.window_start = self.now
        self.count_bytes = count_bytes
        self.sent = 0  # messages emitted by Membership objects
        self.sent_bytes = 0  # their len(json.dumps(message)), when count_bytes
        self.by_type: dict[str, int] = {}
        self.core_seconds = 0.0  # wall time spent inside Membership.tick/receive
        self.lost = 0  # transmissions lost (dropped, or retransmitted in the tcp model)
        self.false_suspicions = 0  # (observer, subject) -> SUSPECT, subject not killed
        self.false_deads = 0
        self.episodes: set[tuple[str, str, int]] = set()  # (subject, boot, incarnation)
        self.incarnations = self.incarnation_sum()

    def incarnation_sum(self) -> int:
        """Only a refutation bumps an incarnation (and it calls no ``on_change``)."""
        return sum(node.incarnation for node in self.nodes.values())

    def changed(self, observer: str, member: Member) -> None:
        """Mirror an observer's view; count false suspicions and detections."""
        name, state = member.name, member.state
        if name == observer:
            return
        view = self.view[observer]
        before = view.get(name)
        view[name] = state
        self.alive_seen[observer] += (state == ALIVE) - (before == ALIVE)
        if name in self.killed:
            if state == SUSPECT:
                self.first_suspect.setdefault(name, self.now)
            elif state == DEAD:
                self.dead_seen.setdefault(name, {}).setdefault(observer, self.now)
        elif state == SUSPECT:
            self.false_suspicions += 1
            self.episodes.add((name, member.boot, member.incarnation))
        elif state == DEAD:
            self.false_deads += 1

    # -- the network -------------------------------------------------------------------

    def set_loss(self, loss: float, model: str = "drop") -> None:
        if model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, not {model!r}")
        self.loss = loss
        self.model = model

    def send(self, src: str, out: list[tuple[str, dict[str, Any]]], *, swim: bool = True) -> None:
        """Put a node's outgoing messages on the wire, through the loss model."""
        now, loss, rng = self.now, self.loss, self.rng
        for dst, msg in out:
            if swim:
                self.sent += 1
                kind = msg.get("type", "?")
                self.by_type[kind] = self.by_type.get(kind, 0) + 1
                if self.count_bytes:
                    self.sent_bytes += len(json.dumps(msg))
            at = now + self.latency
            if loss:
                if self.model == "drop":
                    if rng.random() < loss:
                        self.lost += 1
                        continue
                else:
                    rto = RTO
                    while rng.random() < loss:
                        self.lost += 1
                        at += rto
                        rto *= 2
            if self.model == "tcp":  # one ordered stream per src->dst link
                key = (src, dst)
                last = self.link_last.get(key, 0.0)
                at = max(at, last)
                self.link_last[key] = at
            self._seq += 1
            heapq.heappush(self.heap, (at, self._seq, src, dst, msg))

    def _deliver(self, src: str, dst: str, msg: dict[str, Any]) -> None:
        if dst in self.killed or dst not in self.nodes:
            return
        kind = msg.get("type")
        if kind == INTEREST:
            self.interests[msg["id"]].have.setdefault(dst, self.now)
            self.send(dst, [(src, {"type": INTEREST_ACK, "id": msg["id"]})], swim=False)
        elif kind == INTEREST_ACK:
            change = self.interests[msg["id"]]
            if self.now - change.start <= ACK_TIMEOUT:
                change.acks.setdefault(src, self.now)
        else:
            t0 = time.perf_counter()
            out = self.nodes[dst].receive(self.now, src, msg)
            self.core_seconds += time.perf_counter() - t0
            self.send(dst, out)

    def run_until(self, end: float) -> None:
        """Deliver messages and tick nodes, in time order, up to ``end``."""
        heap, phases, order, nodes = self.heap, self._phases, self._tick_order, self.nodes
        count = len(order)
        perf = time.perf_counter
        while True:
            tick_at = self._tick_base + phases[self._tick_index]
            if heap and heap[0][0] <= tick_at:
                if heap[0][0] > end:
                    break
                at, _, src, dst, msg = heapq.heappop(heap)
                self.now = at
                self._deliver(src, dst, msg)
                continue
            if tick_at > end:
                break
            self.now = tick_at
            name = order[self._tick_index]
            self._tick_index += 1
            if self._tick_index == count:
                self._tick_index = 0
                self._tick_base = round(self._tick_base + TICK, 9)
            if name not in self.killed:
                t0 = perf()
                out = nodes[name].tick(tick_at)
                self.core_seconds += perf() - t0
                self.send(name, out)
        self.now = max(self.now, end)

    def run(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    # -- cluster operations ----------------------------------------------------------------

    def live(self) -> list[str]:
        return [name for name in self.names if name not in self.killed]

    def converged(self) -> bool:
        """Every live member holds every other live member as ALIVE."""
        want = len(self.names) - len(self.killed) - 1
        return all(self.alive_seen[name] >= want for name in self.live())

    def kill(self, name: str) -> None:
        """The member stops sending and receiving (a hung host; no TCP reset)."""
        self.killed[name] = self.now

    def dead_everywhere(self, victim: str) -> float | None:
        """When the last live member marked ``victim`` DEAD; None while some have not."""
        seen = self.dead_seen.get(victim, {})
        times = []
        for name in self.live():
            if name not in seen:
                return None
            times.append(seen[name])
        return max(times) if times else None

    def start_interest(self, origin: str) -> int:
        """``origin`` got its first subscriber for a type: one delta straight to every
        member it holds as alive or suspect; each answers with an ack."""
        peers = [m.address for m in self.nodes[origin].alive()]
        ident = len(self.interests)
        self.interests[ident] = _Interest(origin, self.now, peers)
        delta = {origin: [ident + 1, [f"type.{ident}"]]}
        msg = {"type": INTEREST, "id": ident, "partitions": delta}
        self.send(origin, [(p, msg) for p in peers], swim=False)
        return ident


# -- scenarios ------------------------------------------------------------------------------


def form_cluster(
    n: int,
    *,
    seed: int = 0,
    latency: float = 0.001,
    join_gap: float = 0.01,
    settle: float = 20.0,
    limit: float = 300.0,
    config: SwimConfig | None = None,
) -> tuple[ClusterSim, float]:
    """Start n nodes, each joining the first one ``join_gap`` s after the previous one
    (a rolling start); run until converged, then ``settle`` s more so that the join
    gossip has drained.  Returns the cluster and when it converged."""
    sim = ClusterSim(n, seed=seed, latency=latency, config=config)
    seed_name = sim.names[0]
    for i, name in enumerate(sim.names[1:], start=1):
        sim.run_until(i * join_gap)
        sim.send(name, sim.nodes[name].join(sim.now, [seed_name]))
    while not sim.converged():
        if sim.now > limit:
            raise RuntimeError(f"{n} nodes did not converge within {limit} s")
        sim.run(0.5)
    formed_at = sim.now
    sim.run(settle)
    return sim, formed_at


def measure_detection(
    formed: ClusterSim, *, kills: int = 1, seed: int = 0, gap: float = 5.0, limit: float = 180.0
) -> dict[str, Any]:
    """Kill members one after another in a copy of a formed cluster (each ``gap`` s
    after the previous one was dead everywhere) and time each kill until every
    live member has marked the victim DEAD."""
    sim = formed.clone()
    sim.reset_counters()
    rng = random.Random(seed)
    rows = []
    for _ in range(kills):
        victim = rng.choice(sim.live()[1:])  # any but the seed, which stays up
        t0 = sim.now
        sim.kill(victim)
        while (done := sim.dead_everywhere(victim)) is None:
            if sim.now - t0 > limit:
                raise RuntimeError(f"{victim} was not dead everywhere within {limit} s")
            sim.run(0.1)
        rows.append(
            {
                "first_suspect": sim.first_suspect[victim] - t0,
                "first_dead": min(sim.dead_seen[victim].values()) - t0,
                "all_dead": done - t0,
            }
        )
        sim.run(gap)
    return {"kills": rows, "false_deads": sim.false_deads}


def run_window(
    formed: ClusterSim,
    *,
    duration: float,
    loss: float = 0.0,
    model: str = "drop",
    interest_changes: int = 0,
    count_bytes: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Run a copy of a formed cluster for ``duration`` s with the given loss, counting
    membership traffic and false suspicions; optionally start interest changes at
    random nodes and moments and time them."""
    sim = formed.clone()
    sim.set_loss(loss, model)
    sim.reset_counters(count_bytes=count_bytes)
    rng = random.Random(seed)
    start = sim.now
    span = max(duration - ACK_TIMEOUT - 0.5, 0.0)  # every change can finish in the window
    for at in sorted(start + rng.random() * span for _ in range(interest_changes)):
        sim.run_until(at)
        sim.start_interest(rng.choice(sim.live()))
    sim.run_until(start + duration)
    members = len(sim.live())
    hours = duration / 3600
    result: dict[str, Any] = {
        "members": members,
        "duration": duration,
        "loss": loss,
        "model": model,
        "msgs_per_member_s": sim.sent / members / duration,
        "bytes_per_member_s": sim.sent_bytes / members / duration if count_bytes else None,
        "by_type_per_member_s": {k: v / members / duration for k, v in sorted(sim.by_type.items())},
        "core_ms_per_member_s": sim.core_seconds * 1000 / members / duration,
        "lost": sim.lost,
        "false_suspicions": sim.false_suspicions,
        "false_suspicions_per_member_h": sim.false_suspicions / members / hours,
        "episodes": len(sim.episodes),
        "episodes_per_member_h": len(sim.episodes) / members / hours,
        "false_deads": sim.false_deads,
        "refutations": sim.incarnation_sum() - sim.incarnations,
        "member_hours": members * hours,
        "converged_at_end": sim.converged(),
        "max_awareness": max(node.awareness for node in sim.nodes.values()),
    }
    result.update(interest_stats(sim))
    return result


def interest_stats(sim: ClusterSim) -> dict[str, Any]:
    """Delivery and confirmation times of the interest changes of a run.

    ``delivered``: until every other live member had the delta (a member missing
    from the origin's view never gets it: counted in ``missed``).  ``confirmed``:
    until the last ack of the members the origin sent to, or ACK_TIMEOUT if one
    did not come in time (counted in ``timeouts``)."""
    delivered, confirmed = [], []
    missed = timeouts = 0
    for change in sim.interests.values():
        others = [n for n in sim.live() if n != change.origin]
        if all(n in change.have for n in others):
            delivered.append(max((change.have[n] for n in others), default=change.start))
            delivered[-1] -= change.start
        else:
            missed += 1
        if len(change.acks) == len(change.peers):
            confirmed.append(max(change.acks.values(), default=change.start) - change.start)
        else:
            timeouts += 1
            confirmed.append(ACK_TIMEOUT)
    return {
        "interest_changes": len(sim.interests),
        "interest_delivered": delivered,
        "interest_confirmed": confirmed,
        "interest_missed": missed,
        "interest_timeouts": timeouts,
    }


# -- event fan-out on real sockets ------------------------------------------------------


def sample_event(size: int = 300) -> dict[str, Any]:
    """A ``rig.event`` cluster message whose frame is about ``size`` bytes."""
    event = {
        "specversion": "1.0",
        "type": "com.example.chat.message",
        "source": "/rig/bench",
        "id": "8c2f3f0e-6d7a-4c1e-9a55-0b1f2d3c4e5f",
        "data": {"room": "lobby", "text": ""},
    }
    message = {"type": "rig.event", "event": ""}
    base = len(_framed(message, event))
    event["data"]["text"] = "x" * max(size - base, 0)
    message["event"] = json.dumps(event, separators=(",", ":"))
    return message


def _framed(message: dict[str, Any], event: dict[str, Any] | None = None) -> bytes:
    """What ``ClusterLinks.send`` writes: a 4-byte length, then the JSON frame."""
    if event is not None:
        message = {**message, "event": json.dumps(event, separators=(",", ":"))}
    data = encode_frame({"t": "msg", "m": message})
    return struct.pack("!I", len(data)) + data


def _tcp_pairs(count: int) -> list[tuple[socket.socket, socket.socket]]:
    """``count`` connected loopback TCP socket pairs (sender, receiver), non-blocking."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(count)
    pairs = []
    try:
        for _ in range(count):
            sender = socket.create_connection(listener.getsockname())
            receiver, _ = listener.accept()
            sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sender.setblocking(False)
            receiver.setblocking(False)
            pairs.append((sender, receiver))
    finally:
        listener.close()
    return pairs


def _drain(sock: socket.socket, expected: int) -> None:
    """Read exactly ``expected`` bytes from a non-blocking socket."""
    while expected > 0:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            select.select([sock], [], [], 1.0)
            continue
        if not data:
            raise ConnectionError("receiver closed")
        expected -= len(data)


def measure_fanout(
    peers: int, *, events: int = 20000, size: int = 300, encode_per_peer: bool = False
) -> dict[str, Any]:
    """Publisher-side cost of sending one event to ``peers`` nodes over loopback TCP.

    Timed, per event: serialising the ``rig.event`` frame (once; or once per peer
    with ``encode_per_peer``, which is what ``ClusterLinks.send`` does today) and
    one non-blocking ``send()`` of the framed bytes per peer socket.  Not timed:
    draining the receivers after every event.  Not included: Twisted's transport
    buffering and reactor, the peers' parsing, a network beyond loopback.
    """
    pairs = _tcp_pairs(peers)
    message = sample_event(size)
    frame_bytes = len(_framed(message))
    samples = []
    short = 0
    try:
        for i in range(events + events // 10):  # the first tenth is warm-up
            sent = []
            t0 = time.perf_counter_ns()
            if encode_per_peer:
                for s, _ in pairs:
                    sent.append(s.send(_framed(message)))
            else:
                data = _framed(message)
                for s, _ in pairs:
                    sent.append(s.send(data))
            elapsed = time.perf_counter_ns() - t0
            if i >= events // 10:
                samples.append(elapsed)
            for (_, r), count in zip(pairs, sent, strict=True):
                short += count < frame_bytes
                _drain(r, count)
    finally:
        for s, r in pairs:
            s.close()
            r.close()
    median_us = statistics.median(samples) / 1000
    return {
        "peers": peers,
        "frame_bytes": frame_bytes,
        "encode_per_peer": encode_per_peer,
        "events": len(samples),
        "us_per_event": median_us,
        "us_per_event_p99": percentile(samples, 99) / 1000,
        "us_per_write": median_us / peers,
        "events_per_s": 1e6 / median_us,
        "short_writes": short,
    }


# -- the report -------------------------------------------------------------------------------


def run_size(
    n: int, args: argparse.Namespace, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Every membership scenario for one cluster size, each on a copy of one formed cluster."""
    log = log or (lambda _text: None)
    wall = time.perf_counter()

    def done(what: str) -> None:
        log(f"n={n}: {what} ({time.perf_counter() - wall:.0f} s wall)")

    formed, formed_at = form_cluster(n, seed=args.seed, latency=args.latency)
    done(f"converged at {formed_at:.1f} s simulated")
    res: dict[str, Any] = {"n": n, "converged_at": formed_at, "loss": {}}
    res["steady"] = run_window(
        formed,
        duration=args.steady,
        interest_changes=args.interest_changes,
        count_bytes=True,
        seed=args.seed + 1,
    )
    done("steady state")
    res["detection"] = measure_detection(formed, kills=args.kills, seed=args.seed + 2)
    done("detection")
    for model in MODELS:
        for loss in args.losses:
            res["loss"][model, loss] = run_window(
                formed,
                duration=args.duration,
                loss=loss,
                model=model,
                interest_changes=args.interest_changes if model == "tcp" else 0,
                count_bytes=True,
                seed=args.seed + 3,
            )
            done(f"{model} {loss:.0%}")
    res["wall"] = time.perf_counter() - wall
    return res


def _ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values) * 1000:.0f} / {percentile(values, 99) * 1000:.0f}"


def _table(header: list[str], rows: list[tuple[str, list[str]]]) -> list[str]:
    width = max(len(label) for label, _ in rows) + 2
    cols = [max(len(h) + 2, *(len(v[i]) + 2 for _, v in rows)) for i, h in enumerate(header)]
    lines = ["".ljust(width) + "".join(h.rjust(c) for h, c in zip(header, cols, strict=True))]
    lines += [
        label.ljust(width) + "".join(v.rjust(c) for v, c in zip(values, cols, strict=True))
        for label, values in rows
    ]
    return lines


def format_membership(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The membership results as one table: rows are metrics, columns cluster sizes."""
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, fn: Callable[[dict[str, Any]], str]) -> None:
        rows.append((label, [fn(r) for r in results]))

    def kills(key: str, agg: Callable[[list[float]], float]) -> Callable[[dict[str, Any]], str]:
        return lambda r: f"{agg([k[key] for k in r['detection']['kills']]):.1f}"

    def lossy(
        label: str, fmt: Callable[[dict[str, Any]], str], models: tuple[str, ...] = MODELS
    ) -> None:
        for model in models:
            for loss in args.losses:
                row(f"   {model} {loss:.0%}: {label}", lambda r, k=(model, loss): fmt(r["loss"][k]))

    row("converged after a rolling start at (s)", lambda r: f"{r['converged_at']:.1f}")
    row("1. detection: kills", lambda r: str(len(r["detection"]["kills"])))
    row("   first SUSPECT anywhere (s, median)", kills("first_suspect", statistics.median))
    row("   first DEAD anywhere (s, median)", kills("first_dead", statistics.median))
    row("   DEAD at every live member (s, median)", kills("all_dead", statistics.median))
    row("   DEAD at every live member (s, max)", kills("all_dead", max))
    row("   false DEAD meanwhile", lambda r: str(r["detection"]["false_deads"]))
    row("2. 0% loss: false suspicions /member/h", lambda r: _rate(r["steady"]))
    row("   0% loss: false DEAD", lambda r: str(r["steady"]["false_deads"]))
    lossy("false suspicions /member/h", _rate)
    lossy("suspicion episodes /member/h", lambda w: f"{w['episodes_per_member_h']:.2f}")
    lossy("false DEAD", lambda w: str(w["false_deads"]))
    lossy("membership msgs /member/s", lambda w: f"{w['msgs_per_member_s']:.2f}")
    lossy("membership bytes /member/s", lambda w: f"{w['bytes_per_member_s']:.0f}")
    row(
        "   member-hours observed per lossy run",
        lambda r: f"{next(iter(r['loss'].values()))['member_hours']:.1f}" if r["loss"] else "n/a",
    )

    def steady(fmt: Callable[[dict[str, Any]], str]) -> Callable[[dict[str, Any]], str]:
        return lambda r: fmt(r["steady"])

    row("3. membership msgs /member/s, no loss", steady(lambda w: f"{w['msgs_per_member_s']:.2f}"))
    row(
        "   membership bytes /member/s, no loss", steady(lambda w: f"{w['bytes_per_member_s']:.0f}")
    )
    row(
        "   core CPU in this sim (ms /member/s)",
        steady(lambda w: f"{w['core_ms_per_member_s']:.2f}"),
    )
    row("4. 0% loss: interest at all (ms p50/p99)", steady(lambda w: _ms(w["interest_delivered"])))
    row("   0% loss: all acks back (ms p50/p99)", steady(lambda w: _ms(w["interest_confirmed"])))
    tcp = ("tcp",)
    lossy("interest at all (ms p50/p99)", lambda w: _ms(w["interest_delivered"]), tcp)
    lossy("all acks back (ms p50/p99)", lambda w: _ms(w["interest_confirmed"]), tcp)
    lossy("ack timeouts (1 s)", lambda w: f"{w['interest_timeouts']}/{w['interest_changes']}", tcp)
    row("wall time for this size (s)", lambda r: f"{r['wall']:.0f}")
    return "\n".join(_table([f"n={r['n']}" for r in results], rows))


def _rate(window: dict[str, Any]) -> str:
    """A false-suspicion rate, with the count it comes from."""
    return f"{window['false_suspicions_per_member_h']:.1f} ({window['false_suspicions']})"


def format_details(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """Per-type message rates and the raw counts behind the table."""
    lines = []
    for r in results:
        steady = r["steady"]
        types = ", ".join(f"{k} {v:.3f}" for k, v in steady["by_type_per_member_s"].items())
        lines.append(f"n={r['n']} no loss, msgs /member/s by type: {types}")
        for (model, loss), w in r["loss"].items():
            lines.append(
                f"n={r['n']} {model} {loss:.0%}: {w['lost']} transmissions lost,"
                f" {w['episodes']} suspicion episodes seen as {w['false_suspicions']}"
                f" (observer, subject) suspicions, {w['refutations']} refutations,"
                f" max awareness {w['max_awareness']}, interest missed {w['interest_missed']}"
            )
    return "\n".join(lines)


def format_fanout(rows: list[dict[str, Any]]) -> str:
    header = ["frame B", "us/event p50", "p99", "us/write", "events/s"]
    table = [
        (
            f"{r['peers']} peers, encode {'per peer' if r['encode_per_peer'] else 'once'}",
            [
                str(r["frame_bytes"]),
                f"{r['us_per_event']:.1f}",
                f"{r['us_per_event_p99']:.1f}",
                f"{r['us_per_write']:.2f}",
                f"{r['events_per_s']:.0f}",
            ],
        )
        for r in rows
    ]
    return "\n".join(_table(header, table))


def fleet_paragraph(results: list[dict[str, Any]], fanout: list[dict[str, Any]]) -> str:
    """What the numbers mean for fleet size, with the numbers filled in."""
    big, small = results[-1], results[0]
    cfg = SwimConfig()

    def floor(n: int) -> float:
        return cfg.suspicion_min_multiplier * max(1.0, math.log10(n)) * cfg.probe_interval

    def det(r: dict[str, Any]) -> float:
        return statistics.median(k["all_dead"] for k in r["detection"]["kills"])

    worst = big["loss"].get(("drop", 0.05)) or next(iter(big["loss"].values()))
    text = (
        f"Detection is bounded by the suspicion timeout, whose floor grows with log10(n)"
        f" ({floor(small['n']):.1f} s at {small['n']}, {floor(big['n']):.1f} s at {big['n']},"
        f" {floor(1000):.0f} s at 1000): measured {det(small):.1f} s and {det(big):.1f} s until"
        f" every member holds the victim DEAD.  Membership traffic per member is flat in"
        f" messages ({small['steady']['msgs_per_member_s']:.2f} vs"
        f" {big['steady']['msgs_per_member_s']:.2f} /s) but not in bytes"
        f" ({small['steady']['bytes_per_member_s']:.0f} vs"
        f" {big['steady']['bytes_per_member_s']:.0f} B/s): the 30 s push-pull carries the"
        f" full member list, so bytes per member grow ~linearly and the cluster total"
        f" ~quadratically.  Each false suspicion is gossiped to every member, so the"
        f" (observer, subject) rate grows with n even where episodes per member do not"
        f" (at {worst['model']} {worst['loss']:.0%}:"
        f" {worst['episodes_per_member_h']:.2f} episodes/member/h seen as"
        f" {worst['false_suspicions_per_member_h']:.0f} suspicions/member/h at {big['n']})."
        f"  On TCP links, loss costs time, not members: a confirmation that waits for"
        f" acks from all n-1 peers almost surely waits out one RTO once 2(n-1)*loss"
        f" is >> 1, and hits the 1 s timeout when one of them is lost three times in a row"
        f" (about 1-(1-p^3)^(2(n-1)) of changes)."
    )
    if fanout:
        once = [f for f in fanout if not f["encode_per_peer"]]
        widest = max(once or fanout, key=lambda f: f["peers"])
        text += (
            f"  Event fan-out is a write per interested node: {widest['us_per_write']:.1f} us"
            f" each here, so a node's publish cost grows linearly with the nodes interested"
            f" in a type ({widest['us_per_event']:.0f} us per event at {widest['peers']}"
            f" peers, {widest['us_per_write'] * (big['n'] - 1) / 1000:.1f} ms at"
            f" {big['n'] - 1})."
        )
    return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def ints(text: str) -> list[int]:
        return [int(x) for x in text.split(",") if x]

    def floats(text: str) -> list[float]:
        return [float(x) for x in text.split(",") if x]

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=ints, default=[100, 500], help="cluster sizes")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--latency", type=float, default=0.001, help="one-way latency (s)")
    parser.add_argument(
        "--duration", type=float, default=120.0, help="simulated s per lossy run (default 120)"
    )
    parser.add_argument("--steady", type=float, default=60.0, help="simulated s of steady state")
    parser.add_argument("--losses", type=floats, default=[0.01, 0.05], help="loss probabilities")
    parser.add_argument("--kills", type=int, default=5, help="members killed, one at a time")
    parser.add_argument("--interest-changes", type=int, default=50, help="per interest run")
    parser.add_argument("--fanout-peers", type=ints, default=[49, 9])
    parser.add_argument("--fanout-events", type=int, default=20000)
    parser.add_argument("--no-fanout", action="store_true", help="skip the socket fan-out")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()

    def log(text: str) -> None:
        print(f"# {text}", file=sys.stderr, flush=True)

    results = [run_size(n, args, log) for n in args.sizes]
    fanout = []
    if not args.no_fanout:
        for peers in args.fanout_peers:
            for per_peer in (False, True):
                fanout.append(
                    measure_fanout(peers, events=args.fanout_events, encode_per_peer=per_peer)
                )
        log("fan-out done")
    print(
        f"txrig cluster simulation: SwimConfig() defaults, tick {TICK} s, latency"
        f" {args.latency * 1000:g} ms, seed {args.seed}, steady {args.steady:g} s,"
        f" lossy runs {args.duration:g} s, {args.kills} kills, {args.interest_changes}"
        f" interest changes per run\n"
    )
    print(format_membership(results, args))
    print(
        "\nfalse suspicions: (observer, subject) transitions to SUSPECT of a member that was"
        " never killed, per member per simulated hour (count in brackets); an episode is one"
        " (subject, incarnation) suspected, however many observers saw it; none in M"
        " member-hours means below about 3/M per member-hour (95 %).  Bytes are"
        " len(json.dumps(message)) of every message the Membership objects emit.  Interest"
        " ms p50/p99 are over the interest changes; one whose acks were not all back within"
        " 1 s counts as 1000.  Simulated times exclude CPU: the origin's n-1 writes and n-1"
        " acks cost real time too (see the fan-out table for a write's cost)."
    )
    print("\n" + format_details(results, args))
    if fanout:
        print(
            "\nevent fan-out, measured: one rig.event frame sent with a non-blocking send() to"
            " each of N loopback TCP sockets (receivers drained between events, untimed);"
            " publisher side only, no Twisted, no parsing on the receiving side."
        )
        print(format_fanout(fanout))
    print("\n" + fleet_paragraph(results, fanout))
    print(f"\nwall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
