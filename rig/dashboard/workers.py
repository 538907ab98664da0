"""One dashboard for the whole VM: with ``WORKERS=N`` the figures of every worker, summed.

The kernel hands a request on the shared internal port to any one worker
(and a browser's next connection may land on another). That worker asks each
sibling for its snapshot over the cluster links (the ``dashboard`` call), as
``/metrics`` does, and answers with the sums: the page sees one gateway.
Workers sample at their own phase within a second, so samples are merged by
the second they fall in, and a second is shown only once every worker has
sampled it.
"""
from twisted.internet import defer
from twisted.logger import Logger

from rig.dashboard.sampler import latency

DASHBOARD_CALL = "dashboard"
SETTLE = 1.5  # seconds after which every worker has taken its sample of a second


def _sum_dicts(dicts):
    total = {}
    for figures in dicts:
        for key, value in figures.items():
            total[key] = total.get(key, 0) + value
    return total


def _round(value):
    return round(value, 3)


def merge_proxy_rows(tables):
    """Rows of several workers by target: requests and rates summed, latency from the
    summed histogram deltas (``buckets``, ``seconds``), so quantiles stay right."""
    by_target = {}
    for rows in tables:
        for row in rows:
            merged = by_target.setdefault(row["target"], {
                "target": row["target"], "requests": 0, "rate": 0.0,
                "buckets": [0] * len(row["buckets"]), "seconds": 0.0})
            merged["requests"] += row["requests"]
            merged["rate"] = _round(merged["rate"] + row["rate"])
            merged["buckets"] = [a + b for a, b in zip(merged["buckets"], row["buckets"],
                                                       strict=True)]
            merged["seconds"] += row["seconds"]
    return [{"target": row["target"], "requests": row["requests"], "rate": row["rate"],
             "latency_ms": latency(row["buckets"], row["seconds"])}
            for _, row in sorted(by_target.items())]


def _merge_redis(views):
    views = [view for view in views if view is not None]
    if not views:
        return None
    lags = [view["lag"] for view in views if view["lag"] is not None]
    return {
        "healthy": all(view["healthy"] for view in views),
        "lag": lags[0] if lags else None,  # one consumer group: every worker sees its lag
        "streams": {stream: _sum_dicts(view["streams"][stream] for view in views
                                       if stream in view["streams"])
                    for stream in views[0]["streams"]},
    }


def _merge_sample(second, samples):
    proxy = {}
    for sample in samples:
        for target, figures in sample["proxy"].items():
            merged = proxy.setdefault(target, {"rate": 0.0, "weighted": 0.0})
            merged["rate"] += figures["rate"]
            if figures["latency_ms"] is not None:
                merged["weighted"] += figures["rate"] * figures["latency_ms"]
    lags = [sample["redis_lag"] for sample in samples if sample["redis_lag"] is not None]
    return {
        "t": second,
        "connections": _sum_dicts(sample["connections"] for sample in samples),
        "received": {key: _round(value) for key, value
                     in _sum_dicts(sample["received"] for sample in samples).items()},
        "deliveries": _round(sum(sample["deliveries"] for sample in samples)),
        "slow_clients": {key: _round(value) for key, value
                         in _sum_dicts(sample["slow_clients"] for sample in samples).items()},
        "proxy": {target: {"rate": _round(figures["rate"]),
                           "latency_ms": round(figures["weighted"] / figures["rate"], 2)
                           if figures["rate"] and figures["weighted"] else None}
                  for target, figures in proxy.items()},
        "redis_lag": max(lags) if lags else None,
    }


def merge_samples(sample_lists, since, until):
    """Samples of several workers merged by the whole second nearest each, for the
    seconds after *since* up to *until*."""
    seconds = {}
    for samples in sample_lists:
        mine = {}
        for sample in samples:
            mine[round(sample["t"])] = sample  # one per worker and second
        for second, sample in mine.items():
            seconds.setdefault(second, []).append(sample)
    return [_merge_sample(second, seconds[second]) for second in sorted(seconds)
            if (since is None or second > since) and second <= until]


def merge_snapshots(parts, since, workers):
    """One snapshot from the workers' (this worker's first), as the page reads it."""
    own = parts[0]
    now = min(part["time"] for part in parts)
    currents = [part["current"] for part in parts]
    return {
        **own,
        "worker": None,
        "workers": {"answered": len(parts), "of": workers},
        "started": min(part["started"] for part in parts),
        "time": now,
        "current": {
            "connections": _sum_dicts(current["connections"] for current in currents),
            "received": _sum_dicts(current["received"] for current in currents),
            "deliveries": sum(current["deliveries"] for current in currents),
            "slow_clients": _sum_dicts(current["slow_clients"] for current in currents),
            "proxy": merge_proxy_rows(current["proxy"] for current in currents),
            "cluster": own["current"]["cluster"],
            "redis": _merge_redis(current["redis"] for current in currents),
        },
        "samples": merge_samples([part["samples"] for part in parts], since, now - SETTLE),
    }


class VmDashboard:
    """This worker's dashboard and its siblings', for ``GET /dashboard/data``."""

    log = Logger()

    def __init__(self, sampler, calls, siblings, timeout=1.0):
        self._sampler = sampler
        self._calls = calls
        self._siblings = tuple(siblings)  # cluster addresses of the other workers
        self._timeout = timeout

    def own_snapshot(self, args):
        """The ``dashboard`` call: this worker's snapshot, with its histogram deltas."""
        return self._sampler.snapshot(args.get("since"), buckets=True)

    async def snapshot(self, since=None):
        # a sibling's sample may fall into a later second than its own t: ask for more
        asked = None if since is None else since - 1
        answers = await defer.gatherResults(
            [defer.ensureDeferred(self._ask(address, asked)) for address in self._siblings],
            consumeErrors=True)
        parts = [self._sampler.snapshot(asked, buckets=True)]
        parts += [answer for answer in answers if answer is not None]
        return merge_snapshots(parts, since, len(self._siblings) + 1)

    async def _ask(self, address, since):
        try:
            return await self._calls.call(address, DASHBOARD_CALL, {"since": since},
                                          timeout=self._timeout)
        except Exception as error:
            self.log.warn("No dashboard figures from worker at {address}: {error}",
                          address=address, error=str(error) or type(error).__name__)
            return None
