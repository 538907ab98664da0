"""Forwarding a matched request to an HTTP backend, streamed both ways.

Request bodies come from twisted.web's buffer (a temporary file beyond
100 KB, so memory stays flat): up to 64 KB they go out with the request head,
larger ones through a ``FileBodyProducer`` that the backend connection paces.
Response bodies are streamed to the client with the backend connection
registered as the request's producer, so a slow client pauses the backend
instead of filling memory. A client that goes away cancels the upstream
request. The HTTP client is :mod:`rig.proxy.upstream`.
"""
import re
from functools import lru_cache

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web.http import NO_BODY_CODES

from rig.httputil import abort_response, client_gone, respond_now
from rig.proxy.targets import TargetPolicy, TargetRefused
from rig.proxy.upstream import INLINE_BODY_BYTES
from rig.timeouts import FixedTimeouts
from rig.tracing.context import child_lines

HOP_BY_HOP = frozenset((
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
    b"http2-settings", b"te", b"trailer", b"proxy-authenticate", b"proxy-authorization",
))
PASSED_NOT = HOP_BY_HOP | {b"date", b"content-length"}  # the gateway sets these
SET_HERE = frozenset((b"host", b"content-length", b"forwarded", b"x-forwarded-for",
                      b"x-forwarded-proto", b"x-forwarded-host", b"traceparent", b"tracestate"))
NOT_FORWARDED = HOP_BY_HOP | SET_HERE
FORWARDED_METHODS = frozenset((b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD",
                               b"OPTIONS"))
BODY_METHODS = frozenset((b"POST", b"PUT", b"PATCH"))
_UNSAFE = re.compile(rb"[^\x21-\x7e]")  # not allowed raw in a request target


def _escape(match):
    return b"%%%02X" % match.group()[0]


def target_of(api, policy):
    """``(scheme, host, port, shown)`` of an API's backend; *shown* is what logs may say
    (a ``use_env`` host is named by its variable, never by its value). TargetRefused
    when the policy does not allow the variable."""
    proxy = api["proxy"]
    scheme, host = policy.host_of(proxy)
    port = proxy["port"]
    if proxy.get("use_env"):
        return scheme, host, port, f"{scheme}://${proxy['target_url']}:{port}"
    return scheme, host, port, f"{scheme}://{host}:{port}"


def forwarded_path(route, path):
    """*path* (bytes) as the backend gets it, after the endpoint's ``path_replacement``."""
    replacement = route.endpoint.get("path_replacement")
    if not replacement:
        return path
    return route.pattern.sub(replacement, path.decode("utf-8", "replace"), count=1).encode()


@lru_cache(maxsize=256)
def _connection_tokens(values):
    """The header names a ``Connection`` header lists (*values*: a tuple of its values),
    made once per distinct header: a client or a backend sends the same one each time."""
    return frozenset(token.strip().lower() for value in values for token in value.split(b","))


@lru_cache(maxsize=256)
def _passed_not_with(connection_header):
    """The response headers not passed on, with those a backend's ``Connection`` header
    names: made once per distinct header (backends send the same one every time)."""
    return PASSED_NOT | _connection_tokens(connection_header)


def _safe_value(value):
    """A configured header value as bytes on one line (no header injection)."""
    return str(value).encode("latin-1", "replace").replace(b"\r", b" ").replace(b"\n", b" ")


