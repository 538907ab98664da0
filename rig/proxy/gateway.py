"""The reverse proxy entry: match, authenticate, log, forward (or wait for an async answer)."""
from functools import partial

import attrs
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.server import NOT_DONE_YET

from rig.auth.checks import authorization_tokens
from rig.auth.jwt import InvalidJWT
from rig.httputil import authorization_values, cors_headers, redacted_path, respond
from rig.metrics.stats import ProxyStats
from rig.tracing.tracer import Tracing

NOT_FOUND = b'{"message":"Not Found"}'
MATCH_CACHE_SIZE = 10_000  # (method, path) pairs whose route is remembered
_UNKNOWN = object()


@attrs.frozen
class AsyncAnswer:
    """What a backend posted to ``/v3/responses`` for a waiting request."""

    status: int
    headers: tuple  # (name bytes, value bytes) pairs
    body: bytes


@attrs.define
class Outcome:
    """How a proxied request ended, in RIG's metric words (``rig_proxy_requests_total``
    status); None when the client left first (not counted)."""

    status: str | None = "ok"


class Proxy:
    log = Logger()

    def __init__(self, *, store, forwarder, correlations, validator, cors, request_log,
                 async_timeout, clock, redis_target=None, nats_target=None, stats=None,
                 tracing=None):
        self._clock = clock
        self._tracing = tracing if tracing is not None else Tracing(clock)
        self._exporting = self._tracing.exporting
        self.stats = stats if stats is not None else ProxyStats()
        self._store = store
        self._forwarder = forwarder
        self._correlations = correlations
        self._validator = validator
        self._cors = cors
        self._request_log = request_log
        self._async_timeout = async_timeout
        # targets that turn a request into an event: (the target, what its absence says)
        self._event_targets = {
            "redis": (redis_target, "Redis is not configured (REDIS_URL)."),
            "nats": (nats_target, "NATS is not configured (NATS_SERVERS)."),
        }
        self._matched_for = None  # the route list that _matched was made for
        self._matched = {}

    def match(self, method, path):
        """The first route for *method* and *path*, in API then endpoint order (HEAD as GET).

        Remembered per (method, path) until the definitions change: a request's
        route is then one dictionary lookup instead of a regular expression per
        endpoint."""
        routes = self._store.routes()
        if routes is not self._matched_for:
            self._matched_for, self._matched = routes, {}
        key = (method, path)
        route = self._matched.get(key, _UNKNOWN)
        if route is _UNKNOWN:
            route = self._search(routes, method, path)
            if len(self._matched) >= MATCH_CACHE_SIZE:
                self._matched.clear()
            self._matched[key] = route
        return route

    @staticmethod
    def _search(routes, method, path):
        fallback = None
        for route in routes:
            if route.pattern.match(path) is None:
                continue
            if route.method == method:
                return route
            if method == "HEAD" and route.method == "GET" and fallback is None:
                fallback = route
        return fallback

    def __call__(self, request, **_groups):
        method = request.method.decode("latin-1")
        path = request.path.decode("utf-8", "replace")
        route = self.match(method, path)
        if route is None:
            self.stats.record(method, path, "N/A", "N/A", "not_found")
            return respond(request, 404, NOT_FOUND, content_type=None)
        if route.secured and not self._authenticated(request, route):
            # not counted, as in RIG
            return respond(request, 401, "Authentication failed.", content_type=None,
                           headers=self._cors_headers())
        endpoint = route.endpoint
        if self._request_log:
            self.log.info(
                "CALL: [{endpoint_id}] {method} {path_regex} => {target_url}",
                endpoint_id=endpoint["id"], method=route.method,
                path_regex=endpoint["path_regex"],
                target_url=route.api["proxy"]["target_url"], request_path=redacted_path(path),
            )
        target = endpoint.get("target", "http")
        response_from = endpoint.get("response_from", "http")
        labels = (method, path, target, response_from)
        if self._exporting:
            trace = self._tracing.start_from_request(
                f"{method} {endpoint['path_regex']}", request,
                attributes=_span_attributes(request, route))
            done = partial(self._record_traced, labels, self._clock.seconds(), request, trace)
        else:  # nothing recorded: the backend's traceparent is made with its request head
            trace = None
            done = partial(self._record, labels, self._clock.seconds())
        if target == "http" and response_from == "http":  # the common case, without a coroutine
            self._forwarder.forward(request, route, done, trace=trace)
            return NOT_DONE_YET
        return defer.ensureDeferred(self._dispatch(request, route, done, trace))

    def _record_traced(self, labels, started, request, trace, status):
        trace.end(request.code if status is not None else None,
                  attributes={"rig.status": status or "client_gone"})
        self._record(labels, started, status)

    def _record(self, labels, started, status):
        """Count a forwarded request by its labels and *status* (None: not counted)."""
        if status is not None:
            self.stats.record(*labels, status, seconds=self._clock.seconds() - started)

    async def _dispatch(self, request, route, done, trace):
        outcome = Outcome()
        event_target = self._event_targets.get(route.endpoint.get("target"))
        if event_target is not None:
            target, missing = event_target
            if target is None:  # an API replicated from a node that has it
                outcome.status = "unreachable"
                result = respond(request, 503, missing)
            else:
                result = await target.handle(
                    request, route, outcome,
                    trace=trace or self._tracing.start_from_request(None, request))
        elif route.endpoint.get("response_from") in ("http_async", "redis"):
            # the answer comes later, from /v3/responses or the Redis response stream
            result = await self._forward_and_wait(request, route, outcome, trace)
        else:
            outcome.status = await self._forwarder.forward_for_answer(request, route, None,
                                                                      trace=trace)
            result = NOT_DONE_YET
        done(outcome.status)
        return result

    async def _forward_and_wait(self, request, route, outcome, trace):
        correlation_id, answered = self._correlations.open(self._async_timeout)
        request.notifyFinish().addErrback(lambda _: answered.cancel())
        outcome.status, accepted = await self._forwarder.forward_for_answer(
            request, route, "correlation=" + correlation_id, trace=trace)
        if accepted is None:  # answered directly (not 202), or failed
            self._correlations.cancel(correlation_id)
            return NOT_DONE_YET
        try:
            answer = await answered
        except defer.TimeoutError:
            outcome.status = "response_timeout"
            return respond(request, 504, b"", headers=self._cors_headers())
        except defer.CancelledError:
            outcome.status = None
            return NOT_DONE_YET
        for name, value in answer.headers:
            request.responseHeaders.addRawHeader(name, value)
        return respond(request, answer.status, answer.body, content_type=None,
                       headers=self._cors_headers())

    def _authenticated(self, request, route):
        tokens = authorization_tokens(authorization_values(request), lenient=False)
        auth = route.api.get("auth") or {}
        if auth.get("use_query") and auth.get("query_name"):
            values = request.args.get(auth["query_name"].encode(), [])
            for value in values:
                tokens += [t.strip() for t in value.decode("utf-8", "replace").split(",") if t]
        for token in tokens:
            try:
                self._validator.claims(token)
            except InvalidJWT:
                continue
            return True
        return False

    def _cors_headers(self):
        return cors_headers(self._cors, methods=b"*", allow=b"content-type")


def _span_attributes(request, route):
    """OpenTelemetry's HTTP server attributes, and which API and endpoint matched."""
    return {
        "http.request.method": request.method.decode("latin-1"),
        "url.path": request.path.decode("utf-8", "replace"),
        "http.route": route.endpoint["path_regex"],
        "url.scheme": "https" if request.isSecure() else "http",
        "client.address": getattr(request.getClientAddress(), "host", ""),
        "rig.api.id": route.api["id"],
        "rig.endpoint.id": route.endpoint["id"],
        "rig.target": route.endpoint.get("target", "http"),
    }
