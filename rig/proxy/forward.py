"""Forwarding a matched request to an HTTP backend, streamed both ways.

Request bodies come from twisted.web's buffer (a temporary file beyond
100 KB, so memory stays flat) through a ``FileBodyProducer``; response bodies
are streamed to the client with the backend connection registered as the
request's producer, so a slow client pauses the backend instead of filling
memory. A client that goes away cancels the upstream request.
"""
from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.web.client import FileBodyProducer, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import UNKNOWN_LENGTH
from twisted.web.server import NOT_DONE_YET

from rig.httputil import client_gone, respond
from rig.proxy.gateway import Outcome
from rig.proxy.targets import TargetPolicy, TargetRefused

HOP_BY_HOP = frozenset((
    b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
    b"http2-settings", b"te", b"trailer", b"proxy-authenticate", b"proxy-authorization",
))
FORWARDED_METHODS = frozenset((b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD",
                               b"OPTIONS"))
BODY_METHODS = frozenset((b"POST", b"PUT", b"PATCH"))


def target_base(api, policy):
    """``(scheme://host:port, host, port, shown)`` of an API's backend; *shown* is what
    logs may say (a ``use_env`` host is named by its variable, never by its value).
    TargetRefused when the policy does not allow the variable."""
    proxy = api["proxy"]
    scheme, host = policy.host_of(proxy)
    port = proxy["port"]
    shown = f"{scheme}://${proxy['target_url']}:{port}" if proxy.get("use_env") else None
    base = f"{scheme}://{host}:{port}"
    return base, host, port, shown or base


def forwarded_path(route, path):
    replacement = route.endpoint.get("path_replacement")
    if not replacement:
        return path
    return route.pattern.sub(replacement, path, count=1)


def upstream_headers(request, route, host, port, by_address):
    """The client's headers minus hop-by-hop ones, with Host, Forwarded and X-Forwarded-*."""
    headers = Headers()
    connection_tokens = {
        token.strip().lower().encode()
        for value in request.requestHeaders.getRawHeaders(b"connection", [])
        for token in value.decode("latin-1").split(",")
    }
    for name, values in request.requestHeaders.getAllRawHeaders():
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in connection_tokens or lower in (
            b"host", b"content-length", b"forwarded"
        ):
            continue
        headers.setRawHeaders(lower, values)
    if route.endpoint.get("transform_request_headers"):
        add = route.api["version_data"]["default"].get("transform_request_headers", {})
        for name, value in (add.get("add_headers") or {}).items():
            headers.setRawHeaders(name.encode("latin-1").lower(), [str(value).encode("latin-1")])
    client = request.getClientAddress()
    client_host = getattr(client, "host", "unknown")
    incoming_host = request.getHeader(b"host") or b""
    scheme = b"https" if request.isSecure() else b"http"
    headers.setRawHeaders(b"host", [f"{host}:{port}".encode()])
    headers.setRawHeaders(b"forwarded", [f"for={client_host};by={by_address}".encode()])
    previous = request.getHeader(b"x-forwarded-for")
    chain = (previous + b", " if previous else b"") + client_host.encode()
    headers.setRawHeaders(b"x-forwarded-for", [chain])
    headers.setRawHeaders(b"x-forwarded-proto", [scheme])
    if incoming_host:
        headers.setRawHeaders(b"x-forwarded-host", [incoming_host])
    return headers


class _BodyStreamer(Protocol):
    """Copies a backend response body to the client, paced by the client."""

    def __init__(self, request, done):
        self.request = request
        self.done = done

    def connectionMade(self):
        self.request.registerProducer(self.transport, True)

    def dataReceived(self, data):
        if not client_gone(self.request):
            self.request.write(data)

    def connectionLost(self, reason):
        request = self.request
        request.unregisterProducer()
        if client_gone(request) or request.finished:
            self.done.callback(None)
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            request.finish()
        else:
            request.loseConnection()  # mid-response failure: the client sees a cut stream
        self.done.callback(None)


class Forwarder:
    """Sends requests upstream through one shared Agent and answers the client."""

    log = Logger()

    def __init__(self, reactor, agent, *, recv_timeout, by_address, policy=None):
        self._reactor = reactor
        self._agent = agent
        self._recv_timeout = recv_timeout
        self._by_address = by_address
        self._policy = policy if policy is not None else TargetPolicy()

    async def forward(self, request, route, extra_query=None, outcome=None):
        """Forward and answer; returns the backend's status or None when there was none.

        With *extra_query* (``correlation=...``), a backend 202 is handed back
        to the caller instead of being sent (``response_from`` waits). A failure
        is named on *outcome* (a :class:`rig.proxy.gateway.Outcome`) for the metrics.
        """
        outcome = outcome if outcome is not None else Outcome()
        method = request.method
        if method not in FORWARDED_METHODS:
            outcome.status = "bad_request"
            return respond(request, 405, "Method not allowed.")
        try:
            base, host, port, shown = target_base(route.api, self._policy)
        except TargetRefused as refused:  # e.g. replicated from a node that allows more
            outcome.status = "unreachable"
            return self._failed(request, 502, "Bad gateway.", str(refused),
                                f"API {route.api['id']!r}")
        path = forwarded_path(route, request.path.decode("utf-8", "replace"))
        query = request.uri.partition(b"?")[2].decode("latin-1")
        if extra_query:
            kept = [p for p in query.split("&") if p and not p.startswith("correlation=")]
            query = "&".join([*kept, extra_query])
        url = base + path + ("?" + query if query else "")
        shown_url = shown + path
        headers = upstream_headers(request, route, host, port, self._by_address)
        body = None
        if method in BODY_METHODS:
            request.content.seek(0)
            body = FileBodyProducer(request.content)
        asking = self._agent.request(method, url.encode("utf-8"), headers, body)
        timed_out = []

        def give_up():
            timed_out.append(True)
            asking.cancel()

        timer = self._reactor.callLater(self._recv_timeout, give_up)
        finished = request.notifyFinish()
        finished.addErrback(lambda _: asking.cancel())  # no-op once the response is in
        try:
            response = await asking
        except Exception as error:  # refused, reset, cancelled, TLS: no response
            if timed_out:
                outcome.status = "request_timeout"
                return self._failed(request, 504, "Gateway timeout.", "timeout", shown_url)
            if client_gone(request):
                outcome.status = None
                return NOT_DONE_YET  # the client went away and we cancelled
            outcome.status = "unreachable"
            return self._failed(request, 502, "Bad gateway.", repr(error), shown_url)
        finally:
            if timer.active():
                timer.cancel()
        if extra_query and response.code == 202:
            response.deliverBody(_Discard())
            return response
        await self.relay(request, response)
        return NOT_DONE_YET

    def relay(self, request, response):
        """Copy status, end-to-end headers and the streamed body to the client."""
        request.setResponseCode(response.code, response.phrase)
        for name, values in response.headers.getAllRawHeaders():
            if name.lower() not in HOP_BY_HOP:
                request.responseHeaders.setRawHeaders(name, values)
        if response.length is not UNKNOWN_LENGTH and request.method != b"HEAD":
            request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % response.length])
        done = defer.Deferred()
        response.deliverBody(_BodyStreamer(request, done))
        return done

    def _failed(self, request, status, message, why, url):
        """Log without the query string (it may carry tokens, ``?jwt=``) and without a
        ``use_env`` host (*url* names its variable instead)."""
        self.log.info("Proxy to {url} failed: {why}", url=url.partition("?")[0], why=why)
        if client_gone(request):
            return NOT_DONE_YET
        return respond(request, status, message)


class _Discard(Protocol):
    def connectionLost(self, reason):
        pass

