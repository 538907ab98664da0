"""Events between nodes: a locally published event goes once to each node with interest.

The event is encoded once, whatever the number of nodes it goes to; the
receiving node matches it against its own connections only.

A node that has just started does not yet know every peer's interest (nor
every peer): the events published on it meanwhile are held (up to
*hold_limit*) and routed once it has synced, so that a peer's confirmed
subscriber does not miss them. Local delivery never waits.
"""
import collections

from twisted.logger import Logger
from zope.interface import implementer

from rig.cluster.delegate import IClusterPart
from rig.cluster.membership import ALIVE, SUSPECT
from rig.events import EventError, parse_structured

EVENT = "rig.event"


class RecentPositions:
    """The positions delivered lately, per sending node (a bounded number each, for a
    bounded number of senders: a restarted node is a new sender)."""

    def __init__(self, per_origin=8192, max_origins=256):
        self._per_origin = per_origin
        self._max_origins = max_origins
        self._seen = {}  # epoch -> {seq text: None}, in arrival order

    def first_time(self, position):
        """True the first time *position* (``b"<epoch>.<seq>"`` or text) is offered."""
        if isinstance(position, bytes):
            position = position.decode("ascii", "replace")
        epoch, _, seq = position.rpartition(".")
        seen = self._seen.get(epoch)
        if seen is None:
            if len(self._seen) >= self._max_origins:
                del self._seen[next(iter(self._seen))]
            seen = self._seen[epoch] = {}
        elif seq in seen:
            return False
        seen[seq] = None
        if len(seen) > self._per_origin:
            del seen[next(iter(seen))]
        return True


@implementer(IClusterPart)
class EventRouter:
    log = Logger()

    def __init__(self, hub, interest, hold_limit=10000, backplane=None):
        self.hub = hub
        self.interest = interest
        self.cluster = None
        self._held = collections.deque()
        self._hold_limit = hold_limit
        self.backplane = backplane  # CLUSTER_BACKPLANE: a broker carries the events
        if backplane is not None:
            backplane.router = self
        # with a backplane an event may come both ways: each position is delivered once
        self.recent = RecentPositions() if backplane is not None else None
        self.link_sends = 0  # event messages sent over the cluster links

    def attach(self, cluster):
        self.cluster = cluster
        cluster.handle(EVENT, self._on_event)
        cluster.when_synced().addCallback(self._synced)

    def detach(self):
        self.cluster = None
        self._held.clear()

    def _synced(self, _):
        held, self._held = self._held, collections.deque()
        if held:
            self.log.info("Routing {count} events published while joining the cluster",
                          count=len(held))
        for event, position in held:
            self.forward(event, position)

    def forward(self, event, position):
        """Send a locally published event once to each other node with interest in its
        type: through the backplane, if there is one and it is up, else (and to the nodes
        that do not receive from it) over the cluster links."""
        cluster = self.cluster
        if cluster is None:
            return
        if not cluster.synced:
            if len(self._held) == self._hold_limit:
                self.log.warn("Over {limit} events published while joining the cluster: the"
                              " oldest goes only to the peers known now", limit=self._hold_limit)
                self._route(cluster, *self._held.popleft())
            self._held.append((event, position))
            return
        self._route(cluster, event, position)

    def _route(self, cluster, event, position):
        backplane = self.backplane
        if backplane is not None and backplane.publish(event, position):
            self._send(cluster, event, position, skip=backplane.replica.on_broker())
        else:
            self._send(cluster, event, position)

    def route_mesh(self, event, position):
        """Send *event* over the links to every interested node (the backplane gave it
        back: the broker did not acknowledge it)."""
        if self.cluster is not None:
            self._send(self.cluster, event, position)

    def _send(self, cluster, event, position, skip=()):
        me = cluster.node_name
        addresses = []
        for owner in self.interest.owners_with(event.type):
            if owner == me or owner in skip:
                continue
            member = cluster.member(owner)
            if member is not None and member.state in (ALIVE, SUSPECT):
                addresses.append(member.address)
        if addresses:
            self.link_sends += len(addresses)
            cluster.send_many(addresses, {"type": EVENT, "event": event.json.decode("utf-8"),
                                          "position": position.decode("ascii")})

    def _on_event(self, address, message):
        self.receive(message["event"].encode("utf-8"), message.get("position"), address)

    def receive(self, body, position, origin="the backplane"):
        """An event another node published (over a link or through the backplane):
        delivered here unless its position was delivered already."""
        recent = self.recent
        if recent is not None and position is not None and not recent.first_time(position):
            return
        try:
            event = parse_structured(body)
        except EventError as error:
            self.log.warn("Dropped a bad event from {address}: {error}", address=origin,
                          error=str(error))
            return
        self.hub.stats.received["cluster"] += 1
        self.hub.publish_local(event)
