"""Events between nodes: a locally published event goes once to each node with interest.

The event is encoded once, whatever the number of nodes it goes to; the
receiving node matches it against its own connections only.
"""
from twisted.logger import Logger
from zope.interface import implementer

from rig.cluster.delegate import IClusterPart
from rig.cluster.membership import ALIVE, SUSPECT
from rig.events import EventError, parse_structured

EVENT = "rig.event"


@implementer(IClusterPart)
class EventRouter:
    log = Logger()

    def __init__(self, hub, interest):
        self.hub = hub
        self.interest = interest
        self.cluster = None

    def attach(self, cluster):
        self.cluster = cluster
        cluster.handle(EVENT, self._on_event)

    def detach(self):
        self.cluster = None

    def forward(self, event):
        """Send a locally published event once to each other node with interest in its type."""
        cluster = self.cluster
        if cluster is None:
            return
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
