"""Small pieces shared by both HTTP listeners: a bounded request, a site, a router."""
import re
import tempfile
import weakref
from inspect import iscoroutine
from io import BytesIO
from urllib.parse import unquote_to_bytes as unquote

from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IHandshakeListener
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.http import parse_qs
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from rig.httputil import abort_response, client_gone, is_http2, redacted_path, respond
from rig.hub.outbox import write_now
from rig.memo import Memo
from rig.twistedcompat import reading, receive_whole_head
from rig.web.h2 import take_over

_REQUEST_LINE = re.compile(rb"[A-Z]{3,10} ")


class BoundedRequest(server.Request):
    """A request that refuses bodies over the site's limit without buffering them."""

    too_large = False
    client_gone = False  # the client closed its connection before the response finished
    on_gone = None  # called when it does (as ``notifyFinish()`` errbacks, without a Deferred)
    passed_headers = ()  # header lines sent as they are (a backend's, by the proxy)
    _body_bytes = 0

    def connectionLost(self, reason):
        if not self.finished:
            self.client_gone = True
            on_gone, self.on_gone = self.on_gone, None
            if on_gone is not None:
                on_gone()
        super().connectionLost(reason)

    def requestReceived(self, command, path, version):
        """As Twisted's, for a site that parses no form bodies (``RigSite``), with the
        query parsed through the site's memo (:meth:`RigSite.query_args`): the clients of
        a reconnect storm ask with the same query, and ``parse_qs`` (unquoting in
        Python) was a tenth of twisted.web's share of an SSE connect."""
        self.content.seek(0, 0)
        self.method, self.uri, self.clientproto = command, path, version
        self.path, question, query = path.partition(b"?")
        if not question:
            self.args = {}
        else:
            query_args = getattr(self.channel.site, "query_args", None)
            self.args = parse_qs(query, 1) if query_args is None else query_args(query)
        self.process()

    def process(self):
        """As Twisted's, for a site whose root is a leaf (the Router) and without the
        ``Server`` header: responses do not name the server software and its version.
        The ``Date`` header is made once a second, not once per request."""
        site = self.site = self.channel.site
        self.setHeader(b"Date", site.date_header())
        self.prepath, self.postpath, self.sitepath = [], self.path[1:].split(b"/"), []
        try:
            self.render(site.resource)
        except BaseException:
            self.processingFailed(Failure())

    def write(self, data):
        """Twisted's, then the response head goes out if no body came with it (the
        channel holds the head to send it with the first body bytes, in one write)."""
        channel = self.channel
        if self.passed_headers and not self.startedWriting and channel is not None:
            if isinstance(channel, RigChannel):
                channel.passed_headers = self.passed_headers
            else:  # HTTP/2 has no header lines: they go out as headers
                self._add_passed_headers()
        super().write(data)
        if getattr(channel, "held_head", None) is not None:
            channel.write(b"")

    def _add_passed_headers(self):
        headers = self.responseHeaders
        for line in self.passed_headers:
            name, _, value = line.partition(b":")
            headers.addRawHeader(name.strip().lower(), value.strip())

    def start_stream(self, headers):
        """Commit a 200 response head with *headers* (``(name, value)`` pairs that
        twisted.web's ``Headers`` made: canonical names, checked values) without sending
        it, and return its bytes: a stream sends them with its first bytes, one send
        instead of two. Over HTTP/2 the head goes out the ordinary way (b"" is returned).

        On an HTTP/1.1 channel the head is made here, as ``Request.write`` makes it: the
        headers set so far (``Connection``, ``Date``), then *headers*, then
        ``Transfer-Encoding: chunked`` (HTTP/1.1, not HEAD): setting each header and
        twisted.web's first write were about a tenth of an SSE connect's Python."""
        self.setResponseCode(200)
        if not isinstance(self.channel, RigChannel):
            for name, value in headers:
                self.responseHeaders.setRawHeaders(name, [value])
            super().write(b"")
            return b""
        self.startedWriting = 1
        self.chunked = chunked = self.clientproto == b"HTTP/1.1" and self.method != b"HEAD"
        head = [self.clientproto, b" 200 OK\r\n"]
        for name, values in self.responseHeaders.getAllRawHeaders():
            for value in values:
                head += (name, b": ", value, b"\r\n")
        for name, value in headers:
            head += (name, b": ", value, b"\r\n")
        head.append(b"Transfer-Encoding: chunked\r\n\r\n" if chunked else b"\r\n")
        return b"".join(head)

    def _limit(self):
        """Proxied requests may carry big (disk-buffered) bodies; RIG's own routes may not."""
        channel = self.channel
        site = channel.site
        # the request line's path (HTTP/1.1), or the :path of an HTTP/2 stream
        path = getattr(channel, "head_path", None) or getattr(channel, "path", None) or b""
        if site.max_proxy_body_bytes is not None and not path.startswith(b"/_rig/"):
            return site.max_proxy_body_bytes
        return site.max_request_bytes

    def gotLength(self, length):
        limit = self._limit()
        if length is not None and length > limit:
            self.too_large = True
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self.too_large:
            return
        self._body_bytes += len(data)
        if self._body_bytes > self._limit():
            self.too_large = True
            self.content.seek(0)
            self.content.truncate()
            return
        super().handleContentChunk(data)