def upstream_head(request, route, target, *, host, port, by_address, trace=None):
    """The request head for the backend: the client's headers minus hop-by-hop ones,
    with Host, Forwarded, X-Forwarded-* and the gateway's trace context (*trace*, a
    recorded :class:`rig.tracing.tracer.Trace`; without one, a child of the client's),
    as bytes ready to send."""
    request_headers = request.requestHeaders
    lines = [request.method, b" ", target, b" HTTP/1.1\r\nHost: ",
             f"{host}:{port}".encode(), b"\r\n"]
    # one pass over the client's headers: those forwarded, and those read here
    kept = []
    listed = previous = incoming_host = traceparent = tracestate = None
    for name, values in request_headers.getAllRawHeaders():
        lowered = name.lower()
        if lowered not in NOT_FORWARDED:
            kept.append((lowered, name, values))
        elif lowered == b"connection":
            listed = values
        elif lowered == b"x-forwarded-for":
            previous = values
        elif lowered == b"host":
            incoming_host = values
        elif lowered == b"traceparent":
            traceparent = values
        elif lowered == b"tracestate":
            tracestate = values
    also_dropped = _connection_tokens(tuple(listed)) if listed else ()
    for lowered, name, values in kept:
        if lowered not in also_dropped:
            for value in values:
                lines += (name, b": ", value, b"\r\n")
    if route.endpoint.get("transform_request_headers"):
        add = route.api["version_data"]["default"].get("transform_request_headers", {})
        for configured, value in (add.get("add_headers") or {}).items():
            name = _safe_value(configured).replace(b":", b"").strip()
            if name and name.lower() not in SET_HERE:  # the gateway's own stay as they are
                lines += (name, b": ", _safe_value(value), b"\r\n")
    client_host = getattr(request.getClientAddress(), "host", "unknown").encode()
    chain = b", ".join((*previous, client_host)) if previous else client_host
    lines += (b"Forwarded: for=", client_host, b";by=", by_address, b"\r\nX-Forwarded-For: ",
              chain, b"\r\nX-Forwarded-Proto: ", b"https" if request.isSecure() else b"http",
              b"\r\n")
    if incoming_host:
        lines += (b"X-Forwarded-Host: ", incoming_host[0], b"\r\n")
    lines.append(child_lines(traceparent, tracestate) if trace is None
                 else trace.header_lines())
    return lines


class _Relay:
    """Copies a backend response body to the client, paced by the client.

    A body that is complete in what the backend sent with its head (most are)
    goes out with a Content-Length in one write; a longer one is streamed.
    """

    __slots__ = ("finished", "paced", "pieces", "request", "response")

    def __init__(self, request, response, finished):
        self.request = request
        self.response = response
        self.finished = finished  # called once the body is through
        self.paced = False
        self.pieces = []  # body bytes held until the body is complete or streams

    def producing(self, producer):
        self.paced = True
        request = self.request
        request.registerProducer(producer, True)
        pieces, self.pieces = self.pieces, None
        if pieces and not (request.client_gone or request.finished):
            request.write(b"".join(pieces))

    def data(self, data):
        if self.pieces is not None:
            self.pieces.append(data)
            return
        request = self.request
        if not (request.client_gone or request.finished):  # a client that left aborted us
            request.write(data)

    def done(self, error):
        request = self.request
        if self.paced:
            request.unregisterProducer()
        if not (request.client_gone or request.finished):
            if error is not None:
                abort_response(request)  # mid-response failure: the client sees a cut stream
            else:
                pieces = self.pieces
                if pieces is not None:  # all of it came at once
                    body = b"".join(pieces)
                    if self.response.length is None and not (
                            request.method == b"HEAD" or request.code in NO_BODY_CODES):
                        request.responseHeaders.setRawHeaders(b"content-length",
                                                              [b"%d" % len(body)])
                    request.write(body)
                request.finish()
        self.finished()


