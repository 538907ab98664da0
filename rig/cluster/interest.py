"""Interest: the event types each node has subscribers for (an owner-partitioned set).

A published event crosses to a node only if that node's partition holds the
event's type, and is matched there; so each subscriber gets it exactly once.

The promise to a client: once it has its confirmation, every matching event
published afterwards on any node reaches it. So a new event type is pushed to
every live peer at once, each peer acknowledges the version of our partition
it now holds, and the confirmation waits (:meth:`InterestReplica.want`) until
all have, or ``CLUSTER_INTEREST_TIMEOUT`` runs out. Links deliver in order, so
an acknowledged version covers every earlier change. Types that every live
peer already routes here cost nothing; removals are not waited for (an event
too many is dropped by the receiver's index).
"""
from collections import Counter

import attrs
from twisted.internet import defer

from rig.cluster.replicas import PartitionedReplica

ACK = "rig.interest-ack"


@attrs.define(eq=False)
class _Wait:
    """Confirmations waiting for peers to hold our partition at *version* or later
    (all the connections of a burst that wait for the same version share one)."""

    version: int
    peers: set  # member names still to acknowledge
    types: set
    deferreds: list = attrs.Factory(list)
    timeout: object = None  # its DelayedCall


class InterestReplica(PartitionedReplica):
    key = "interest"

    def __init__(self, hub, timeout=1.0, interval=0.5):
        super().__init__(self._wanted_types, interval)
        self._hub = hub
        self._timeout = timeout
        self._holding = Counter()  # types of connections waiting for their confirmation
        self._added_at = {}  # event type -> version of our partition that added it
        self._acked = {}  # member name -> (boot, highest version of ours it acknowledged)
        self._sent = {}  # member name -> (boot, highest version of ours sent to it)
        self._waits = []

    def attach(self, cluster):
        super().attach(cluster)
        cluster.handle(ACK, self._on_ack)

    def detach(self):
        super().detach()
        for wait in list(self._waits):
            self._finish(wait)

    def describe(self):
        return {owner: sorted(types) for owner, (_, types) in self.sets.snapshot().items()}

    def _wanted_types(self):
        types = self._hub.interest_types()
        if self._holding:
            types |= self._holding.keys()
        return types

    # -- confirmations ------------------------------------------------------------

    def want(self, types):
        """None when every live peer already routes *types* here; else a Deferred that
        fires once they all acknowledged them (or the timeout ran out)."""
        cluster = self.cluster
        types = frozenset(types)
        if cluster is None or not types or (cluster.synced and self._covered(types)):
            return None
        self._holding.update(types)  # kept in our partition while we wait
        waiting = cluster.when_synced()
        waiting.addCallback(lambda _: self._confirm(types))

        def release(result):
            self._holding.subtract(types)
            self._holding = +self._holding  # drop the zero counts
            return result

        return waiting.addBoth(release)

    def _covered(self, types):
        if not types <= self.sets.local_members():
            return False
        needed = max(self._added_at[event_type] for event_type in types)
        return not self._lagging(needed)

    def _lagging(self, version):
        """The live peers that have not acknowledged *version* of our partition."""
        return [member for member in self.cluster.live_peers()
                if not self._has(self._acked, member, version)]

    @staticmethod
    def _has(versions, member, version):
        """Whether *versions* (name -> (boot, version)) holds *version* for this life of
        *member* (a restarted member starts from nothing)."""
        boot, held = versions.get(member.name, (None, -1))
        return boot == member.boot and held >= version

    def _confirm(self, types):
        if self.cluster is None:
            return None  # stopped meanwhile
        if not types <= self.sets.local_members():
            self.refresh()
        needed = max(self._added_at[event_type] for event_type in types)
        lagging = self._lagging(needed)
        if not lagging:
            return None
        version = self.sets.local_version()
        late = [member for member in lagging if not self._has(self._sent, member, version)]
        if late:  # a peer that joined since our last change has not acknowledged us yet
            self._push(late)
        wait = next((wait for wait in self._waits if wait.version == needed), None)
        if wait is None:
            wait = _Wait(needed, {member.name for member in lagging}, set(types))
            wait.timeout = self.cluster.clock.callLater(self._timeout, self._timed_out, wait)
            self._waits.append(wait)
        wait.types |= types
        wait.peers |= {member.name for member in lagging}  # a peer may have joined since
        confirmed = defer.Deferred()
        wait.deferreds.append(confirmed)
        return confirmed

    def _timed_out(self, wait):
        wait.timeout = None
        self.log.warn("Cluster peers {peers} did not acknowledge interest in {types} within"
                      " {timeout} s; confirming anyway", peers=", ".join(sorted(wait.peers)),
                      types=", ".join(sorted(wait.types)), timeout=self._timeout)
        self._finish(wait)

    def _finish(self, wait):
        if wait in self._waits:
            self._waits.remove(wait)
        if wait.timeout is not None and wait.timeout.active():
            wait.timeout.cancel()
        wait.timeout = None
        deferreds, wait.deferreds = wait.deferreds, []
        for confirmed in deferreds:
            confirmed.callback(None)

    def _settle(self, name, version=None):
        """*name* acknowledged *version* (None: it is gone); fire the waits it completes."""
        for wait in list(self._waits):
            if name in wait.peers and (version is None or version >= wait.version):
                wait.peers.discard(name)
                if not wait.peers:
                    self._finish(wait)

    # -- pushing and acknowledging ----------------------------------------------------

    def refresh(self):
        """Push a change of our partition to every live peer (alive or suspect)."""
        before = self.sets.local_members()
        delta = self.sets.set_local(self._wanted_types())
        if delta is None:
            return None
        version = self.sets.local_version()
        after = self.sets.local_members()
        for event_type in after - before:
            self._added_at[event_type] = version
        for event_type in before - after:
            del self._added_at[event_type]
        self._push(self.cluster.live_peers(), delta)
        return delta

    def _push(self, members, delta=None):
        version = self.sets.local_version()
        for member in members:
            self._sent[member.name] = (member.boot, version)
        self.cluster.send_many([member.address for member in members], {
            "type": self.message_type,
            "partitions": delta or self.sets.delta(self.sets.owner)})

    def merge(self, state, address):
        """Take partitions from the peer at *address*; if they hold its own partition,
        acknowledge the version we now have (full state, sync and deltas alike)."""
        changed = super().merge(state, address)
        if address in state and self.cluster is not None:
            self.cluster.send(address, {"type": ACK, "version": self.sets.version_of(address)})
        return changed

    def _on_ack(self, address, message):
        member = self.cluster.member(address)
        version = int(message["version"])
        if member is None:
            return
        boot, acked = self._acked.get(member.name, (None, -1))
        if boot != member.boot or version > acked:
            self._acked[member.name] = (member.boot, version)
        self._settle(member.name, version)

    def member_gone(self, member):
        super().member_gone(member)
        self._acked.pop(member.name, None)
        self._sent.pop(member.name, None)
        self._settle(member.name)
