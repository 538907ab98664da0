"""Public helpers for testing txrig and code built on it (as treq ships ``StubTreq``).

- :func:`eventually`: poll a condition on a reactor, bounded (one helper instead of six);
- :class:`FakeConnection`: an :class:`~rig.hub.interface.IConnection` that records what
  the hub sends it, for hub tests on a ``Clock``;
- :class:`MemoryNetwork`: cluster members (the sans-IO membership) on an in-memory
  network driven by a ``Clock``.

Nothing here opens a socket or reads the global reactor.
"""
import json
import random
from inspect import isawaitable

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from zope.interface import implementer

from rig.cluster.membership import ALIVE, Member, Membership, SwimConfig
from rig.hub.interface import IConnection

STEP = 0.05  # the simulated network's tick, in seconds


async def eventually(reactor, predicate, seconds=8.0, what="condition", interval=0.05):
    """Wait until ``predicate()`` (or the awaitable it returns) is true, polling every
    *interval* seconds on *reactor*; AssertionError naming *what* after *seconds*."""
    deadline = reactor.seconds() + seconds
    while True:
        try:
            outcome = predicate()
            if isawaitable(outcome):
                outcome = await outcome
        except Exception:  # not there yet (a refused connection, say)
            outcome = False
        if outcome:
            return
        if reactor.seconds() >= deadline:
            raise AssertionError(f"{what} not reached within {seconds} s")
        waiting = Deferred()
        reactor.callLater(interval, waiting.callback, None)
        await waiting


@implementer(IConnection)
class FakeConnection:
    """Records frames and RIG events; ``closed_with`` holds the close reasons."""

    coalesce = True

    def __init__(self, hub, framer=None, kind="ws"):
        self.local_id = hub.new_local_id()
        self.token = hub.token_for(self.local_id)
        self.framer = framer or (lambda event, position: event.json)
        self.kind = kind
        self.frames = []
        self.rig_events = []
        self.beats = 0
        self.closed_with = []

    def deliver(self, frame):
        self.frames.append(frame)

    write_frame = deliver

    def send_rig_event(self, *events):
        for event in events:
            self.rig_events.append(event)
            self.frames.append(event.type)

    def heartbeat(self):
        self.beats += 1

    def close(self, reason=None):
        self.closed_with.append(reason)


class MemoryNetwork:
    """Membership nodes (the sans-IO SWIM core) wired through an in-memory network on a
    :class:`~twisted.internet.task.Clock`: link latency, per-link loss, delays, cuts and
    killed nodes; every message goes through JSON as on the wire."""

    def __init__(self, names, *, seed=0, config=None, latency=0.01, clock=None):
        self.rng = random.Random(seed)
        self.config = config or SwimConfig()
        self.clock = clock if clock is not None else Clock()
        self.latency = latency
        self.nodes: dict[str, Membership] = {}
        self.queue: list[tuple[float, int, str, str, dict]] = []
        self.counter = 0
        self.drop: dict[tuple[str, str], float] = {}  # (src, dst) -> drop probability
        self.delay: dict[tuple[str, str], float] = {}  # (src, dst) -> extra delay
        self.blocked: set[tuple[str, str]] = set()
        self.killed: set[str] = set()
        self.changes: list[tuple[float, str, Member]] = []
        for name in names:
            self.add(name, "b1")

    def add(self, name, boot):
        node = Membership(
            name,
            name,
            boot,
            config=self.config,
            rng=random.Random(self.rng.random()),
            now=self.now,
        )
        node.on_change.append(lambda m, _n=name: self.changes.append((self.now, _n, m)))
        self.nodes[name] = node
        return node

    def send(self, src, msgs):
        for dst, msg in msgs:
            # Everything on the wire must survive JSON.
            wire = json.loads(json.dumps(msg))
            self.counter += 1
            self.queue.append((self.now + self.latency, self.counter, src, dst, wire))

    def passes(self, src, dst):
        if src in self.killed or dst in self.killed or (src, dst) in self.blocked:
            return False
        p = self.drop.get((src, dst), 0.0)
        return not (p and self.rng.random() < p)

    @property
    def now(self):
        return round(self.clock.seconds(), 6)

    def step(self):
        self.clock.advance(STEP)
        due = [m for m in self.queue if m[0] <= self.now]
        self.queue = [m for m in self.queue if m[0] > self.now]
        for _, _, src, dst, msg in sorted(due):
            if dst in self.nodes and self.passes(src, dst):
                extra = self.delay.get((src, dst), 0.0)
                if extra:
                    self.counter += 1
                    self.queue.append((self.now + extra, self.counter, src, dst, msg))
                    continue
                node = self.nodes[dst]
                self.send(dst, node.receive(self.now, src, msg))
        for name, node in self.nodes.items():
            if name not in self.killed:
                self.send(name, node.tick(self.now))

    def run(self, seconds):
        for _ in range(round(seconds / STEP)):
            self.step()

    def run_until(self, predicate, limit):
        """Run until predicate() holds; return the elapsed time (fails after limit)."""
        start = self.now
        while not predicate():
            if self.now - start >= limit:
                raise AssertionError(f"not reached within {limit}s")
            self.step()
        return self.now - start

    def join_all(self, seed):
        for name, node in self.nodes.items():
            if name != seed:
                self.send(name, node.join(self.now, [seed]))

    def state(self, observer, name):
        m = self.nodes[observer].member(name)
        return None if m is None else m.state

    def live(self):
        return [n for n in self.nodes if n not in self.killed]

    def all_see(self, names, state, observers=None):
        observers = observers if observers is not None else self.live()
        return all(self.state(o, n) == state for o in observers for n in names if o != n)

    def converged(self, names=None):
        names = names if names is not None else self.live()
        return all(
            {m.name for m in self.nodes[o].members() if m.state == ALIVE} >= set(names)
            for o in names
        )
