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

from rig import jsonbounds
from rig.httputil import cors_headers, request_body, respond
from rig.proxy.forward import forwarded_path
from rig.proxy.gateway import Outcome

USAGE = (" Send a CloudEvent: a JSON object with at least specversion, type, source and id,"
         " with content-type application/json.")


def request_metadata(request, route, correlation=None):
    client = request.getClientAddress()
    host = request.getHost()
    metadata = {
        "remoteip": getattr(client, "host", None),
        "host": (request.getHeader(b"host") or b"").decode("latin-1"),
        "port": getattr(host, "port", None),
        "scheme": "https" if request.isSecure() else "http",
        "headers": [[name.decode("latin-1").lower(), value.decode("latin-1")]
                    for name, values in request.requestHeaders.getAllRawHeaders()
                    for value in values],
        "method": request.method.decode("latin-1"),
        "path": forwarded_path(route, request.path).decode("utf-8", "replace"),
        "query": request.uri.partition(b"?")[2].decode("latin-1"),
    }
    if correlation is not None:
        metadata["correlation"] = correlation
    return metadata


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
        headers = cors_headers(self._cors, methods=b"*", allow=b"content-type,authorization")
        if request.method == b"OPTIONS":
            return respond(request, 204, headers=headers)
        if self._source is None:
            outcome.status = "unreachable"
            return respond(request, 503, "Redis is not configured (REDIS_URL).", headers=headers)
        try:
            event = jsonbounds.loads(request_body(request))
        except ValueError:
            outcome.status = "bad_request"
            return respond(request, 400, "Bad request: expected a JSON encoded request body."
                           + USAGE, headers=headers)
        if not isinstance(event, dict) or "specversion" not in event:
            outcome.status = "bad_request"
            return respond(request, 400, "Bad request: the body does not look like a CloudEvent."
                           + USAGE, headers=headers)
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
