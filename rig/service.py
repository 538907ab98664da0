"""The service tree: hub first, then the internal and inbound listeners.

Listeners start last and stop first (MultiService stops children in reverse),
and the hub closes every frontend connection on the way out.
"""
from twisted.application.service import MultiService, Service
from twisted.internet.defer import maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from rig.auth.authority import Authority
from rig.connections.token import TokenCodec
from rig.hub import Hub
from rig.web.inbound import inbound_site
from rig.web.internal import internal_site


class ListenerService(Service):
    """Listens on a Twisted endpoint description; a bind error fails start-up at once."""

    log = Logger()

    def __init__(self, reactor, description, factory):
        self._reactor = reactor
        self.description = description
        self.factory = factory
        self.port = None

    def privilegedStartService(self):
        super().privilegedStartService()
        self._listen()

    def startService(self):
        super().startService()
        self._listen()

    def _listen(self):
        if self.port is not None:
            return
        outcome = []
        endpoint = serverFromString(self._reactor, self.description)
        endpoint.listen(self.factory).addBoth(outcome.append)
        if not outcome:
            raise RuntimeError(f"listening on {self.description} did not complete at once")
        if not hasattr(outcome[0], "getHost"):
            outcome[0].raiseException()
        self.port = outcome[0]
        self.log.info("{name} listening on {address}", name=self.name, address=self.port.getHost())

    def stopService(self):
        super().stopService()
        port, self.port = self.port, None
        if port is None:
            return None
        return maybeDeferred(port.stopListening)


class HubService(Service):
    """Runs the hub's timers and closes its connections on shutdown."""

    def __init__(self, hub):
        self.hub = hub

    def startService(self):
        super().startService()
        self.hub.start()

    def stopService(self):
        super().stopService()
        self.hub.close_all()
        self.hub.stop()


class RigService(MultiService):
    """The whole gateway, built from settings with no I/O until started."""

    def __init__(self, hub):
        super().__init__()
        self.hub = hub

    @classmethod
    def build(cls, settings, reactor):
        node = f"rig@{settings.node_host}"
        hub = Hub(
            reactor,
            extractors=settings.extractors,
            codec=TokenCodec.from_cookie(node, settings.node_cookie),
            max_connections_per_minute=settings.max_connections_per_minute,
            heartbeat_interval=settings.heartbeat_interval,
            send_queue_limit=settings.send_queue_limit,
            auth=Authority.from_settings(settings, reactor),
        )
        service = cls(hub)
        service.settings = settings
        HubService(hub).setServiceParent(service)
        internal = ListenerService(reactor, settings.api_listen, internal_site(hub, settings))
        internal.setName("internal")
        internal.setServiceParent(service)
        inbound = ListenerService(reactor, settings.inbound_listen, inbound_site(hub, settings))
        inbound.setName("inbound")
        inbound.setServiceParent(service)
        return service

    def address(self, name):
        """The bound address of listener *name* (``inbound`` or ``internal``)."""
        return self.getServiceNamed(name).port.getHost()
