"""Span export on the reactor: batches, sent with treq, encoded by OpenTelemetry's encoders.

The SDK's own batch processor runs a thread and posts with ``requests``; here
ended spans wait in a bounded queue and a reactor timer sends them in batches
(``OTEL_BSP_*``), one request in flight per exporter. The wire formats come
from the OpenTelemetry packages (OTLP protobuf, Zipkin v2 JSON), so nothing
about the encoding is written by hand. An exporter that is down costs one log
line when it fails and one when it is back, and the spans of the batches it
missed; a full queue drops new spans. No request ever waits on an export.
"""
import gzip
from urllib.parse import urlsplit, urlunsplit

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.zipkin.json.v2 import JsonV2Encoder
from opentelemetry.exporter.zipkin.node_endpoint import NodeEndpoint
from opentelemetry.sdk.trace import SpanProcessor
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger


class ExportRefused(Exception):
    """The collector answered, but not with a 2xx."""


def shown_url(url):
    """*url* without user info, query or fragment: what logs may say about an exporter."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class OTLPSender:
    """OTLP over HTTP, ``application/x-protobuf`` (optionally gzip-compressed)."""

    def __init__(self, post, url, *, headers=(), compression=None):
        self._post = post  # (url, body, headers) -> Deferred of the status code
        self.url = url
        self._headers = {"content-type": "application/x-protobuf", **dict(headers)}
        self._compression = compression
        if compression == "gzip":
            self._headers["content-encoding"] = "gzip"

    def send(self, spans):
        body = encode_spans(spans).SerializeToString()
        if self._compression == "gzip":
            body = gzip.compress(body)
        return self._post(self.url, body, self._headers)


class ZipkinSender:
    """Zipkin's v2 JSON API (``POST /api/v2/spans``)."""

    def __init__(self, post, url, *, service_name):
        self._post = post
        self.url = url
        self._encoder = JsonV2Encoder()
        self._endpoint = NodeEndpoint()
        self._endpoint.service_name = service_name

    def send(self, spans):
        body = self._encoder.serialize(spans, self._endpoint).encode("utf-8")
        return self._post(self.url, body, {"content-type": "application/json"})


class ReactorBatchProcessor(SpanProcessor):
    """Queues ended spans and sends them in batches from a reactor timer."""

    log = Logger()

    def __init__(self, clock, sender, *, delay=5.0, max_queue=2048, max_batch=512):
        self._clock = clock
        self._sender = sender
        self._delay = delay
        self._max_queue = max_queue
        self._max_batch = min(max_batch, max_queue)
        self._queue = []
        self._sending = None  # the Deferred of the batch in flight
        self._soon = None
        self._loop = None
        self._failing = False
        self.shown_url = shown_url(sender.url)
        self.counts = {"exported": 0, "failed": 0, "dropped": 0}

    def on_start(self, span, parent_context=None):
        pass

    def on_end(self, span):
        queue = self._queue
        if len(queue) >= self._max_queue:
            self.counts["dropped"] += 1
            return
        queue.append(span)
        if len(queue) >= self._max_batch and self._soon is None and self._loop is not None:
            self._soon = self._clock.callLater(0, self._flush_soon)

    def start(self):
        self._loop = LoopingCall(self.flush)
        self._loop.clock = self._clock
        self._loop.start(self._delay, now=False).addErrback(
            lambda failure: self.log.failure("span export timer", failure))

    def _flush_soon(self):
        self._soon = None
        self.flush()

    def flush(self):
        """Send the next batch unless one is in flight; a Deferred that fires when it is
        through (never with an error)."""
        if self._sending is not None or not self._queue:
            return defer.succeed(None)
        batch = self._queue[:self._max_batch]
        del self._queue[:self._max_batch]
        try:
            sending = self._sender.send(batch)
        except Exception as error:  # an encoder that cannot take a span: lose the batch
            sending = defer.fail(error)
        self._sending = sending
        sending.addCallback(_accepted)
        sending.addCallbacks(self._sent, self._failed, callbackArgs=(len(batch),),
                             errbackArgs=(len(batch),))
        sending.addBoth(self._next)
        return sending

    def _sent(self, _status, count):
        self.counts["exported"] += count
        if self._failing:
            self._failing = False
            self.log.info("Span export to {url} works again", url=self.shown_url)

    def _failed(self, failure, count):
        self.counts["failed"] += count
        if not self._failing:
            self._failing = True
            self.log.warn("Span export to {url} failed ({why}); spans are dropped until it "
                          "answers", url=self.shown_url,
                          why=failure.getErrorMessage() or failure.type.__name__)

    def _next(self, _result):
        self._sending = None
        if len(self._queue) >= self._max_batch and self._loop is not None:
            self._soon = self._soon or self._clock.callLater(0, self._flush_soon)

    async def stop(self, timeout):
        """Send what is queued (within *timeout* seconds), then stop the timer."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._soon is not None and self._soon.active():
            self._soon.cancel()
        self._soon = None
        deadline = self._clock.seconds() + timeout
        while (self._queue or self._sending is not None) and self._clock.seconds() < deadline:
            waiting = self._sending if self._sending is not None else self.flush()
            waiting = _within(waiting, deadline - self._clock.seconds(), self._clock)
            if not await waiting:
                break
        self.counts["dropped"] += len(self._queue)
        del self._queue[:]

    def shutdown(self):
        pass  # the service stops us, on the reactor

    def force_flush(self, timeout_millis=30000):
        self.flush()
        return True


def _accepted(status):
    if not 200 <= status < 300:
        raise ExportRefused(f"HTTP {status}")
    return status


def _within(deferred, seconds, clock):
    """A Deferred of True when *deferred* fires within *seconds*, else False (it is left
    running: the HTTP client's own timeout ends it)."""
    outcome = defer.Deferred()
    timer = clock.callLater(max(seconds, 0), lambda: outcome.called or outcome.callback(False))

    def fired(_result):
        if timer.active():
            timer.cancel()
        if not outcome.called:
            outcome.callback(True)
        return _result

    deferred.addBoth(fired)
    return outcome