class Forwarder:
    """Sends requests upstream through one keep-alive pool and answers the client."""

    log = Logger()

    def __init__(self, reactor, pool, *, recv_timeout, by_address, policy=None):
        self._pool = pool
        self._timeouts = FixedTimeouts(reactor, recv_timeout)  # until the response head
        self._by_address = by_address.encode("latin-1")
        self._policy = policy if policy is not None else TargetPolicy()
        self._targets = {}  # (target_url, port, use_env) -> target_of(...)

    def forward(self, request, route, done, extra_query=None, trace=None):
        """Forward *request* and answer its client; ``done(status)`` follows once, with
        RIG's metric word for how it ended (None when the client left first).

        With *extra_query* (``correlation=...``), a backend 202 is not sent:
        ``done`` gets the :class:`rig.proxy.upstream.Response` (``response_from``
        waits for the real answer).
        """
        method = request.method
        if method not in FORWARDED_METHODS:
            respond_now(request, 405, "Method not allowed.")
            done("bad_request")
            return
        try:
            scheme, host, port, shown = self._target(route.api)
        except TargetRefused as refused:  # e.g. replicated from a node that allows more
            self._failed(request, 502, "Bad gateway.", str(refused), f"API {route.api['id']!r}")
            done("unreachable")
            return
        path = forwarded_path(route, request.path)
        query = request.uri.partition(b"?")[2]
        if extra_query:
            kept = [p for p in query.split(b"&") if p and not p.startswith(b"correlation=")]
            query = b"&".join([*kept, extra_query.encode("latin-1")])
        target = path + (b"?" + query if query else b"")
        if _UNSAFE.search(target):
            target = _UNSAFE.sub(_escape, target)
        lines = upstream_head(request, route, target, host=host, port=port,
                              by_address=self._by_address, trace=trace)
        body = None
        if method in BODY_METHODS:
            content = request.content
            length = content.seek(0, 2)
            content.seek(0)
            lines.append(b"Content-Length: %d\r\n" % length)
            body = content.read() if length <= INLINE_BODY_BYTES else content
        lines.append(b"\r\n")
        forwarding = _Forwarding(self, request, done, shown=shown + path.decode("utf-8", "replace"),
                                 keep_202=extra_query is not None)
        forwarding.asking = self._pool.send((scheme, host, port), method, b"".join(lines), body,
                                            forwarding)

    def forward_for_answer(self, request, route, extra_query, trace=None):
        """:meth:`forward` as a Deferred of ``(status, response or None)``."""
        finished = defer.Deferred()
        self.forward(request, route, finished.callback, extra_query, trace)
        return finished

    def _target(self, api):
        proxy = api["proxy"]
        key = (proxy["target_url"], proxy["port"], proxy.get("use_env"))
        target = self._targets.get(key)
        if target is None:
            target = target_of(api, self._policy)
            if len(self._targets) >= 1000:
                self._targets.clear()
            self._targets[key] = target
        return target

    def relay(self, request, response, done):
        """Copy status, end-to-end headers and the streamed body to the client;
        ``done()`` once the body is through."""
        request.setResponseCode(response.code, response.phrase)
        request.defaultContentType = None  # the backend's, or none
        listed = response.connection_header
        dropped = _passed_not_with(listed) if listed else PASSED_NOT
        request.passed_headers = [line for name, _value, line in response.headers
                                  if name not in dropped]
        if response.length is not None and request.method != b"HEAD":
            request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % response.length])
        response.deliver_body(_Relay(request, response, done))

    def _failed(self, request, status, message, why, url):
        """Log without the query string (it may carry tokens, ``?jwt=``) and without a
        ``use_env`` host (*url* names its variable instead)."""
        self.log.info("Proxy to {url} failed: {why}", url=url.partition("?")[0], why=why)
        if not client_gone(request):
            respond_now(request, status, message)


class _Forwarding:
    """One request on its way to the backend: its timeout, its client leaving; the
    waiter of its upstream exchange (``answered``, ``failed``, ``crashed``)."""

    __slots__ = ("asking", "done", "forwarder", "keep_202", "request", "response", "shown",
                 "timed_out", "timer")

    def __init__(self, forwarder, request, done, *, shown, keep_202):
        self.forwarder = forwarder
        self.request = request
        self.done = done
        self.asking = None  # the upstream exchange, once sent
        self.shown = shown
        self.keep_202 = keep_202
        self.response = None
        self.timed_out = False
        self.timer = forwarder._timeouts.start(self.give_up)
        request.on_gone = self.client_left

    def give_up(self):
        self.timed_out = True
        self.asking.cancel()

    def client_left(self):
        if self.response is not None:
            self.response.abort()
        elif self.asking is not None:
            self.asking.cancel()

    # The exchange and its waiter refer to each other: the reference goes when the
    # exchange settles, so no request leaves a cycle for the garbage collector.

    def answered(self, response):
        FixedTimeouts.stop(self.timer)
        self.asking = None
        self.response = response
        request = self.request
        if self.keep_202 and response.code == 202:
            response.discard_body()
            request.on_gone = None
            self.done(("ok", response))
            return
        self.forwarder.relay(request, response, self.relayed)

    def relayed(self):
        self.request.on_gone = None
        self.done(("ok", None) if self.keep_202 else "ok")

    def failed(self, failure):  # refused, reset, cancelled, TLS: no response
        FixedTimeouts.stop(self.timer)
        self.asking = None
        request = self.request
        request.on_gone = None
        forwarder = self.forwarder
        if self.timed_out:
            status = "request_timeout"
            forwarder._failed(request, 504, "Gateway timeout.", "timeout", self.shown)
        elif client_gone(request):
            status = None  # the client went away and we cancelled
        else:
            status = "unreachable"
            forwarder._failed(request, 502, "Bad gateway.", _why(failure.value), self.shown)
        self.done((status, None) if self.keep_202 else status)

    def crashed(self, failure):
        self.forwarder.log.failure("while forwarding to {url}", failure, url=self.shown)
        request = self.request
        if not (request.finished or client_gone(request)):
            abort_response(request)


def _why(error):
    """What a failed request's log line says: the error's class and its words."""
    return f"{type(error).__name__}: {error}"
