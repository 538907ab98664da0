"""The dashboard's figures: the gateway's counters read once a second, the last minutes kept.

Rates need two readings apart in time. Sampling on the server (rather than in
the page) means a page opened now already shows the last five minutes, and
any number of open pages cost one reading a second. A reading copies a few
integers the gateway keeps anyway (:class:`~rig.metrics.stats.HubStats`, the
proxy's histograms per target, the Redis streams' counters): it never walks
the connections, and the delivery path does no work for it.
"""
from collections import deque

from twisted.application.service import Service
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from rig.metrics.collectors import RedisCollector
from rig.metrics.stats import PROXY_SECONDS_BUCKETS

INTERVAL = 1.0  # seconds between samples
WINDOW = 300  # samples kept: five minutes of charts
LATENCY_WINDOW = 60  # seconds the proxy table's latency figures cover
LAG_EVERY = 5  # samples between two Redis lag queries (each is a round trip) once known
QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
MEMBER_FIELDS = ("name", "address", "state", "self", "incarnation", "last_seen_seconds_ago",
                 "link_up")


class Reading:
    """The cumulative counters at one moment (what two samples are differenced from)."""

    __slots__ = ("consumed", "deliveries", "proxy", "received", "slow_clients", "t")

    def __init__(self, t, hub, proxy_stats, redis):
        stats = hub.stats
        self.t = t
        self.received = dict(stats.received)
        self.deliveries = stats.deliveries
        self.slow_clients = dict(stats.slow_clients)
        # target -> (requests per bucket, seconds in total); a handful of targets
        self.proxy = {target: (tuple(buckets.counts), buckets.sum)
                      for target, buckets in list(proxy_stats.durations.items())}
        self.consumed = {} if redis is None else {
            stream: (stats.consumed, stats.failed) for stream, stats in redis.stream_stats.items()}


def _rate(now, before, seconds):
    return round(max(0, now - before) / seconds, 3)


def _rates(now, before, seconds):
    return {key: _rate(value, before.get(key, 0), seconds) for key, value in now.items()}


def _proxy_deltas(now, before):
    """``{target: (requests per bucket, seconds)}`` between two readings."""
    deltas = {}
    for target, (counts, total) in now.proxy.items():
        old_counts, old_total = before.proxy.get(target, ((0,) * len(counts), 0.0))
        deltas[target] = (tuple(new - old for new, old in zip(counts, old_counts, strict=True)),
                          total - old_total)
    return deltas


