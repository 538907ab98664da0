"""Sans-IO SWIM membership with the Lifeguard refinements.

Nothing here touches a socket, a reactor or a real clock: every entry point takes
the current time ``now`` (seconds, any monotonic origin) and returns the messages
to send as ``[(address, message), ...]``.  Messages are JSON-serialisable dicts.
The Twisted layer owns the links, calls :meth:`Membership.tick` often (every
0.1 s is plenty) and feeds inbound frames to :meth:`Membership.receive`.

Protocol summary (design notes, sections 4.1, 4.2 and 4.4):

* **Probing.** Round-robin over a shuffled list of alive/suspect members, one
  probe per period of ``probe_interval * (awareness + 1)``.  A direct ``ping``;
  with no ``ack`` after ``probe_timeout * (awareness + 1)``, a ``ping-req`` to
  ``indirect_checks`` random alive members, which ping the target, relay its
  ``ack`` and send a ``nack`` if it did not answer in time.  No ack by the end of
  the period: the target becomes *suspect*.
* **Lifeguard local health** (``awareness``, 0 .. ``awareness_max - 1``): a
  successful probe lowers it by one; a failed probe raises it by the number of
  expected nacks that did not arrive (by one when no helper was available);
  having to refute a suspicion of ourselves raises it by one.
* **Lifeguard dynamic suspicion timeout** (memberlist ``suspicion.go``):
  ``min = suspicion_min_multiplier * max(1, log10(n)) * probe_interval``,
  ``max = suspicion_max_multiplier * min``, and with ``c`` independent
  confirmations (one per confirming node, the suspicion's originator excluded)
  ``timeout = max - log(c + 1) / log(k + 1) * (max - min)`` where
  ``k = suspicion_min_multiplier - 2`` (``k = 0``, i.e. ``timeout = min``, when
  the cluster is too small to supply ``k`` confirmations).
* **Buddy system.** Any message to a member we hold as suspect or dead carries
  that member's entry, so it learns about it at once and can refute.
* **Incarnations.** Only the owner changes its incarnation.  ``alive(i)`` beats
  ``suspect/dead/left(j)`` when ``i > j``; ``suspect(i)`` beats ``alive(j)`` when
  ``i >= j``; ``dead/left(i)`` beat ``alive/suspect(j)`` when ``i >= j``.
  A node that hears it is suspect, dead or left (with its current boot) at an
  incarnation ``>=`` its own refutes by gossiping ``alive`` at that
  incarnation + 1.
* **Gossip tick.** While updates are queued, every ``gossip_interval`` a
  ``gossip`` message goes to ``gossip_nodes`` random alive/suspect members
  (memberlist's GossipInterval/GossipNodes), so news does not wait for probes.
* **Restarts.** Names are stable (host:port based); each process start has a
  new ``boot`` id.  Boot ids are compared as strings and the greater boot wins
  over any entry with a smaller boot, whatever the incarnations: use
  :func:`make_boot` (start time in ms, zero-padded, plus random bits) so that a
  restart always sorts after its previous life.  Updates about an older boot
  are ignored.
* **Dissemination.** Every message piggybacks a ``gossip`` list taken from a
  transmit-limited queue (least transmitted, then newest, first; each update is
  sent ``retransmit_multiplier * ceil(log10(n + 1))`` times; a newer update
  about a member replaces the queued one).  Every message also carries the
  sender's own entry under ``from``, which is merged like any update.
* **Push-pull.** ``join`` pushes our full state and the receiver answers with
  a ``sync`` of its full state.  Every ``push_pull_interval`` (jittered +-10 %)
  we push-pull with one random alive member, and send a ``join`` to one random
  *dead* member or seed address that is not currently an alive member
  ("reconnect", as Serf does).  Full-state merges downgrade a remote ``dead``
  to ``suspect`` (memberlist ``mergeState``), so a stale view cannot kill a
  node outright.  This reconnect is how a healed partition converges: the
  side that receives a ``join`` listing itself as dead refutes with a higher
  incarnation, and a node forgotten after ``dead_reclaim`` is re-learned from
  the join/sync itself.
* **Leave.** ``leave()`` marks ourselves ``left`` (distinct from ``dead``) and
  sends it to every alive member; it spreads like any update.  A node that
  left stops probing and never refutes.
* **Reclaim.** Dead and left members are forgotten ``dead_reclaim`` seconds
  after they entered that state (no ``on_change`` call for that).

Message types: ``ping`` (seq, target), ``ack`` (seq), ``ping-req`` (seq,
target, target_address, timeout), ``nack`` (seq), ``join`` (members),
``sync`` (members, reply), ``gossip``.  All carry ``from`` and ``gossip``.
Malformed messages and updates are ignored.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import attrs

ALIVE = "alive"
SUSPECT = "suspect"
DEAD = "dead"
LEFT = "left"
STATES = (ALIVE, SUSPECT, DEAD, LEFT)

Outgoing = list[tuple[str, dict[str, Any]]]


@attrs.frozen
class SwimConfig:
    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_checks: int = 3
    suspicion_min_multiplier: float = 4.0
    suspicion_max_multiplier: float = 6.0
    awareness_max: int = 8
    retransmit_multiplier: int = 4
    dead_reclaim: float = 30.0
    push_pull_interval: float = 30.0
    gossip_interval: float = 0.2  # extra gossip tick, only while updates are queued
    gossip_nodes: int = 3
    max_piggyback: int = 32


@attrs.frozen
class Member:
    name: str
    address: str
    incarnation: int
    state: str
    boot: str


def make_boot(wall_time: float, rng: random.Random | None = None) -> str:
    """A boot id that sorts after the boot ids of earlier starts on this host."""
    bits = (rng or random.SystemRandom()).getrandbits(32)
    return f"{int(wall_time * 1000):015d}-{bits:08x}"


@attrs.define
class _Suspicion:
    start: float
    min_timeout: float
    max_timeout: float
    k: int
    origin: str
    confirmers: set[str] = attrs.field(factory=set)

    def timeout(self) -> float:
        if self.k < 1:
            return self.min_timeout
        frac = math.log(len(self.confirmers) + 1) / math.log(self.k + 1)
        span = self.max_timeout - self.min_timeout
        return max(self.min_timeout, self.max_timeout - frac * span)


@attrs.define
class _Probe:
    target: str
    seq: int
    timeout_at: float
    end_at: float
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@attrs.define
class _Relay:
    origin: str
    origin_seq: int
    deadline: float


def _update(member: Member, by: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": member.name,
        "address": member.address,
        "boot": member.boot,
        "incarnation": member.incarnation,
        "state": member.state,
    }
    if by is not None:
        out["by"] = by
    return out


def _valid_update(upd: Any) -> bool:
    return (
        isinstance(upd, dict)
        and isinstance(upd.get("name"), str)
        and isinstance(upd.get("address"), str)
        and isinstance(upd.get("boot"), str)
        and isinstance(upd.get("incarnation"), int)
        and not isinstance(upd.get("incarnation"), bool)
        and upd.get("state") in STATES
    )


class Membership:
    """One node's SWIM/Lifeguard view of the cluster (sans-IO)."""

    def __init__(
        self,
        name: str,
        address: str,
        boot: str,
        *,
        config: SwimConfig | None = None,
        rng: random.Random | None = None,
        now: float = 0.0,
    ) -> None:
        self.config = config or SwimConfig()
        self.name = name
        self.address = address
        self.boot = boot
        self.on_change: list[Callable[[Member], object]] = []
        self._rng = rng or random.Random()
        self._members: dict[str, Member] = {name: Member(name, address, 0, ALIVE, boot)}
        self._since: dict[str, float] = {name: now}
        self._suspicions: dict[str, _Suspicion] = {}
        self._queue: dict[str, list[Any]] = {}  # name -> [update, transmits, order]
        self._queue_order = 0
        self._probe: _Probe | None = None
        self._next_probe_at = now
        self._order: list[str] = []
        self._order_index = 0
        self._urgent: list[str] = []
        self._relays: dict[int, _Relay] = {}
        self._seq = 0
        self._awareness = 0
        self._seeds: list[str] = []
        self._next_push_pull = now + self._jitter(self.config.push_pull_interval)
        self._next_gossip = now
        self._left = False

    # -- read-only views ---------------------------------------------------

    @property
    def incarnation(self) -> int:
        return self._members[self.name].incarnation

    @property
    def awareness(self) -> int:
        """Lifeguard local health score, 0 (healthy) .. awareness_max - 1."""
        return self._awareness

    @property
    def has_left(self) -> bool:
        return self._left

    def members(self) -> list[Member]:
        """Every known member, self included, sorted by name."""
        return [self._members[n] for n in sorted(self._members)]

    def alive(self) -> list[Member]:
        """Alive or suspect members, *excluding* self, sorted by name."""
        return [m for m in self.members() if m.name != self.name and m.state in (ALIVE, SUSPECT)]

    def member(self, name: str) -> Member | None:
        return self._members.get(name)

    # -- entry points --------------------------------------------------------

    def join(self, now: float, seed_addresses: list[str]) -> Outgoing:
        """Push our state to every seed; each answers with a ``sync``."""
        self._seeds = [a for a in dict.fromkeys(seed_addresses) if a != self.address]
        return [(a, self._msg("join", a, members=self._dump())) for a in self._seeds]

    def introduce(self, now: float, address: str) -> Outgoing:
        """A message telling the member at *address* about us (and carrying gossip),
        so that it holds us as alive before it handles what we send next."""
        if self._left:
            return []
        return [(address, self._msg("gossip", address))]

    def leave(self, now: float) -> Outgoing:
        """Graceful leave: mark ourselves ``left`` and tell every alive member."""
        if self._left:
            return []
        self._left = True
        self._probe = None
        me = self._members[self.name]
        self._set(now, attrs.evolve(me, state=LEFT), by=self.name)
        out: Outgoing = []
        for m in self.alive():
            msg = self._msg("gossip", m.address)
            if not any(u.get("name") == self.name for u in msg["gossip"]):
                msg["gossip"].append(_update(self._members[self.name], self.name))
            out.append((m.address, msg))
        return out

    def link_down(self, now: float, address: str) -> Outgoing:
        """A broken link is a reason to probe that member now, not proof of death."""
        if self._left:
            return []
        names = [m.name for m in self.alive() if m.address == address]
        if not names:
            return []
        name = names[0]
        if self._probe is not None:
            if self._probe.target != name and name not in self._urgent:
                self._urgent.append(name)
            return []
        out: Outgoing = []
        self._start_probe(now, name, out)
        return out

    def tick(self, now: float) -> Outgoing:
        out: Outgoing = []
        self._expire_relays(now, out)
        if not self._left:
            self._run_probe(now, out)
            self._expire_suspicions(now)
            self._push_pull(now, out)
            self._gossip(now, out)
        self._reclaim(now)
        return out

    def receive(self, now: float, from_address: str, message: Any) -> Outgoing:
        if not isinstance(message, dict):
            return []
        try:
            return self._receive(now, from_address, message)
        except (KeyError, TypeError, ValueError, AttributeError):
            return []

    # -- receiving -------------------------------------------------------------

    def _receive(self, now: float, from_address: str, message: dict[str, Any]) -> Outgoing:
        out: Outgoing = []
        sender_entry = message.get("from")
        sender = None
        reply_to = from_address
        if _valid_update(sender_entry):
            sender = sender_entry["name"]
            reply_to = sender_entry["address"]
            self._merge(now, sender_entry, sender=sender)
        for upd in message.get("gossip") or ():
            self._merge(now, upd, sender=sender)
        kind = message.get("type")
        seq = message.get("seq")
        if kind == "ping":
            target = message.get("target")
            if target is None or target == self.name:
                out.append((reply_to, self._msg("ack", reply_to, seq=seq)))
        elif kind == "ack":
            self._on_ack(now, seq, out)
        elif kind == "nack":
            if self._probe is not None and seq == self._probe.seq:
                self._probe.nacks += 1
        elif kind == "ping-req":
            target = message["target"]
            if target == self.name:
                out.append((reply_to, self._msg("ack", reply_to, seq=seq)))
            else:
                timeout = float(message.get("timeout", self.config.probe_timeout))
                my_seq = self._next_seq()
                self._relays[my_seq] = _Relay(reply_to, seq, now + timeout)
                addr = str(message["target_address"])
                out.append((addr, self._msg("ping", addr, seq=my_seq, target=target)))
        elif kind in ("join", "sync"):
            for upd in message.get("members") or ():
                self._merge(now, upd, sender=sender, from_sync=True)
            if kind == "join" or message.get("reply"):
                out.append((reply_to, self._msg("sync", reply_to, members=self._dump())))
        return out

    def _on_ack(self, now: float, seq: Any, out: Outgoing) -> None:
        probe = self._probe
        if probe is not None and seq == probe.seq:
            self._probe = None
            self._next_probe_at = probe.end_at
            self._adjust_awareness(-1)
            return
        relay = self._relays.pop(seq, None) if isinstance(seq, int) else None
        if relay is not None:
            out.append((relay.origin, self._msg("ack", relay.origin, seq=relay.origin_seq)))

    # -- merging updates ------------------------------------------------------

    def _merge(self, now: float, upd: Any, *, sender: str | None, from_sync: bool = False) -> None:
        if not _valid_update(upd):
            return
        name, state, inc, boot = upd["name"], upd["state"], upd["incarnation"], upd["boot"]
        if name == self.name:
            self._about_me(now, state, inc, boot)
            return
        cur = self._members.get(name)
        if cur is None and state != ALIVE:
            return  # only alive updates introduce members: no zombies after reclaim
        if from_sync and state == DEAD:
            state = SUSPECT
        by = upd.get("by") if isinstance(upd.get("by"), str) else None
        by = by or sender or ""
        new = Member(name, upd["address"], inc, state, boot)
        if cur is None:
            self._set(now, new, by)
            if self._order:
                self._order.insert(self._rng.randint(0, len(self._order)), name)
            return
        if boot != cur.boot:
            if boot > cur.boot:
                self._suspicions.pop(name, None)
                self._set(now, new, by)
            return
        if state == ALIVE:
            if inc > cur.incarnation:
                self._set(now, new, by)
        elif state == SUSPECT:
            if inc < cur.incarnation:
                return
            if cur.state == SUSPECT:
                susp = self._suspicions.get(name)
                if susp is not None and by and by != susp.origin and by not in susp.confirmers:
                    susp.confirmers.add(by)
                    self._enqueue(cur, by)
            elif cur.state == ALIVE:
                self._set(now, new, by)
        elif inc >= cur.incarnation and cur.state not in (DEAD, LEFT):  # dead or left
            self._set(now, new, by)

    def _about_me(self, now: float, state: str, inc: int, boot: str) -> None:
        if self._left or boot != self.boot:
            return
        me = self._members[self.name]
        if (state != ALIVE and inc >= me.incarnation) or inc > me.incarnation:
            if state != ALIVE:
                self._adjust_awareness(1)
            self._set(now, attrs.evolve(me, incarnation=inc + 1), self.name)

    def _set(self, now: float, new: Member, by: str) -> None:
        old = self._members.get(new.name)
        self._members[new.name] = new
        if old is None or old.state != new.state or old.boot != new.boot:
            self._since[new.name] = now
        if new.state == SUSPECT:
            if old is None or old.state != SUSPECT or old.boot != new.boot:
                self._start_suspicion(now, new.name, by)
        else:
            self._suspicions.pop(new.name, None)
        self._enqueue(new, by if new.state in (SUSPECT, DEAD, LEFT) else None)
        if old is None or old.state != new.state or old.boot != new.boot:
            for callback in list(self.on_change):
                callback(new)

    def _start_suspicion(self, now: float, name: str, origin: str) -> None:
        cfg = self.config
        n = self._cluster_size()
        min_t = cfg.suspicion_min_multiplier * max(1.0, math.log10(n)) * cfg.probe_interval
        max_t = cfg.suspicion_max_multiplier * min_t
        k = int(cfg.suspicion_min_multiplier) - 2
        if n - 2 < k:
            k = 0
        self._suspicions[name] = _Suspicion(now, min_t, max_t, k, origin)

    def suspicion_timeout(self, name: str) -> float | None:
        """Current timeout of our suspicion of ``name`` (None if not suspected)."""
        susp = self._suspicions.get(name)
        return None if susp is None else susp.timeout()

    # -- periodic work -----------------------------------------------------------

    def _run_probe(self, now: float, out: Outgoing) -> None:
        probe = self._probe
        if probe is not None:
            target = self._members.get(probe.target)
            if not probe.indirect_sent and now >= probe.timeout_at and target is not None:
                probe.indirect_sent = True
                peers = [m for m in self.alive() if m.state == ALIVE and m.name != probe.target]
                chosen = self._rng.sample(peers, min(self.config.indirect_checks, len(peers)))
                probe.expected_nacks = len(chosen)
                remaining = max(probe.end_at - now, 0.0) * 0.8
                for m in chosen:
                    out.append(
                        (
                            m.address,
                            self._msg(
                                "ping-req",
                                m.address,
                                seq=probe.seq,
                                target=target.name,
                                target_address=target.address,
                                timeout=remaining,
                            ),
                        )
                    )
            if now >= probe.end_at:
                self._probe = None
                if probe.expected_nacks > 0:
                    self._adjust_awareness(max(probe.expected_nacks - probe.nacks, 0))
                else:
                    self._adjust_awareness(1)
                if target is not None and target.state in (ALIVE, SUSPECT):
                    self._merge(
                        now,
                        _update(attrs.evolve(target, state=SUSPECT), self.name),
                        sender=self.name,
                    )
        if self._probe is None and now >= self._next_probe_at:
            name = self._next_target()
            if name is None:
                self._next_probe_at = now + self.config.probe_interval
            else:
                self._start_probe(now, name, out)

    def _start_probe(self, now: float, name: str, out: Outgoing) -> None:
        scale = self._awareness + 1
        target = self._members[name]
        seq = self._next_seq()
        self._probe = _Probe(
            name,
            seq,
            timeout_at=now + self.config.probe_timeout * scale,
            end_at=now + self.config.probe_interval * scale,
        )
        self._next_probe_at = self._probe.end_at
        out.append((target.address, self._msg("ping", target.address, seq=seq, target=name)))

    def _eligible(self, name: str) -> bool:
        m = self._members.get(name)
        return name != self.name and m is not None and m.state in (ALIVE, SUSPECT)

    def _next_target(self) -> str | None:
        while self._urgent:
            name = self._urgent.pop(0)
            if self._eligible(name):
                return name
        for _ in range(2):
            while self._order_index < len(self._order):
                name = self._order[self._order_index]
                self._order_index += 1
                if self._eligible(name):
                    return name
            self._order = [n for n in sorted(self._members) if self._eligible(n)]
            self._rng.shuffle(self._order)
            self._order_index = 0
            if not self._order:
                return None
        return None

    def _expire_relays(self, now: float, out: Outgoing) -> None:
        for seq, relay in list(self._relays.items()):
            if now >= relay.deadline:
                del self._relays[seq]
                out.append((relay.origin, self._msg("nack", relay.origin, seq=relay.origin_seq)))

    def _expire_suspicions(self, now: float) -> None:
        for name, susp in list(self._suspicions.items()):
            if now - susp.start >= susp.timeout():
                del self._suspicions[name]
                cur = self._members.get(name)
                if cur is not None and cur.state == SUSPECT:
                    self._set(now, attrs.evolve(cur, state=DEAD), self.name)

    def _push_pull(self, now: float, out: Outgoing) -> None:
        if now < self._next_push_pull:
            return
        self._next_push_pull = now + self._jitter(self.config.push_pull_interval)
        live = [m for m in self.alive() if m.state == ALIVE]
        if live:
            peer = self._rng.choice(live)
            out.append(
                (peer.address, self._msg("sync", peer.address, members=self._dump(), reply=True))
            )
        known = {m.address for m in self.alive()}
        candidates = sorted(
            {m.address for m in self._members.values() if m.state == DEAD}
            | {a for a in self._seeds if a not in known}
        )
        if candidates:
            addr = self._rng.choice(candidates)
            out.append((addr, self._msg("join", addr, members=self._dump())))

    def _gossip(self, now: float, out: Outgoing) -> None:
        if now < self._next_gossip:
            return
        self._next_gossip = now + self.config.gossip_interval
        if not self._queue:
            return
        peers = self.alive()
        for m in self._rng.sample(peers, min(self.config.gossip_nodes, len(peers))):
            if not self._queue:
                break
            out.append((m.address, self._msg("gossip", m.address)))

    def _reclaim(self, now: float) -> None:
        for name, m in list(self._members.items()):
            if (
                name != self.name
                and m.state in (DEAD, LEFT)
                and now - self._since[name] >= self.config.dead_reclaim
            ):
                del self._members[name]
                del self._since[name]
                self._suspicions.pop(name, None)
                self._queue.pop(name, None)

    # -- helpers ---------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _jitter(self, interval: float) -> float:
        return interval * (0.9 + 0.2 * self._rng.random())

    def _adjust_awareness(self, delta: int) -> None:
        self._awareness = min(max(self._awareness + delta, 0), self.config.awareness_max - 1)

    def _cluster_size(self) -> int:
        return sum(1 for m in self._members.values() if m.state in (ALIVE, SUSPECT))

    def _dump(self) -> list[dict[str, Any]]:
        return [_update(m) for m in self.members()]

    def _enqueue(self, member: Member, by: str | None) -> None:
        self._queue.pop(member.name, None)
        self._queue_order += 1
        self._queue[member.name] = [_update(member, by), 0, self._queue_order]

    def _piggyback(self, to_address: str | None) -> list[dict[str, Any]]:
        limit = self.config.retransmit_multiplier * math.ceil(math.log10(self._cluster_size() + 1))
        items = sorted(self._queue.items(), key=lambda kv: (kv[1][1], -kv[1][2]))
        out = []
        for name, entry in items[: self.config.max_piggyback]:
            out.append(dict(entry[0]))
            entry[1] += 1
            if entry[1] >= limit:
                del self._queue[name]
        if to_address is not None:
            sent = {u["name"] for u in out}
            for m in self._members.values():
                if m.address == to_address and m.state in (SUSPECT, DEAD) and m.name not in sent:
                    out.append(_update(m))
        return out

    def _msg(self, kind: str, to_address: str | None, **fields: Any) -> dict[str, Any]:
        msg: dict[str, Any] = {"type": kind, **fields}
        msg["from"] = _update(self._members[self.name])
        msg["gossip"] = self._piggyback(to_address)
        return msg
