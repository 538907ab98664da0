"""Plain counters the gateway bumps as it works; Prometheus reads them at scrape time.

They are integers on small objects, not ``prometheus_client`` metrics, so the
delivery path pays one integer addition per published event, and this module
imports nothing from Prometheus (the code that counts does not depend on it).
"""
from bisect import bisect_left

EVENT_SOURCES = ("http", "redis", "nats", "cluster")
TRANSPORTS = ("ws", "sse", "longpoll")
RECOVERY_OUTCOMES = ("complete", "incomplete")

# RIG's buckets for rig_consumed_event_processing_duration_milliseconds
CONSUMED_MS_BUCKETS = (1, 2, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000)
# prometheus_client's default buckets, in seconds, for proxied requests
PROXY_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                         7.5, 10.0)
# distinct label sets kept for rig_proxy_requests_total; its path label is the
# request path (as in RIG), so random paths must not grow memory without bound
MAX_PROXY_SERIES = 10_000
OTHER_PATH = "(other)"


class Buckets:
    """A histogram's observations: a count per bucket (the last is +Inf) and a sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds):
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value):
        self.counts[bisect_left(self.bounds, value)] += 1  # a bound is "less or equal"
        self.sum += value

    @property
    def count(self):
        return sum(self.counts)

    def cumulative(self):
        """``[(upper bound text, count of values <= it)]`` as Prometheus exposes them."""
        total = 0
        rows = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            rows.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return rows


class HubStats:
    """What the hub and the transports count: events in, frames out, slow clients."""

    __slots__ = ("connections", "deliveries", "received", "recoveries", "replayed",
                 "slow_clients")

    def __init__(self):
        # live connections by transport, kept as they register and leave (never per
        # delivery), so the dashboard reads them each second without walking them all
        self.connections = dict.fromkeys(TRANSPORTS, 0)
        self.deliveries = 0  # frames handed to frontend connections
        self.received = dict.fromkeys(EVENT_SOURCES, 0)  # events published, by where from
        self.slow_clients = dict.fromkeys(TRANSPORTS, 0)
        self.recoveries = dict.fromkeys(RECOVERY_OUTCOMES, 0)  # reconnects with a last id
        self.replayed = 0  # missed events sent to reconnecting clients


class StreamStats:
    """One consumed Redis stream or NATS subject: events consumed and failed, processing
    time (ms)."""

    __slots__ = ("consumed", "duration_ms", "failed")

    def __init__(self):
        self.consumed = 0  # valid and invalid entries, as RIG counts consumed events
        self.failed = 0
        self.duration_ms = Buckets(CONSUMED_MS_BUCKETS)


class ProxyStats:
    """Proxied requests by RIG's labels, and their duration by target."""

    __slots__ = ("counts", "durations")

    def __init__(self):
        self.counts = {}  # (method, path, target, response_from, status) -> requests
        self.durations = {}  # target -> Buckets (seconds)

    def record(self, method, path, target, response_from, status, *, seconds=None):
        key = (method, path, target, response_from, status)
        if key not in self.counts and len(self.counts) >= MAX_PROXY_SERIES:
            key = (method, OTHER_PATH, target, response_from, status)
        self.counts[key] = self.counts.get(key, 0) + 1
        if seconds is not None:
            buckets = self.durations.get(target)
            if buckets is None:
                buckets = self.durations[target] = Buckets(PROXY_SECONDS_BUCKETS)
            buckets.observe(seconds)
