"""Proxy endpoints with ``target: "redis"``: the request becomes a CloudEvent on a stream.

As RIG does for Kafka targets (spec Part B 7.7): the body must be a JSON object
with a ``specversion``; RIG replaces its ``rig`` attribute with request
metadata (and the correlation id when a response is awaited), and the event
is added to the endpoint's ``topic`` stream. Without ``response_from: "redis"``
the client gets ``202 Accepted.``; with it, the client waits for an entry on
``PROXY_REDIS_RESPONSE_STREAM`` carrying its correlation id, or 504.
"""
import json

from twisted.internet import defer
from twisted.web.server import NOT_DONE_YET

from rig.httputil import respond
from rig.proxy.event_target import event_of_request, request_metadata, target_headers
from rig.proxy.gateway import Outcome


class RedisTarget:
    """Publishes proxied requests to Redis streams and awaits correlated answers."""

    def __init__(self, source, correlations, *, cors, timeout):
        self._source = source  # the RedisSource: its producer connection and response stream
        self._correlations = correlations
        self._cors = cors
        self._timeout = timeout

    async def handle(self, request, route, outcome=None, trace=None):
        """Publish the request; *outcome* (a :class:`rig.proxy.gateway.Outcome`) is told
        how it ended, for the metrics. The event carries *trace*'s context as its
        ``traceparent``/``tracestate`` (the CloudEvents distributed-tracing extension)."""
        outcome = outcome if outcome is not None else Outcome()
        headers = target_headers(self._cors)
        if request.method == b"OPTIONS":
            return respond(request, 204, headers=headers)
        if self._source is None:
            outcome.status = "unreachable"
            return respond(request, 503, "Redis is not configured (REDIS_URL).", headers=headers)
        event, refused = event_of_request(request, outcome, headers)
        if event is None:
            return refused
        waiting = route.endpoint.get("response_from") == "redis"
        correlation = answered = None
        if waiting:
            correlation, answered = self._correlations.open(self._timeout)
            request.notifyFinish().addErrback(lambda _failure: answered.cancel())
        event["rig"] = request_metadata(request, route, correlation)
        event.pop("tracestate", None)
        if trace is not None:
            event.update(trace.attributes())
        try:
            await self._source.add(route.endpoint["topic"], json.dumps(event))
        except Exception as error:
            if answered is not None:
                answered.cancel()
            self._source.log.warn("Could not add a proxied request to {stream}: {error}",
                                  stream=route.endpoint["topic"], error=str(error))
            outcome.status = "unreachable"
            return respond(request, 503, "Redis is unavailable.", headers=headers)
        if not waiting:
            return respond(request, 202, "Accepted.", headers=headers)
        try:
            answer = await answered
        except defer.TimeoutError:
            outcome.status = "response_timeout"
            return respond(request, 504, b"", headers=headers)
        except defer.CancelledError:
            outcome.status = None
            return NOT_DONE_YET
        for name, value in answer.headers:
            request.responseHeaders.addRawHeader(name, value)
        return respond(request, answer.status, answer.body, content_type=None, headers=headers)
