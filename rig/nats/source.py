"""Consume CloudEvents from NATS subjects, once per cluster (a queue group).

Every node subscribes to ``NATS_SOURCE_TOPICS`` in the queue group
``NATSTOFILTER_QUEUE_GROUP``, so the server hands each message to one node,
which publishes it to the hub; the hub fans it out through the cluster as it
does HTTP and Redis events. A message is a structured CloudEvent (any version
the gateway reads), or binary mode with ``ce-*`` NATS headers. One that is not
is logged, counted and dropped. A node subscribes only once it may publish
(in a cluster: once it knows its peers' interest), as the Redis source does.
"""
from functools import partial

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from rig.events import EventError, parse_http, parse_structured
from rig.metrics.stats import StreamStats
from rig.streams.consumed import publish_consumed
from rig.tracing.tracer import Tracing


def event_from_message(payload, headers):
    """The CloudEvent of a NATS message; *headers* is ``(status, {name: value})`` or None."""
    fields = headers[1] if headers is not None else {}
    if "ce-specversion" in fields:
        return parse_http(fields.get("content-type") or "application/json", fields, payload)
    return parse_structured(payload)


class NatsSource(Service):
    log = Logger()

    def __init__(self, reactor, hub, client, *, topics=("rig",), queue_group="rig-nats-to-filter",
                 ready=None, tracing=None):
        self._reactor = reactor
        self.hub = hub
        self.client = client
        self.topics = tuple(topics)
        self.queue_group = queue_group
        self._ready = ready
        self._tracing = tracing if tracing is not None else Tracing(reactor)
        self._sids = []
        self._waiting = None
        self.counts = {"consumed": 0, "invalid": 0}
        self.stream_stats = {topic: StreamStats() for topic in self.topics}

    @property
    def healthy(self):
        return self.client.healthy

    def startService(self):
        super().startService()
        waiting = self._ready() if self._ready is not None else defer.succeed(None)
        self._waiting = waiting
        waiting.addCallback(self._subscribe)
        waiting.addErrback(self._not_subscribed)

    def stopService(self):
        super().stopService()
        if self._waiting is not None and not self._waiting.called:
            self._waiting.cancel()
        for sid in self._sids:
            self.client.unsubscribe(sid)
        self._sids = []

    def _subscribe(self, _ready):
        self._waiting = None
        for topic in self.topics:
            self._sids.append(self.client.subscribe(
                topic, partial(self._received, topic), queue=self.queue_group))
        self.log.info("Consuming NATS subjects {topics} in queue group {group}",
                      topics=",".join(self.topics), group=self.queue_group)

    def _not_subscribed(self, failure):
        if not failure.check(defer.CancelledError):
            self.log.failure("NATS source not subscribed", failure)

    def _received(self, topic, subject, _reply, payload, headers):
        stats = self.stream_stats[topic]
        started = self._reactor.seconds()
        try:
            event = event_from_message(payload, headers)
        except (EventError, ValueError, TypeError) as error:
            self.counts["invalid"] += 1
            stats.failed += 1
            invalid = self.counts["invalid"]
            if invalid <= 10 or invalid % 1000 == 0:
                # the first ten, then one line a thousand: whoever may publish to the
                # subject could otherwise fill the log
                self.log.warn("Skipping a NATS message on {subject}: {error} ({count} so far)",
                              subject=subject, error=str(error), count=self.counts["invalid"])
        else:
            self.counts["consumed"] += 1
            publish_consumed(self.hub, self._tracing, event, "nats", subject)
        stats.consumed += 1
        stats.duration_ms.observe((self._reactor.seconds() - started) * 1000.0)
