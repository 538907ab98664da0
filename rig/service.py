"""The service tree: hub first, then the internal and inbound listeners.

Listeners start last and stop first (MultiService stops children in reverse),
and the hub closes every frontend connection on the way out.
"""
from twisted.application.service import MultiService, Service
from twisted.internet.defer import maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

from rig.auth.authority import Authority
from rig.cluster.node import ClusterNode
from rig.connections.token import TokenCodec
from rig.hub import Hub
from rig.metrics.registry import build_metrics
from rig.proxy.correlation import Correlations
from rig.proxy.forward import Forwarder
from rig.proxy.gateway import Proxy
from rig.proxy.pool import proxy_agent
from rig.proxy.redis_target import RedisTarget
from rig.proxy.store import ApiStore
from rig.streams.source import RedisSource
from rig.web.inbound import inbound_site
from rig.web.internal import internal_site


def _address_of(host):
    """The ``by=`` of ``Forwarded``: HOST itself, without a blocking DNS lookup."""
    return "127.0.0.1" if host == "localhost" else host


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
    def build(cls, settings, reactor, environ=None, swim_config=None):
        """The service tree; *environ* is only read for ``proxy.use_env`` target hosts."""
        node = f"rig@{settings.node_host}"
        codec = TokenCodec.from_cookie(node, settings.node_cookie)
        hub = Hub(
            reactor,
            extractors=settings.extractors,
            codec=codec,
            max_connections_per_minute=settings.max_connections_per_minute,
            heartbeat_interval=settings.heartbeat_interval,
            send_queue_limit=settings.send_queue_limit,
            auth=Authority.from_settings(settings, reactor),
        )
        service = cls(hub)
        service.settings = settings
        HubService(hub).setServiceParent(service)
        store = ApiStore(reactor, node)
        for api in settings.proxy_config:
            store.create(api)
        correlations = Correlations(reactor, TokenCodec.from_cookie(
            node, settings.node_cookie, purpose=b"correlation", boot_id=codec.boot_id))
        proxy = Proxy(
            store=store,
            forwarder=Forwarder(reactor, proxy_agent(reactor),
                                recv_timeout=settings.proxy_recv_timeout,
                                by_address=_address_of(settings.host),
                                environ=dict(environ or {})),
            correlations=correlations, validator=hub.auth.validator,
            cors=settings.cors.encode("utf-8"), request_log="console" in settings.request_log,
            async_timeout=settings.proxy_http_async_response_timeout, clock=reactor,
        )
        service.store = store
        service.redis = None
        if settings.redis_url is not None:
            service.redis = RedisSource(
                reactor, hub, settings.redis_url, streams=settings.redis_source_streams,
                group=settings.redis_consumer_group,
                response_stream=settings.proxy_redis_response_stream,
                correlations=correlations)
            proxy.redis_target = RedisTarget(
                service.redis, correlations, cors_headers=proxy._cors_headers,
                timeout=settings.proxy_redis_response_timeout)
            hub.redis = service.redis
            service.redis.setName("redis")
            service.redis.setServiceParent(service)
        service.cluster = None
        if settings.cluster_listen:
            service.cluster = ClusterNode(
                reactor, hub, store, cookie=settings.node_cookie,
                listen=settings.cluster_listen, node_host=settings.node_host,
                seeds=settings.cluster_seeds, swim_config=swim_config,
                dns_name=settings.dns_name if settings.discovery_type == "dns" else None,
                tls_ca=settings.cluster_tls_ca,
                correlations=correlations,
            )
            service.cluster.setName("cluster")
            service.cluster.setServiceParent(service)
        service.metrics = build_metrics(
            reactor, enabled=settings.prometheus_metrics_enabled, hub=hub,
            proxy_stats=proxy.stats, redis=service.redis, cluster=service.cluster)
        internal = ListenerService(reactor, settings.api_listen, internal_site(
            hub, settings, store, correlations, service.metrics))
        internal.setName("internal")
        internal.setServiceParent(service)
        inbound = ListenerService(reactor, settings.inbound_listen,
                                  inbound_site(hub, settings, proxy))
        inbound.setName("inbound")
        inbound.setServiceParent(service)
        return service

    def address(self, name):
        """The bound address of listener *name* (``inbound`` or ``internal``)."""
        return self.getServiceNamed(name).port.getHost()
