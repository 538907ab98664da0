"""Prometheus collectors: each reads one part of the gateway when ``/metrics`` is scraped.

Counters come from the plain integers in :mod:`rig.metrics.stats`; gauges
(connections, queued bytes, subscriptions, blacklist, members) are computed
from live state at scrape time, so nothing is maintained incrementally on
the delivery path. Names are RIG's (spec Part B 10.1) where RIG has one.
"""
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger

from rig.cluster.membership import STATES
from rig.hub.outbox import buffered_bytes
from rig.metrics.stats import EVENT_SOURCES, RECOVERY_OUTCOMES, TRANSPORTS

BLACKLIST_NAME = "SessionBlacklist"
SOCKET_TRANSPORTS = ("ws", "sse")


def _histogram(family, labels, buckets):
    family.add_metric(labels, buckets.cumulative(), buckets.sum)


class HubCollector:
    """Connections, queued bytes, subscriptions, events in and frames out of one hub."""

    def __init__(self, hub):
        self._hub = hub

    def collect(self):
        hub = self._hub
        stats = hub.stats
        connections = dict.fromkeys(TRANSPORTS, 0)
        queued = dict.fromkeys(SOCKET_TRANSPORTS, 0)  # long polls buffer events, not bytes
        for connection in list(hub.connections.values()):
            kind = connection.kind
            connections[kind] = connections.get(kind, 0) + 1
            transport = getattr(connection, "transport", None)
            if transport is not None:
                queued[kind] = queued.get(kind, 0) + buffered_bytes(transport)
        family = GaugeMetricFamily("rig_connections", "Live frontend connections (long-poll:"
                                   " sessions) on this node.", labels=["transport"])
        for kind, count in connections.items():
            family.add_metric([kind], count)
        yield family
        family = GaugeMetricFamily(
            "rig_queued_bytes", "Bytes written to live connections but not yet sent"
            " (SEND_QUEUE_LIMIT applies per connection).", labels=["transport"])
        for kind, count in queued.items():
            family.add_metric([kind], count)
        yield family
        yield GaugeMetricFamily(
            "rig_subscriptions_total", "Subscription rows (oneOf clauses) of this node's"
            " connections.", value=len(hub.index))
        family = CounterMetricFamily("rig_events_received", "Events published on this node,"
                                     " by where they came from.", labels=["source"])
        for source in EVENT_SOURCES:
            family.add_metric([source], stats.received[source])
        yield family
        yield CounterMetricFamily(
            "rig_deliveries", "Events handed to frontend connections (one per matching"
            " connection).", value=stats.deliveries)
        family = CounterMetricFamily(
            "rig_slow_clients", "Clients that could not keep up: WebSocket and SSE"
            " connections dropped over SEND_QUEUE_LIMIT, long-poll sessions that lost"
            " unread events.", labels=["transport"])
        for kind in TRANSPORTS:
            family.add_metric([kind], stats.slow_clients[kind])
        yield family
        family = CounterMetricFamily(
            "rig_recoveries", "Reconnects that asked for missed events (Last-Event-ID or"
            " lastEventId), by whether the history still covered them.", labels=["outcome"])
        for outcome in RECOVERY_OUTCOMES:
            family.add_metric([outcome], stats.recoveries[outcome])
        yield family
        yield CounterMetricFamily(
            "rig_replayed_events", "Missed events sent to reconnecting clients.",
            value=stats.replayed)
        yield GaugeMetricFamily(
            "rig_history_events", "Events held for recovery (RECOVERY_HISTORY_SIZE at most).",
            value=len(hub.history))


class BlacklistCollector:
    """The session blacklist as RIG's distributed-set gauges."""

    def __init__(self, blacklist):
        self._blacklist = blacklist

    def collect(self):
        family = GaugeMetricFamily("rig_distributed_set_items_total",
                                   "Records ever added to the set on this node.",
                                   labels=["name"])
        family.add_metric([BLACKLIST_NAME], self._blacklist.added)
        yield family
        family = GaugeMetricFamily("rig_distributed_set_items_current",
                                   "Records the set holds now (expired ones excluded).",
                                   labels=["name"])
        family.add_metric([BLACKLIST_NAME], len(self._blacklist))
        yield family


