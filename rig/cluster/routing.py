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


@implementer(IClusterPart)
class EventRouter:
    log = Logger()

    def __init__(self, hub, interest, hold_limit=10000):
        self.hub = hub
        self.interest = interest
        self.cluster = None
        self._held = collections.deque()
        self._hold_limit = hold_limit

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
        for event in held:
            self.forward(event)

    def forward(self, event):
        """Send a locally published event once to each other node with interest in its type."""
        cluster = self.cluster
        if cluster is None:
            return
        if not cluster.synced:
            if len(self._held) == self._hold_limit:
                self.log.warn("Over {limit} events published while joining the cluster: the"
                              " oldest goes only to the peers known now", limit=self._hold_limit)
                self._route(cluster, self._held.popleft())
            self._held.append(event)
            return
        self._route(cluster, event)

    def _route(self, cluster, event):
        me = cluster.node_name
        addresses = []
        for owner in self.interest.owners_with(event.type):
            if owner == me:
                continue
            member = cluster.member(owner)
            if member is not None and member.state in (ALIVE, SUSPECT):
                addresses.append(member.address)
        if addresses:
            cluster.send_many(addresses, {"type": EVENT, "event": event.json.decode("utf-8")})

    def _on_event(self, address, message):
        try:
            event = parse_structured(message["event"].encode("utf-8"))
        except EventError as error:
            self.log.warn("Dropped a bad event from {address}: {error}", address=address,
                          error=str(error))
            return
        self.hub.stats.received["cluster"] += 1
        self.hub.publish_local(event)
