"""One scrape for the whole VM: with ``WORKERS=N`` every sample carries its ``worker``.

The kernel hands a scrape of the shared internal port to any one worker. That
worker asks each sibling for its own exposition over the cluster links (the
``metrics`` call), and answers with every worker's samples, labelled with the
worker's number, plus ``rig_worker_up`` saying which workers answered. Sums
over workers are then ordinary PromQL (``sum without (worker) (...)``).
"""
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.logger import Logger

METRICS_CALL = "metrics"


class _Families:
    def __init__(self, families):
        self._families = families

    def collect(self):
        return self._families


def label_workers(parts):
    """Families of several workers, as ``[(worker, families)]``, merged by name with a
    ``worker`` label on every sample."""
    merged = {}
    for worker, families in parts:
        for family in families:
            target = merged.get(family.name)
            if target is None:
                target = merged[family.name] = Metric(family.name, family.documentation,
                                                      family.type, family.unit)
            for sample in family.samples:
                target.samples.append(sample._replace(
                    labels={**sample.labels, "worker": str(worker)}))
    return list(merged.values())


class VmMetrics:
    """This worker's metrics and its siblings', for ``GET /metrics``."""

    log = Logger()

    def __init__(self, own, calls, index, siblings, timeout=2.0):
        self.own = own
        self._calls = calls
        self._index = index
        self._siblings = tuple(siblings)  # cluster addresses of the other workers, in order
        self._numbers = [number for number in range(len(self._siblings) + 1) if number != index]
        self._timeout = timeout
        self.registry = own.registry

    async def own_exposition(self, args=None):
        """The ``metrics`` call: this worker's own exposition (text format)."""
        await self.own.refresh()
        return {"text": generate_latest(self.own.registry).decode()}

    async def refresh(self):
        await self.own.refresh()
        answers = await defer.gatherResults(
            [defer.ensureDeferred(self._ask(address)) for address in self._siblings],
            consumeErrors=True)
        parts = [(self._index, list(self.own.registry.collect()))]
        up = GaugeMetricFamily("rig_worker_up", "Whether the worker answered this scrape"
                               " (1) or not (0).", labels=["worker"])
        up.add_metric([str(self._index)], 1)
        for number, answer in zip(self._numbers, answers, strict=True):
            up.add_metric([str(number)], 0 if answer is None else 1)
            if answer is not None:
                parts.append((number, list(text_string_to_metric_families(answer["text"]))))
        registry = CollectorRegistry(auto_describe=True)
        registry.register(_Families([*label_workers(parts), up]))
        self.registry = registry

    async def _ask(self, address):
        try:
            return await self._calls.call(address, METRICS_CALL, {}, timeout=self._timeout)
        except Exception as error:
            self.log.warn("No metrics from worker at {address}: {error}", address=address,
                          error=str(error) or type(error).__name__)
            return None
