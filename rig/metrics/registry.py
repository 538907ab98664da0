"""The service's own metric registry: which collectors it holds, and what a scrape awaits."""
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from rig.metrics.collectors import (
    BackplaneCollector,
    BlacklistCollector,
    ClusterCollector,
    ConsumedCollector,
    HubCollector,
    ProxyCollector,
    RedisCollector,
    TracingCollector,
)


class Metrics:
    """A ``CollectorRegistry`` owned by one service (never the global default one, so
    several gateways in one process stay apart) and the refreshes a scrape awaits."""

    def __init__(self, registry, refreshers=()):
        self.registry = registry
        self._refreshers = tuple(refreshers)

    async def refresh(self):
        """Fetch what needs a round trip (Redis lag) before the registry renders."""
        for refresh in self._refreshers:
            await refresh()


def build_metrics(clock, *, enabled, hub, proxy_stats, redis=None, nats=None, cluster=None,
                  backplane=None, span_processors=()):
    """The registry for ``GET /metrics``; with *enabled* false it stays empty (the
    endpoint answers an empty exposition, and no scrape walks the connections)."""
    registry = CollectorRegistry()
    if not enabled:
        return Metrics(registry)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(HubCollector(hub))
    registry.register(BlacklistCollector(hub.auth.blacklist))
    registry.register(ProxyCollector(proxy_stats))
    refreshers = []
    sources = [(name, source.stream_stats) for name, source in (("redis", redis), ("nats", nats))
               if source is not None]
    if sources:
        registry.register(ConsumedCollector(sources))
    if redis is not None:
        collector = RedisCollector(redis, clock)
        registry.register(collector)
        refreshers.append(collector.refresh)
    if cluster is not None:
        registry.register(ClusterCollector(cluster))
    if backplane is not None:
        registry.register(BackplaneCollector(backplane))
    if span_processors:
        registry.register(TracingCollector(span_processors))
    return Metrics(registry, refreshers)
