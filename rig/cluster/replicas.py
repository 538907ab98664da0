"""The replicated structures of the cluster, one delegate each.

- :class:`SessionsReplica`: which sessions each node holds connections for
  (owner-partitioned, republished by the owner every refresh interval);
- :class:`BlacklistReplica`: the session blacklist (a max-register map; a
  session arriving from a peer kills the matching local connections);
- :class:`ApiReplica`: the API definitions (an LWW map with tombstones).

Each sends its own deltas at once and takes part in the node's full-state and
anti-entropy exchanges (:class:`~rig.cluster.delegate.IReplicated`). The
interest in event types has a delegate of its own (:mod:`rig.cluster.interest`).
"""
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from rig.cluster.delegate import IReplicated, state_hash
from rig.cluster.partitioned import PartitionedSets


@implementer(IReplicated)
class PartitionedReplica:
    """An owner-partitioned set that this node republishes when its part changes.

    *local* returns this node's current members; it is read every *interval*
    seconds (and by :meth:`refresh`), and only a change is sent.
    """

    log = Logger()
    key = None  # set by subclasses

    def __init__(self, local, interval=0.5):
        self._local = local
        self._interval = interval
        self.sets = None
        self.cluster = None
        self._loop = None

    @property
    def message_type(self):
        return f"rig.{self.key}"

    def attach(self, cluster):
        self.cluster = cluster
        self.sets = PartitionedSets(cluster.node_name)
        cluster.handle(self.message_type, self._on_delta)
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = cluster.clock
        self._loop.start(self._interval, now=False).addErrback(
            lambda failure: self.log.failure("{key} refresh loop died", failure, key=self.key))

    def detach(self):
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def refresh(self):
        """Send what changed in this node's partition to every alive peer."""
        delta = self.sets.set_local(self._local())
        if delta is not None:
            self.cluster.broadcast({"type": self.message_type, "partitions": delta})
        return delta

    def owners_with(self, member):
        """The nodes whose partition holds *member*; none before the node has a name."""
        return self.sets.owners_with(member) if self.sets is not None else []

    def _on_delta(self, address, message):
        self.merge(message["partitions"], address)

    # -- IReplicated -----------------------------------------------------------

    def full_state(self):
        return self.sets.newer_than({})

    def digest(self):
        return self.sets.digest()

    def missing(self, digest):
        return self.sets.newer_than(_versions(digest or {})) or None

    def merge(self, state, address):
        return self.sets.merge(_partitions(state))

    def member_gone(self, member):
        self.sets.drop(member.name)


class SessionsReplica(PartitionedReplica):
    """Which sessions each node holds live connections for."""

    key = "sessions"

    def __init__(self, hub, interval=0.5):
        super().__init__(lambda: hub.sessions, interval)

    def describe(self):
        return {owner: len(sessions) for owner, (_, sessions) in self.sets.snapshot().items()}


@implementer(IReplicated)
class WholeMapReplica:
    """A map small enough to send whole: its digest is a hash, and a peer whose
    hash differs gets all of it. A local write goes to every alive peer at once
    as ``{"type": "rig.<key>", <field>: {key: value}}``."""

    key = field = None  # set by subclasses

    def __init__(self):
        self.cluster = None

    def attach(self, cluster):
        self.cluster = cluster
        cluster.handle(f"rig.{self.key}", lambda address, message: self.merge(
            message[self.field], address))

    def detach(self):
        self.cluster = None

    def snapshot(self):
        raise NotImplementedError

    def _send(self, entries):
        if self.cluster is not None:
            self.cluster.broadcast({"type": f"rig.{self.key}", self.field: entries})

    def full_state(self):
        return self.snapshot()

    def digest(self):
        return state_hash(self.snapshot())

    def missing(self, digest):
        snapshot = self.snapshot()
        return snapshot if digest != state_hash(snapshot) else None

    def member_gone(self, member):
        pass  # entries are not owned by a node: they expire, or outlive their writer


class BlacklistReplica(WholeMapReplica):
    """The session blacklist: local additions go to every peer at once."""

    key, field = "blacklist", "entries"

    def __init__(self, blacklist):
        super().__init__()
        self.blacklist = blacklist
        self._merging = False
        blacklist.on_add(self._added)

    def snapshot(self):
        return self.blacklist.snapshot()

    def _added(self, session):
        if self._merging:
            return  # a peer's entry is not echoed back to the cluster
        expires_at = self.blacklist.expires_at(session)
        if expires_at is not None:
            self._send({session: expires_at})

    def merge(self, state, address):
        entries = {str(session): float(expiry) for session, expiry in state.items()}
        self._merging = True
        try:
            self.blacklist.merge(entries)
        finally:
            self._merging = False


class ApiReplica(WholeMapReplica):
    """The API definitions: a local write goes to every peer at once."""

    key, field = "apis", "apis"

    def __init__(self, store):
        super().__init__()
        self.store = store
        store.on_change.append(self._changed)

    def snapshot(self):
        return self.store.snapshot()

    def _changed(self, api):
        """Only local writes reach here: ``ApiStore.merge`` does not call its listeners."""
        self._send({api["id"]: api})

    def merge(self, state, address):
        self.store.merge({str(key): dict(api) for key, api in state.items()})


def _versions(raw):
    return {str(owner): int(version) for owner, version in raw.items()}


def _partitions(raw):
    return {str(owner): (int(version), [str(m) for m in members])
            for owner, (version, members) in raw.items()}