def quantile(counts, q, bounds=PROXY_SECONDS_BUCKETS):
    """The *q* quantile of a histogram (counts per bucket, the last one +Inf), interpolated
    inside its bucket as Prometheus's ``histogram_quantile`` does; None when empty."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index == len(bounds):  # beyond the last bound: all we can say is "over it"
                return bounds[-1]
            lower = bounds[index - 1] if index else 0.0
            return lower + (bounds[index] - lower) * (rank - seen) / count
        seen += count
    return bounds[-1]


def _milliseconds(seconds):
    return None if seconds is None else round(seconds * 1000, 2)


def latency(counts, seconds):
    """Mean and quantiles (ms) of the requests in one histogram delta."""
    requests = sum(counts)
    figures = {"mean": _milliseconds(seconds / requests) if requests else None}
    for name, q in QUANTILES:
        figures[name] = _milliseconds(quantile(counts, q))
    return figures


class DashboardSampler(Service):
    """Samples every *interval* seconds on *clock*; keeps *window* samples."""

    log = Logger()

    def __init__(self, clock, hub, proxy_stats, *, redis=None, cluster=None, worker=None,
                 interval=INTERVAL, window=WINDOW, lag_every=LAG_EVERY):
        self._clock = clock
        self._hub = hub
        self._proxy_stats = proxy_stats
        self._redis = redis
        self._cluster = cluster
        self._worker = worker
        self.interval = interval
        self.samples = deque(maxlen=window)
        self._readings = deque(maxlen=max(2, round(LATENCY_WINDOW / interval) + 1))
        self._lag_every = lag_every
        self._lag_reader = RedisCollector(redis, clock) if redis is not None else None
        self._lag_asking = None
        self._lag_known = False
        self._ticks = 0
        self.started = None
        self._loop = LoopingCall(self.sample)
        self._loop.clock = clock

    def startService(self):
        super().startService()
        self.started = self._clock.seconds()
        self._readings.append(self._read())
        self._ask_lag()
        self._loop.start(self.interval, now=False).addErrback(
            lambda failure: self.log.failure("dashboard sampling stopped", failure))

    def stopService(self):
        super().stopService()
        if self._loop.running:
            self._loop.stop()
        if self._lag_asking is not None:
            self._lag_asking.cancel()

    def _read(self):
        return Reading(self._clock.seconds(), self._hub, self._proxy_stats, self._redis)

    def sample(self):
        """Take one sample: rates since the previous reading, gauges as they are now."""
        reading = self._read()
        before = self._readings[-1]
        self._readings.append(reading)
        seconds = reading.t - before.t
        if seconds <= 0:
            return
        proxy = {}
        for target, (counts, total) in _proxy_deltas(reading, before).items():
            requests = sum(counts)
            proxy[target] = {"rate": _rate(requests, 0, seconds),
                             "latency_ms": _milliseconds(total / requests) if requests else None}
        self.samples.append({
            "t": round(reading.t, 3),
            "connections": dict(self._hub.stats.connections),
            "received": _rates(reading.received, before.received, seconds),
            "deliveries": _rate(reading.deliveries, before.deliveries, seconds),
            "slow_clients": _rates(reading.slow_clients, before.slow_clients, seconds),
            "proxy": proxy,
            "redis_lag": self._lag_total(),
        })
        self._ticks += 1
        if not self._lag_known or self._ticks % self._lag_every == 0:
            self._ask_lag()  # an unknown lag (Redis not up yet, say) is asked every second

    # -- Redis lag (a round trip, so fetched now and then, one query at a time) ------

    def _ask_lag(self):
        if self._lag_reader is None or self._lag_asking is not None:
            return
        asking = self._lag_asking = ensureDeferred(self._lag_reader.refresh())
        asking.addCallback(self._lag_answered)  # may run at once, before the next line
        asking.addErrback(lambda failure: self.log.failure("Redis lag", failure))

    def _lag_answered(self, _):
        self._lag_asking = None
        self._lag_known = bool(self._redis.healthy and self._lag_reader.lag)

    def _lag_total(self):
        if not self._lag_known:
            return None
        return sum(self._lag_reader.lag.values())

    # -- what the page reads ---------------------------------------------------

    def snapshot(self, since=None, buckets=False):
        """The data endpoint's JSON body: figures now, and the samples after *since*;
        with *buckets*, each proxy row also carries its histogram delta (``buckets``,
        ``seconds``) so that several workers' rows can be merged."""
        hub = self._hub
        reading = self._read()  # totals as they are now, not as of the last sample
        oldest = self._readings[0]
        proxy = []
        for target, (counts, total) in sorted(_proxy_deltas(reading, oldest).items()):
            last = self.samples[-1]["proxy"].get(target) if self.samples else None
            row = {
                "target": target,
                "requests": sum(reading.proxy[target][0]),
                "rate": last["rate"] if last else 0.0,
                "latency_ms": latency(counts, total),
            }
            if buckets:
                row["buckets"], row["seconds"] = list(counts), total
            proxy.append(row)
        samples = self.samples if since is None else [s for s in self.samples if s["t"] > since]
        return {
            "node": hub.codec.node,
            "worker": self._worker,
            "workers": None,  # with WORKERS=N: {"answered": n, "of": N} (rig.dashboard.workers)
            "started": self.started,
            "time": round(self._clock.seconds(), 3),
            "interval": self.interval,
            "window": self.samples.maxlen,
            "latency_window": round(reading.t - oldest.t, 3),
            "current": {
                "connections": dict(hub.stats.connections),
                "received": dict(reading.received),
                "deliveries": reading.deliveries,
                "slow_clients": dict(reading.slow_clients),
                "proxy": proxy,
                "cluster": self._cluster_now(),
                "redis": self._redis_now(reading),
            },
            "samples": list(samples),
        }

    def _cluster_now(self):
        if self._cluster is None:
            return None
        view = self._cluster.describe()
        return {"node": view["node"], "synced": view["synced"],
                "members": [{field: member.get(field) for field in MEMBER_FIELDS}
                            for member in view["members"]]}

    def _redis_now(self, reading):
        if self._redis is None:
            return None
        return {
            "healthy": bool(self._redis.healthy),
            "lag": self._lag_reader.lag if self._lag_known else None,
            "streams": {stream: {"consumed": consumed, "failed": failed}
                        for stream, (consumed, failed) in reading.consumed.items()},
        }