class ProxyCollector:
    """Proxied requests by RIG's labels, and how long they took."""

    def __init__(self, stats):
        self._stats = stats

    def collect(self):
        stats = self._stats
        family = CounterMetricFamily(
            "rig_proxy_requests", "Total count of requests through RIG proxy.",
            labels=["method", "path", "target", "response_from", "status"])
        for labels, count in list(stats.counts.items()):
            family.add_metric(list(labels), count)
        yield family
        family = HistogramMetricFamily(
            "rig_proxy_request_duration_seconds", "Time from a matched request to its"
            " response sent (body included), by target.", labels=["target"])
        for target, buckets in list(stats.durations.items()):
            _histogram(family, [target], buckets)
        yield family


class TracingCollector:
    """Spans per exporter: exported, failed (the collector refused or was down) and
    dropped (the queue was full)."""

    def __init__(self, processors):
        self._processors = processors

    def collect(self):
        family = CounterMetricFamily(
            "rig_tracing_spans", "Finished spans by exporter URL and outcome.",
            labels=["exporter", "outcome"])
        for processor in self._processors:
            for outcome, count in processor.counts.items():
                family.add_metric([processor.shown_url, outcome], count)
        yield family


class ConsumedCollector:
    """RIG's consumed-event metrics, per event source (``redis``, ``nats``) and topic."""

    def __init__(self, sources):
        self._sources = tuple(sources)  # (source name, {topic: StreamStats})

    def collect(self):
        consumed = CounterMetricFamily("rig_consumed_events", "Consumed events (successful"
                                       " and failed).", labels=["source", "topic"])
        failed = CounterMetricFamily("rig_consumed_events_failed", "Consumed events that"
                                     " failed processing.", labels=["source", "topic"])
        duration = HistogramMetricFamily(
            "rig_consumed_event_processing_duration_milliseconds",
            "Time to process a consumed event, in milliseconds.", labels=["source", "topic"])
        for source, topics in self._sources:
            for topic, stats in topics.items():
                labels = [source, topic]
                consumed.add_metric(labels, stats.consumed)
                failed.add_metric(labels, stats.failed)
                _histogram(duration, labels, stats.duration_ms)
        yield consumed
        yield failed
        yield duration


class RedisCollector:
    """The Redis consumer group's lag.

    The lag needs a round trip to Redis, so :meth:`refresh` fetches it before
    each scrape renders (``collect`` itself must not wait).
    """

    log = Logger()

    def __init__(self, source, clock, timeout=2.0):
        self._source = source
        self._clock = clock
        self._timeout = timeout
        self._lag = {}

    @property
    def lag(self):
        """``{stream: entries}`` as last fetched (empty when Redis did not answer)."""
        return dict(self._lag)

    async def refresh(self):
        """Ask Redis for the lag; a failure leaves the gauge out rather than stale."""
        asking = ensureDeferred(self._source.consumer_lag())
        asking.addTimeout(self._timeout, self._clock)
        try:
            self._lag = await asking
        except Exception as error:
            self._lag = {}
            self.log.debug("No Redis consumer lag for /metrics: {error}",
                           error=str(error) or type(error).__name__)

    def collect(self):
        lag = GaugeMetricFamily("rig_redis_consumer_lag", "Entries of the stream the consumer"
                                " group has not read yet (XINFO GROUPS lag).",
                                labels=["stream"])
        for stream, entries in self._lag.items():
            lag.add_metric([stream], entries)
        yield lag


class BackplaneCollector:
    """The backplane: whether this node receives from the broker, and its messages."""

    def __init__(self, backplane):
        self._backplane = backplane

    def collect(self):
        backplane = self._backplane
        up = GaugeMetricFamily("rig_backplane_up", "1 while the backplane broker carries this"
                               " node's events, 0 while the mesh does.")
        up.add_metric([], 1 if backplane.up else 0)
        yield up
        messages = CounterMetricFamily(
            "rig_backplane_messages", "Backplane messages by what happened: published,"
            " received, echoes (this node's own, dropped), resent (over the mesh), forged"
            " (without a valid NODE_COOKIE tag, dropped).",
            labels=["outcome"])
        for outcome, count in backplane.counts.items():
            messages.add_metric([outcome], count)
        yield messages


class ClusterCollector:
    """Cluster members as this node sees them, by SWIM state."""

    def __init__(self, cluster):
        self._cluster = cluster

    def collect(self):
        states = dict.fromkeys(STATES, 0)
        for member in self._cluster.members():
            states[member.state] = states.get(member.state, 0) + 1
        family = GaugeMetricFamily("rig_cluster_members", "Cluster members (this node"
                                   " included) by state.", labels=["state"])
        for state, count in states.items():
            family.add_metric([state], count)
        yield family
