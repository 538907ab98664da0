"""The service tree: hub first, then the internal and inbound listeners (HTTP, then HTTPS).

Listeners start last and stop first (MultiService stops children in reverse),
and the hub closes every frontend connection on the way out. A stop is a
drain: stop accepting, tell systemd, leave the cluster, close WebSockets
(1001) and end SSE streams, and let requests in progress (proxied ones above
all) finish for up to ``SHUTDOWN_DRAIN_TIMEOUT`` seconds.
"""
from functools import partial

from twisted.application.service import MultiService, Service
from twisted.internet.defer import gatherResults, maybeDeferred, succeed
from twisted.logger import Logger

from rig.auth.authority import Authority
from rig.backplane.backplane import Backplane, Confirmations
from rig.backplane.brokers import NatsPubSub, RedisPubSub
from rig.cluster.calls import OwnerCalls, token_boot
from rig.cluster.interest import InterestReplica
from rig.cluster.membership import make_boot
from rig.cluster.node import ClusterNode
from rig.cluster.recovery import RemoteHistory, history_epoch
from rig.cluster.replicas import ApiReplica, BlacklistReplica, SessionsReplica
from rig.cluster.routing import EventRouter
from rig.connections.longpoll import poll_from_peer
from rig.connections.subscribe import put_from_peer
from rig.dashboard.page import Dashboard, load_assets
from rig.dashboard.sampler import DashboardSampler
from rig.dashboard.workers import DASHBOARD_CALL, VmDashboard
from rig.hub import Hub
from rig.hub.token import TokenCodec
from rig.listeners import server_endpoint, with_backlog
from rig.metrics.registry import build_metrics
from rig.metrics.workers import METRICS_CALL, VmMetrics
from rig.nats.client import NatsClient
from rig.nats.source import NatsSource
from rig.proxy.correlation import Correlations
from rig.proxy.forward import Forwarder
from rig.proxy.gateway import Proxy
from rig.proxy.nats_target import NatsTarget
from rig.proxy.redis_target import RedisTarget
from rig.proxy.store import ApiStore
from rig.proxy.targets import TargetPolicy, local_names, peer_hosts
from rig.proxy.upstream import UpstreamPool
from rig.recovery import History
from rig.streams.source import RedisSource
from rig.systemd import SystemdService
from rig.tls import load_server_options, tls_factory
from rig.tracing.config import build_tracing
from rig.twistedcompat import forget_sigterm
from rig.web.inbound import inbound_site
from rig.web.internal import internal_site
from rig.web.operators import beyond_loopback


def _address_of(host):
    """The ``by=`` of ``Forwarded``: HOST itself, without a blocking DNS lookup."""
    return "127.0.0.1" if host == "localhost" else host


def warn_if_open(settings):
    """RIG's internal API is open to anyone who reaches it: say so when that is the world."""
    if settings.api_auth_tokens or settings.api_https_client_ca:
        return
    if beyond_loopback(settings.api_listen):
        Logger(namespace="rig.service").warn(
            "The internal API ({listen}) is reachable beyond this machine and open to"
            " anyone: it can change proxy routes, kill sessions and publish events."
            " Bind API_HTTP_PORT to 127.0.0.1, or set API_AUTH_TOKENS"
            " (see README \"Securing a deployment\")", listen=settings.api_listen)


class ListenerService(Service):
    """Listens on a Twisted endpoint description; a bind error fails start-up at once.

    With a *drain_timeout*, stopping also drains the factory (a ``RigSite``):
    requests in progress may finish for that many seconds.
    """

    log = Logger()

    def __init__(self, reactor, description, factory, drain_timeout=None):
        self._reactor = reactor
        self.description = description
        self.factory = factory
        self.drain_timeout = drain_timeout
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
        endpoint = server_endpoint(self._reactor, self.description)
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
        stopped = maybeDeferred(port.stopListening)
        if self.drain_timeout is None:
            return stopped
        self.log.info("{name}: no longer accepting connections; requests in progress may "
                      "finish for {timeout} s", name=self.name, timeout=self.drain_timeout)
        started = self._reactor.seconds()
        drained = self.factory.drain(self._reactor, self.drain_timeout)
        drained.addCallback(self._drained, started)
        return gatherResults([stopped, drained], consumeErrors=True)

    def _drained(self, aborted, started):
        took = self._reactor.seconds() - started
        if aborted:
            self.log.warn("{name}: {count} connections still busy after the {timeout} s "
                          "drain were closed", name=self.name, count=aborted,
                          timeout=self.drain_timeout)
        else:
            self.log.info("{name}: drained in {seconds:.3f} s", name=self.name, seconds=took)