@implementer(IHandshakeListener)
class RigChannel(http.HTTPChannel):
    """Room for 16 KB header values (long JWTs and SAML tokens), as RIG allows.

    Known to its site while open, so a shutdown can drain it (see :meth:`RigSite.drain`).
    On a TLS connection whose client chose HTTP/2 by ALPN, it hands the connection
    to an HTTP/2 channel once the handshake is done (:mod:`rig.web.h2`).
    """

    MAX_LENGTH = 32768
    totalHeadersSize = 65536

    _head_timer = None
    _head_started = None  # when the first byte of the head in progress came
    _in_head = True  # the next bytes belong to a request head
    head_path = None  # the path of the request line being received (bodies are bounded by it)
    held_head = None  # a response head waiting for the first bytes of its body
    passed_headers = ()  # the writing request's header lines to send as they are
    _host = None
    _peer = None
    _secure = None

    # One write per response: Twisted writes the head and the body separately,
    # and a lone transport.write costs a reactor turn and two epoll calls; an
    # idle connection's bytes go straight to the socket instead.

    def writeHeaders(self, version, code, reason, headers):
        head = [version, b" ", code, b" ", reason, b"\r\n"]
        for name, values in headers.getAllRawHeaders():
            for value in values:
                head += (name, b": ", value, b"\r\n")
        passed, self.passed_headers = self.passed_headers, ()
        for line in passed:
            head += (line, b"\r\n")
        head.append(b"\r\n")
        self.held_head = head

    def write(self, data):
        head = self.held_head
        if head is not None:
            self.held_head = None
            head.append(data)
            data = b"".join(head)
        if data:
            write_now(self.transport, data)

    def writeSequence(self, iovec):
        self.write(b"".join(iovec))

    def getHost(self):
        """The local address, asked of the socket once per connection, not per request."""
        if self._host is None:
            self._host = self.transport.getHost()
        return self._host

    def getPeer(self):
        """The client's address, made once per connection (a TCP transport builds a
        new address object each time it is asked, and every request asks)."""
        if self._peer is None:
            self._peer = self.transport.getPeer()
        return self._peer

    def isSecure(self):
        if self._secure is None:
            self._secure = super().isSecure()
        return self._secure

    def connectionMade(self):
        super().connectionMade()  # turns Nagle off on TCP (and under TLS), once
        self.site.channel_opened(self)

    def handshakeCompleted(self):
        """TLS is up (the TLS layer calls this before any request byte arrives)."""
        if getattr(self.transport, "negotiatedProtocol", None) == b"h2":
            take_over(self)

    def let_go(self, transport):
        """*transport*, this channel's connection, now belongs to another protocol (a
        WebSocket, HTTP/2): the channel is no longer its producer, no timer of the
        channel may fire on it, and the site no longer drains it. Each of these held
        the channel and the request that asked for the upgrade for as long as it
        lasted; with them gone, so are the channel and the request (they refer to each
        other, so the request is forgotten first: only the garbage collector would
        free a cycle)."""
        transport.unregisterProducer()
        self._cancel_head_timer()
        self.setTimeout(None)
        self._stop_idle_timer()
        self.requests = []
        self.site.channel_closed(self)

    def connectionLost(self, reason):
        self._cancel_head_timer()
        stream, self.lane_stream = self.lane_stream, None
        if stream is not None:
            stream._lost()
        self.site.channel_closed(self)
        super().connectionLost(reason)
        self._stop_idle_timer()

    # The idle timeout (no request in progress for ``timeOut`` seconds). Twisted's
    # HTTPChannel pauses it with setTimeout(None) when a request starts and restarts
    # it with setTimeout(period) when the response ends: a timer cancelled and a new
    # one made (two heap operations) for every request. Here the one timer stays: a
    # pause only clears ``timeOut``, a restart moves the timer later (which costs no
    # heap operation), and a timer that fires while paused finds nothing to do.
    #
    # Until its first bytes come, a connection has no timer of its own: the site
    # watches its silent connections with one timer for all (``RigSite.watch_silent``).
    # A connect whose first read is a whole request head (an SSE or WebSocket connect,
    # nearly every request) then never makes a timer: its request pauses the timeout
    # at once, and a stream's request lasts as long as the connection.

    _idle_timer = None
    _heard = False  # its first bytes came

    def setTimeout(self, period):
        previous, self.timeOut = self.timeOut, period
        if period is not None:
            timer = self._idle_timer
            if timer is not None and timer.active():
                timer.reset(period)
            elif not self._heard:
                self.site.watch_silent(self, period)
            else:
                self._idle_timer = self.callLater(period, self._idle_timer_fired)
        return previous

    def resetTimeout(self):
        timer = self._idle_timer
        if timer is not None and self.timeOut is not None:
            timer.reset(self.timeOut)

    def _idle_timer_fired(self):
        self._idle_timer = None
        if self.timeOut is not None:  # else a request is in progress: its end sets a timer
            self.timeoutConnection()

    def _stop_idle_timer(self):
        timer, self._idle_timer = self._idle_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    # A stream served without a twisted.web request (``RigSite.stream_lane``: an SSE
    # connect) is this channel's request in progress: bytes that come meanwhile wait,
    # with the transport paused (as twisted.web holds a pipelined request), and are
    # taken in once the stream ends; the connection's loss ends the stream.

    lane_stream = None
    _lane_saved_timeout = None
    _lane_held = b""

    def open_lane_stream(self, stream):
        """*stream* (with ``_lost()``) answers the head just received."""
        self.lane_stream = stream
        self._in_head = False
        self._lane_saved_timeout = self.setTimeout(None)

    def end_lane_stream(self):
        """The stream's response is complete: serve on, or close if asked to."""
        self.lane_stream = None
        self._in_head = True
        if not self.persistent:
            self.loseConnection()
            return
        self.setTimeout(self._lane_saved_timeout)
        held, self._lane_held = self._lane_held, b""
        if held:
            reading(self).resumeProducing()
            self.dataReceived(held)

    def dataReceived(self, data):
        if self.lane_stream is not None:
            self._lane_held += data
            if len(self._lane_held) > self.totalHeadersSize:  # more than a request head:
                self.transport.abortConnection()  # (a TLS connection reads on, unpaused)
                return
            reading(self).pauseProducing()
            return
        if not self._heard:
            self._heard = True
            self.site.heard_from(self)
            try:
                self._receive(data)
            finally:  # no request in progress (a part of a head, or of a body): timed
                if self.timeOut is not None and self._idle_timer is None:
                    self._idle_timer = self.callLater(self.timeOut, self._idle_timer_fired)
            return
        self._receive(data)

    # A request head must arrive whole within the site's header_timeout from its first
    # byte: the idle timeout restarts with every byte, so one header byte every few
    # seconds would otherwise hold a connection (and a file descriptor) forever. One
    # timer per connection checks the head in progress when it fires (a timer set and
    # cancelled per request would cost two heap operations on every request). A head
    # whose end comes in the same read as its start (nearly all) is never timed: a
    # short connection (an SSE or WebSocket connect) then makes no head timer at all.

    def _receive(self, data):
        if self._in_head:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if self._head_started is None and self.site.header_timeout:
                    self._head_started = self.site.reactor.seconds()
                    if self._head_timer is None:
                        self._head_timer = self.site.reactor.callLater(
                            self.site.header_timeout, self._check_head)
            elif end == len(data) - 4:  # the whole head, and nothing after it
                lane = self.site.stream_lane
                if lane is not None and data.startswith(lane.prefix) and lane(self, data):
                    return
                if receive_whole_head(self, data):
                    return
        super().dataReceived(data)

    def lineReceived(self, line):
        if self.head_path is None and self._in_head and line:
            parts = line.split(b" ")
            self.head_path = parts[1] if len(parts) > 1 else b""
        super().lineReceived(line)

    def allHeadersReceived(self):
        self._in_head = False
        self._head_started = None
        super().allHeadersReceived()

    def requestDone(self, request):
        self._in_head = True  # before the pipelined data that the base class replays
        self.head_path = None
        super().requestDone(request)

    def _check_head(self):
        self._head_timer = None
        started = self._head_started
        if started is None:  # no head in progress: the next one sets a timer again
            return
        left = started + self.site.header_timeout - self.site.reactor.seconds()
        if left > 0:  # a later head than the one the timer was set for
            self._head_timer = self.site.reactor.callLater(left, self._check_head)
            return
        text = b"Request head not received in time."
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain;"
                             b" charset=utf-8\r\ncontent-length: %d\r\nconnection: close"
                             b"\r\n\r\n%s" % (len(text), text))
        self.transport.loseConnection()

    def _cancel_head_timer(self):
        timer, self._head_timer = self._head_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def lineLengthExceeded(self, line):
        """A request line or header over ``MAX_LENGTH``: say which (414 or 431), then close
        (Twisted would close without a word)."""
        if _REQUEST_LINE.match(line):
            status, text = b"414 URI Too Long", b"URI too long."
        else:
            status, text = b"431 Request Header Fields Too Large", b"Request header too large."
        self.transport.write(b"HTTP/1.1 %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                             b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                             % (status, len(text), text))
        self.transport.loseConnection()

    def checkPersistence(self, request, version):
        """While the site drains, every response is the connection's last."""
        if self.site.draining:
            request.responseHeaders.setRawHeaders(b"connection", [b"close"])
            return False
        return super().checkPersistence(request, version)

    def close_when_done(self):
        """Close now when no request is in progress, else right after its response.

        Closing (rather than aborting) sends what is still buffered first.
        """
        self.persistent = False
        if not self.requests and self.lane_stream is None:
            self.loseConnection()
            return
        for request in self.requests:
            if not request.startedWriting:
                request.responseHeaders.setRawHeaders(b"connection", [b"close"])


class RigSite(server.Site):
    """No access log lines, no tracebacks to clients, bounded bodies, a bounded drain."""

    displayTracebacks = False
    noisy = False
    protocol = RigChannel
    # lane(channel, data): serves a whole head that starts with lane.prefix without a
    # twisted.web request, or returns False (rig.connections.sse_lane)
    stream_lane = None

    def __init__(self, resource, *, max_request_bytes=8_000_000, max_proxy_body_bytes=None,
                 header_timeout=30.0, idle_timeout=75.0, **kwargs):
        """*idle_timeout* closes a keep-alive connection with no request in progress;
        *header_timeout* bounds a request head from its first byte. Streams (SSE,
        WebSocket, parked long polls) are requests in progress: neither applies."""
        # No form parsing by Twisted (parsePOSTFormSubmission): it would read every
        # multipart POST through the email parser on the reactor, proxied uploads too, and
        # answer a malformed one with a bare 400 and a dropped connection before any
        # handler; the internal API parses its forms itself (rig/web/params.py).
        super().__init__(resource, requestFactory=BoundedRequest, timeout=idle_timeout,
                         parsePOSTFormSubmission=False, **kwargs)
        self.max_request_bytes = max_request_bytes
        self.max_proxy_body_bytes = max_proxy_body_bytes
        self.header_timeout = header_timeout
        # Weak, in case a channel whose transport was taken over (a WebSocket) is not
        # forgotten with channel_closed: it never hears connectionLost.
        self._channels = weakref.WeakSet()
        self.draining = False
        self._busy = set()  # channels the drain waits for
        self._drained = None
        self._query_memo = Memo(self._MEMO_ENTRIES)  # query -> its parse_qs (query_args)
        self._item_memo = Memo(self._MEMO_ENTRIES)  # b"name=value" -> (name, value)
        self._silent = {}  # channel -> when it times out, unless it speaks first
        self._sweep = None  # the one timer of the silent channels

    def log(self, request):
        pass

    _MEMO_ENTRIES = 256
    _MEMO_QUERY_BYTES = 4096

    def query_args(self, query):
        """``parse_qs(query, keep_blank_values=1)``, as twisted.web parses a request's
        query: made once for each of the last few hundred short queries, and copied for
        each request (a handler may change its own). A query that carries a token per
        client (``?jwt=``) is parsed, with its other items (the subscriptions) from the
        memo of items: ``parse_qs`` unquotes each in Python."""
        memo = self._query_memo
        parsed = memo.get(query)
        if parsed is None:
            parsed = self._parse_query(query)
            if len(query) > self._MEMO_QUERY_BYTES:
                return parsed
            memo.remember(query, parsed)
        return {name: list(values) for name, values in parsed.items()}

    def _parse_query(self, query):
        """``parse_qs(query, 1)``, each ``name=value`` item unquoted once."""
        items, args = self._item_memo, {}
        for part in query.split(b"&"):
            for item in part.split(b";"):
                pair = items.get(item)
                if pair is None:
                    name, equals, value = item.partition(b"=")
                    if not equals:
                        continue  # no "=": parse_qs skips it
                    pair = (unquote(name.replace(b"+", b" ")), unquote(value.replace(b"+", b" ")))
                    if len(item) <= self._MEMO_QUERY_BYTES:
                        items.remember(item, pair)
                values = args.get(pair[0])
                if values is None:
                    args[pair[0]] = [pair[1]]
                else:
                    values.append(pair[1])
        return args

    @staticmethod
    def getContentFile(length):
        """A request body's buffer, as twisted.web's own: memory up to 100 KB, else a
        temporary file. twisted.web asks the site first, and without this method it
        raised and caught an AttributeError for every request."""
        if length is not None and length < 100_000:
            return BytesIO()
        return tempfile.TemporaryFile()

    def acceptableProtocols(self):
        """None of its own: what TLS offers by ALPN is the listener's TLS options' alone
        (rig/tls.py). Twisted's Site would add ``h2`` whenever h2 is installed."""
        return []

    _date = (None, b"")

    def date_header(self):
        """The ``Date`` header's value, made again when the second changes."""
        second = int(self.reactor.seconds())
        if self._date[0] != second:
            self._date = (second, http.datetimeToString(second))
        return self._date[1]

    def channel_opened(self, channel):
        self._channels.add(channel)
        if self.draining:
            self._busy.add(channel)
            channel.close_when_done()

    def channel_closed(self, channel):
        """*channel* is closed, or its connection now belongs to someone else."""
        self._channels.discard(channel)
        self._silent.pop(channel, None)
        busy = self._busy
        if channel in busy:
            busy.discard(channel)
            if not busy and self._drained is not None:
                drained, self._drained = self._drained, None
                drained.callback(0)

    def watch_silent(self, channel, timeout):
        """Time *channel* out after *timeout* seconds unless its first bytes come first.

        One timer for all silent channels instead of one per connection: a timer made
        and cancelled for every connect was a twentieth of an SSE connect's Python.
        The channels wait in order of their deadlines (the timeout is the site's), so a
        sweep looks at no more of them than it times out, and the timer, once set, is
        never cancelled for a channel that speaks: it fires at most once a timeout."""
        self._silent[channel] = self.reactor.seconds() + timeout
        if self._sweep is None:
            self._sweep = self.reactor.callLater(timeout, self._sweep_silent)

    def heard_from(self, channel):
        """*channel*'s first bytes came: its own timer takes over, if it needs one."""
        self._silent.pop(channel, None)

    def _sweep_silent(self):
        self._sweep = None
        silent, now = self._silent, self.reactor.seconds()
        while silent:
            channel = next(iter(silent))
            deadline = silent[channel]
            if deadline > now:
                self._sweep = self.reactor.callLater(deadline - now, self._sweep_silent)
                return
            del silent[channel]
            if channel.timeOut is not None and channel.transport is not None:
                channel.timeoutConnection()

    def stopFactory(self):
        """No longer listening: the silent channels' timer goes (drain closes them)."""
        sweep, self._sweep = self._sweep, None
        if sweep is not None and sweep.active():
            sweep.cancel()
        super().stopFactory()

    def drain(self, reactor, timeout):
        """Let requests in progress finish, then close: for a shutdown, after stopListening.

        Idle keep-alive connections close at once; busy ones close right after
        their current response (``Connection: close``), so nothing new starts
        on them. Returns a Deferred firing with the number of connections still
        open after *timeout* seconds, which are then aborted (0 when all
        finished in time). Connections taken over by a WebSocket are not
        waited for here: the hub closes those.
        """
        self.draining = True
        for channel in list(self._channels):
            if channel.transport is not None:
                self._busy.add(channel)
                channel.close_when_done()
        if not self._busy:
            return succeed(0)
        self._drained = Deferred()
        return self._drained.addTimeout(timeout, reactor, onTimeoutCancel=self._drain_timed_out)

    def _drain_timed_out(self, _result, timeout):
        self._drained = None
        busy, self._busy = self._busy, set()
        for channel in busy:
            if channel.transport is not None:
                channel.transport.abortConnection()
        return len(busy)


def _literal_prefix(pattern):
    """The plain text every match of *pattern* starts with (up to its first special);
    none for a pattern with an alternation (it might be at the top level)."""
    if "|" in pattern:
        return ""
    special = re.search(r"[\\.^$*+?{}\[\]|()]", pattern)
    if special is None:
        return pattern
    end = special.start()
    if special.group() in "*+?{":  # a quantifier: the character before it is optional
        end -= 1
    return pattern[:max(end, 0)]


class Router(Resource):
    """Dispatches on (method, path pattern); anything unmatched goes to *fallback*.

    Handlers are ``handler(request, **path_groups)`` returning bytes,
    ``NOT_DONE_YET``, or a Deferred (or coroutine) of either. HEAD is routed as GET.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, routes, fallback):
        super().__init__()
        self._routes = [(_literal_prefix(pattern), re.compile(pattern), methods)
                        for pattern, methods in routes]
        self._fallback = fallback

    def routes(self):
        """``(pattern, methods)`` for each route, in matching order: what this router
        serves, for the API description's drift test."""
        return [(pattern.pattern, tuple(methods)) for _prefix, pattern, methods in self._routes]

    def render(self, request):
        handler, groups = self._resolve(request)
        if request.too_large:  # HTTP/1.1 closes the connection (the body is not read)
            return respond(
                request, http.REQUEST_ENTITY_TOO_LARGE, "Request body too large.",
                headers=[] if is_http2(request) else [(b"connection", b"close")],
            )
        try:
            result = (handler or self._fallback)(request, **groups)
        except Exception:
            return self._failed(Failure(), request)
        if iscoroutine(result):
            result = ensureDeferred(result)
        if isinstance(result, Deferred):
            result.addErrback(self._failed, request).addCallback(self._finish, request)
            return NOT_DONE_YET
        return result

    def _failed(self, failure, request):
        self.log.failure("while serving {method} {path}", failure, method=request.method,
                         path=redacted_path(request.path))
        if request.startedWriting:
            abort_response(request)
            return NOT_DONE_YET
        return respond(request, http.INTERNAL_SERVER_ERROR, "Internal server error.")

    @staticmethod
    def _finish(body, request):
        """Complete an asynchronously rendered request, unless its client left."""
        if body is NOT_DONE_YET or request.finished or request.channel is None:
            return
        if client_gone(request):
            return
        request.write(body)
        request.finish()

    def _resolve(self, request):
        path = request.path.decode("utf-8", "replace")
        method = b"GET" if request.method == b"HEAD" else request.method
        for prefix, pattern, methods in self._routes:
            if not path.startswith(prefix):  # cheaper than the pattern, for proxied paths
                continue
            match = pattern.fullmatch(path)
            if match is not None:
                handler = methods.get(method) or methods.get(b"*")
                if handler is not None:
                    return handler, match.groupdict()
        return None, {}