class HubService(Service):
    """Runs the hub's timers and closes its connections on shutdown.

    The stop waits (at most *close_timeout* seconds) for the WebSocket closing
    handshakes, so the 1001 close frames reach the clients before the process exits.
    """

    log = Logger()

    def __init__(self, hub, close_timeout=None):
        self.hub = hub
        self.close_timeout = close_timeout

    def startService(self):
        super().startService()
        self.hub.start()

    def stopService(self):
        super().stopService()
        self.log.info("Closing {count} frontend connections", count=len(self.hub.connections))
        closed = self.hub.close_all()
        self.hub.stop()
        if self.close_timeout is not None:
            closed.addTimeout(self.close_timeout, self.hub.reactor,
                              onTimeoutCancel=self._close_timed_out)
        return closed

    def _close_timed_out(self, _result, timeout):
        self.log.warn("WebSocket closing handshakes unfinished after {timeout} s", timeout=timeout)


class RigService(MultiService):
    """The whole gateway, built from settings with no I/O until started."""

    log = Logger()
    # what build() puts together, for the listeners, metrics and tests to reach
    settings = None
    store = None  # the API definitions
    redis = None  # the Redis source (REDIS_URL)
    nats = None  # the NATS client (NATS_SERVERS)
    nats_source = None  # and its event source
    backplane = None  # the Backplane (CLUSTER_BACKPLANE)
    cluster = None  # the ClusterNode (CLUSTER_PORT)
    interest = None  # its InterestReplica
    session_map = None  # its SessionsReplica
    owner_calls = None  # its OwnerCalls
    metrics = None
    systemd = None
    tracing = None
    upstream_pool = None  # the proxy's keep-alive connections to backends

    def __init__(self, hub):
        super().__init__()
        self.hub = hub

    def startService(self):
        super().startService()
        if self.systemd is None:
            return
        # every listener is bound synchronously above; a cluster node must also have
        # learnt its peers' interest before it takes part in the confirmation promise
        ready = self.cluster.when_synced() if self.cluster is not None else succeed(None)
        ready.addCallback(lambda _: self.running and self.systemd.ready(self._ready_status()))
        ready.addErrback(lambda failure: self.log.failure("reporting readiness", failure))

    def _ready_status(self):
        """What ``systemctl status`` shows: where the listeners are (ports may be 0 in config)."""
        parts = []
        for name in ("inbound", "internal"):
            address = self.address(name)
            if hasattr(address, "port"):
                parts.append(f"{name} on {address.host}:{address.port}")
            else:
                parts.append(f"{name} on {getattr(address, 'name', address)}")
        return "Ready: " + ", ".join(parts)

    def stopService(self):
        """Stop every child, then close the connections kept alive to backends, checkers
        and the JWKS endpoint (the drains have let every request finish by then); after
        a stop caused by SIGTERM, twistd then exits with status 0."""
        stopped = super().stopService()
        return stopped.addCallback(self._close_outbound).addCallback(self._forget_sigterm)

    def _close_outbound(self, result):
        if self.upstream_pool is not None:
            self.upstream_pool.close()
        closing = self.hub.auth.close_connections()
        return closing.addCallback(lambda _: result)

    def _forget_sigterm(self, result):
        forget_sigterm(self.hub.reactor)
        return result

    @classmethod
    def build(cls, settings, reactor, environ=None, swim_config=None, cluster_options=None):
        """The service tree; *environ* is read for ``proxy.use_env`` target hosts and for
        systemd's ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC``. *swim_config* and
        *cluster_options* (ClusterNode keywords such as ``join_timeout``) let tests
        run the cluster's timers faster."""
        node = f"rig@{settings.node_host}"
        # in a cluster, tokens name the member and its boot (set once it listens)
        boot = make_boot(reactor.seconds()) if settings.cluster_listen else None
        codec = TokenCodec.from_cookie(node, settings.node_cookie,
                                       boot_id=token_boot(boot) if boot else None)
        tracing, tracing_service = build_tracing(settings, reactor, node=node)
        hub = Hub(
            reactor,
            extractors=settings.extractors,
            codec=codec,
            max_connections_per_minute=settings.max_connections_per_minute,
            heartbeat_interval=settings.heartbeat_interval,
            send_queue_limit=settings.send_queue_limit,
            auth=Authority.from_settings(settings, reactor, tracing=tracing),
            history=History(reactor, max_events=settings.recovery_history_size,
                            max_age=settings.recovery_history_age,
                            # in a cluster, any node can tell whose position an SSE id is
                            epoch=history_epoch(boot) if boot else None),
        )
        service = cls(hub)
        service.settings = settings
        HubService(hub, close_timeout=settings.shutdown_drain_timeout).setServiceParent(service)
        service.tracing = tracing
        if tracing_service is not None:  # stopped after the listeners: the last spans go out
            tracing_service.setName("tracing")
            tracing_service.setServiceParent(service)
        store = ApiStore(reactor, node)
        for api in settings.proxy_config:
            store.create(api)
        correlations = Correlations(reactor, TokenCodec.from_cookie(
            node, settings.node_cookie, purpose=b"correlation", boot_id=codec.boot_id))
        policy = TargetPolicy(
            env_allowed=settings.proxy_use_env_allowed, environ=dict(environ or {}),
            own_ports=service.listener_ports, internal_ports=service.internal_ports,
            peer_hosts=service.peer_hosts,
            local_names=local_names(settings.host, settings.node_host),
            nats_enabled=bool(settings.nats_servers))
        service.store = store
        service.cluster = service.interest = service.session_map = None
        if settings.cluster_listen:
            cls._make_cluster(service, settings, reactor, boot=boot, correlations=correlations,
                              swim_config=swim_config, options=cluster_options or {})
        service.redis = redis_target = None
        if settings.redis_url is not None:
            service.redis = RedisSource(
                reactor, hub, settings.redis_url, streams=settings.redis_source_streams,
                group=settings.redis_consumer_group,
                response_stream=settings.proxy_redis_response_stream,
                correlations=correlations,
                # entries wait in the group (for other nodes) until this one knows its peers
                ready=service.cluster.when_synced if service.cluster is not None else None,
                tracing=tracing)
            redis_target = RedisTarget(
                service.redis, correlations, cors=settings.cors.encode("utf-8"),
                timeout=settings.proxy_redis_response_timeout)
            service.redis.setName("redis")
            service.redis.setServiceParent(service)
        nats_target = cls._make_nats(service, settings, reactor, tracing=tracing, node=node)
        cls._add_cluster_services(service)
        service.upstream_pool = UpstreamPool(reactor)
        proxy = Proxy(
            store=store,
            forwarder=Forwarder(reactor, service.upstream_pool,
                                recv_timeout=settings.proxy_recv_timeout,
                                by_address=_address_of(settings.host), policy=policy),
            correlations=correlations, validator=hub.auth.validator,
            cors=settings.cors.encode("utf-8"), request_log="console" in settings.request_log,
            async_timeout=settings.proxy_http_async_response_timeout, clock=reactor,
            redis_target=redis_target, nats_target=nats_target, tracing=tracing,
        )
        service.metrics = build_metrics(
            reactor, enabled=settings.prometheus_metrics_enabled, hub=hub,
            proxy_stats=proxy.stats, redis=service.redis, nats=service.nats_source,
            cluster=service.cluster, backplane=service.backplane,
            span_processors=tracing_service.processors if tracing_service is not None else ())
        if settings.worker_index is not None and service.cluster is not None:
            # one worker of several: a scrape reports every worker of this machine
            service.metrics = VmMetrics(service.metrics, service.owner_calls,
                                        settings.worker_index, settings.worker_siblings)
            service.owner_calls.register(METRICS_CALL, service.metrics.own_exposition)
        dashboard = cls._make_dashboard(service, settings, reactor, proxy)
        # just before the listeners: stopped right after them, before the cluster leaves
        service.systemd = SystemdService.from_environ(reactor, environ or {})
        service.systemd.setName("systemd")
        service.systemd.setServiceParent(service)
        backlog = settings.listen_backlog
        internal = ListenerService(reactor, with_backlog(settings.api_listen, backlog),
                                   internal_site(hub, settings, store, correlations,
                                                 service.metrics, cluster=service.cluster,
                                                 redis=service.redis, nats=service.nats,
                                                 backplane=service.backplane,
                                                 target_policy=policy,
                                                 dashboard=dashboard),
                                   drain_timeout=settings.shutdown_drain_timeout)
        internal.setName("internal")
        internal.setServiceParent(service)
        inbound = ListenerService(reactor, with_backlog(settings.inbound_listen, backlog),
                                  inbound_site(hub, settings, proxy),
                                  drain_timeout=settings.shutdown_drain_timeout)
        inbound.setName("inbound")
        inbound.setServiceParent(service)
        cls._add_https(service, settings, reactor)
        if settings.worker_index is None:  # a supervisor warns once for all its workers
            warn_if_open(settings)
        return service

    @classmethod
    def _make_cluster(cls, service, settings, reactor, *, boot, correlations, swim_config,
                      options):
        """The cluster node and what it carries; the hub, the correlations and the
        token codecs are wired to it here, and nowhere else."""
        hub = service.hub
        interest = InterestReplica(hub, timeout=settings.cluster_interest_timeout)
        session_map = SessionsReplica(hub)
        backplane = cls._make_backplane(service, settings, reactor)
        router = EventRouter(hub, interest, backplane=backplane)
        calls = OwnerCalls(reactor)
        calls.register("put-subscriptions", partial(put_from_peer, hub))
        calls.register("poll", partial(poll_from_peer, hub))
        calls.register("async-response", correlations.answer_from_peer)
        remote_history = RemoteHistory(hub.history, calls)
        hub.join_cluster(forward=router.forward, calls=calls,
                         interest=interest if backplane is None
                         else Confirmations(interest, backplane),
                         remote_history=remote_history)
        correlations.join_cluster(calls)
        service.cluster = ClusterNode(
            reactor, cookie=settings.node_cookie,
            listen=with_backlog(settings.cluster_listen, settings.listen_backlog),
            node_host=settings.node_host, boot=boot, seeds=settings.cluster_seeds,
            dns_name=settings.dns_name if settings.discovery_type == "dns" else None,
            tls_ca=settings.cluster_tls_ca, swim_config=swim_config,
            parts=[interest, session_map, BlacklistReplica(hub.auth.blacklist),
                   ApiReplica(service.store), router, calls, remote_history,
                   *([backplane.replica] if backplane is not None else [])],
            named=[hub.codec, correlations.codec], **options,
        )
        service.interest, service.session_map, service.owner_calls = interest, session_map, calls

    @classmethod
    def _add_cluster_services(cls, service):
        """The cluster node, then the backplane (stopped in the reverse order)."""
        if service.cluster is not None:
            service.cluster.setName("cluster")
            service.cluster.setServiceParent(service)
        if service.backplane is not None:
            if isinstance(service.backplane.pubsub, NatsPubSub):
                service.backplane.pubsub.client.setServiceParent(service)
            service.backplane.setServiceParent(service)

    @classmethod
    def _make_backplane(cls, service, settings, reactor):
        """The backplane (CLUSTER_BACKPLANE), or None: the mesh carries the events. Its
        service is started after the cluster's, so it stops first (what the broker did
        not acknowledge still goes over the links)."""
        if not settings.cluster_backplane:
            return None
        kind, address = settings.cluster_backplane
        if kind == "redis":
            def pubsub(on_message):
                return RedisPubSub(reactor, address, on_message)
        else:
            client = NatsClient(reactor, address, name=f"txrig backplane {settings.node_host}")
            client.setName("backplane_nats")

            def pubsub(on_message):
                return NatsPubSub(reactor, client, on_message)

        service.backplane = Backplane(
            reactor, service.hub, pubsub, prefix=settings.cluster_backplane_prefix,
            epoch=service.hub.history.epoch, cookie=settings.node_cookie,
            confirm_timeout=settings.cluster_interest_timeout)
        service.backplane.setName("backplane")
        return service.backplane

    @classmethod
    def _make_nats(cls, service, settings, reactor, *, tracing, node):
        """The NATS client, its event source and the proxy's ``nats`` target (None
        when NATS_SERVERS is empty)."""
        if not settings.nats_servers:
            return None
        service.nats = NatsClient(reactor, settings.nats_servers, name=f"txrig {node}")
        service.nats.setName("nats")
        service.nats.setServiceParent(service)
        service.nats_source = NatsSource(
            reactor, service.hub, service.nats, topics=settings.nats_source_topics,
            queue_group=settings.nats_queue_group,
            # messages go to other nodes of the group until this one knows its peers
            ready=service.cluster.when_synced if service.cluster is not None else None,
            tracing=tracing)
        service.nats_source.setName("nats_source")
        service.nats_source.setServiceParent(service)
        return NatsTarget(service.nats, cors=settings.cors.encode("utf-8"),
                          timeout=settings.proxy_nats_response_timeout)

    @classmethod
    def _make_dashboard(cls, service, settings, reactor, proxy):
        """The dashboard's sampler (a child service) and routes; None when disabled."""
        if not settings.dashboard_enabled:
            return None
        sampler = DashboardSampler(reactor, service.hub, proxy.stats, redis=service.redis,
                                   cluster=service.cluster, worker=settings.worker_index)
        sampler.setName("dashboard")
        sampler.setServiceParent(service)
        figures = sampler
        if settings.worker_index is not None and service.owner_calls is not None:
            # one worker of several: the page shows the sum of every worker of this machine
            figures = VmDashboard(sampler, service.owner_calls, settings.worker_siblings)
            service.owner_calls.register(DASHBOARD_CALL, figures.own_snapshot)
        return Dashboard(figures, load_assets())

    @classmethod
    def _add_https(cls, service, settings, reactor):
        """The same two sites over TLS (spec 1.1), or a warning that HTTPS is off.

        The settings check already loaded the files, so a failure here means
        they changed in between; the context is built now, never per connection.
        """
        if not (settings.https_certfile and settings.https_keyfile):
            cls.log.warn("HTTPS is disabled: set HTTPS_CERTFILE and HTTPS_KEYFILE to enable it")
            return
        options = load_server_options(settings.https_certfile, settings.https_keyfile,
                                      settings.https_keyfile_pass)
        internal_options = options
        if settings.api_https_client_ca:  # mutual TLS: operators present a certificate
            internal_options = load_server_options(
                settings.https_certfile, settings.https_keyfile, settings.https_keyfile_pass,
                client_ca=settings.api_https_client_ca)
        for name, plain, description, tls in (
                ("internal_https", "internal", settings.api_https_listen, internal_options),
                ("inbound_https", "inbound", settings.inbound_https_listen, options)):
            site = service.getServiceNamed(plain).factory
            listener = ListenerService(reactor, with_backlog(description, settings.listen_backlog),
                                       tls_factory(tls, site, reactor))
            listener.setName(name)
            listener.setServiceParent(service)

    def listener_ports(self):
        """``{port: listener name}`` of the bound TCP listeners (what no API may target)."""
        ports = {}
        for service in self:
            port = getattr(service, "port", None)
            if isinstance(service, ListenerService) and port is not None:
                address = port.getHost()
                if hasattr(address, "port"):
                    ports[address.port] = service.name
        return ports

    def peer_hosts(self):
        return peer_hosts(self.cluster)

    def internal_ports(self):
        """The ports of the internal listeners (a cluster peer's are taken to be the same)."""
        return {port for port, name in self.listener_ports().items()
                if name.startswith("internal")}

    def address(self, name):
        """The bound address of listener *name* (``inbound``, ``internal`` or ``*_https``)."""
        return self.getServiceNamed(name).port.getHost()
