"""A lean HTTP/1.1 client for forwarding requests to backends, with a keep-alive pool.

Why not Agent (treq's client): measured on a proxied request, Agent and its
client protocol cost more than the whole gateway's own share (the inbound
HTTP server, routing, header rewriting and the response relay) together;
see benchmarks/README.rst, "The proxy". This client sends a request head in
one write, reads a response head in one pass, and keeps connections per
backend (scheme, host, port).

Bodies stream both ways with backpressure: a request body from a file is
written by a ``FileBodyProducer`` that the backend connection pauses, and a
response body is handed to a receiver that registers the connection as its
producer, so a slow client stops the reading from the backend.
"""
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import BrowserLikePolicyForHTTPS, FileBodyProducer

from rig.hub.outbox import no_delay, write_now

MAX_HEAD_BYTES = 65536  # a response head larger than this is not HTTP we forward
MAX_CHUNK_LINE = 4096
INLINE_BODY_BYTES = 65536  # request bodies up to this size go out with the head
PENDING_LIMIT = 1 << 20  # body bytes buffered before the receiver is attached
RETRIED_METHODS = frozenset((b"GET", b"HEAD", b"OPTIONS", b"DELETE"))
_NO_BODY_CODES = frozenset((204, 304))
_BLANKS = b" \t"  # a header name must not end, nor a line begin, with one (bytes: ints)
_FRAMING = frozenset((b"content-length", b"transfer-encoding", b"connection"))
_log = Logger()

# how a response body is delimited
_NONE, _LENGTH, _CHUNKED, _CLOSE = range(4)
# within a chunked body: data, the CRLF after it, a size line, trailer lines
_DATA, _DATA_END, _SIZE, _TRAILER = range(4)


class UpstreamError(Exception):
    """The backend gave no usable response."""


class BadResponse(UpstreamError):
    """The backend's bytes are not an HTTP/1.x response."""


class ClosedEarly(UpstreamError):
    """The connection closed before the response (head, or body) was complete."""


class Response:
    """A backend's response head; the body follows through :meth:`deliver_body`."""

    __slots__ = ("_connection", "code", "connection_header", "headers", "length", "phrase")

    def __init__(self, code, phrase, headers, length, connection, *, connection_header=()):
        self.code = code
        self.phrase = phrase  # bytes
        self.headers = headers  # [(lower-case name, value, line as sent)], hop-by-hop included
        self.length = length  # from Content-Length; None when chunked or until close
        self._connection = connection
        self.connection_header = connection_header  # the Connection headers' values, a tuple

    def deliver_body(self, receiver):
        """Hand the body to *receiver*: ``data(bytes)`` for each piece, ``producing(p)``
        before data that is still to come (register *p*, the backend connection, as its
        push producer), and ``done(error)`` once (None when the body is complete)."""
        self._connection.deliver_body(receiver)

    def discard_body(self):
        self._connection.deliver_body(_Discard())

    def abort(self):
        """Drop the connection (the client went away while the body came)."""
        self._connection.abort()


class _Discard:
    def producing(self, producer):
        pass

    def data(self, data):
        pass

    def done(self, error):
        pass


class _Exchange:
    """One request on its way: what to send, and who waits for the response head.

    The waiter hears of the outcome by a direct call, once: ``answered(response)``,
    or ``failed(failure)``; ``crashed(failure)`` if either of those raises. The
    forwarder is its own waiter (a Deferred per proxied request, with its callback
    chain, cost about 4 % of the proxy's time); :meth:`UpstreamPool.request` waits
    with a Deferred.
    """

    __slots__ = (
        "body",
        "connecting",
        "connection",
        "head",
        "key",
        "method",
        "retry",
        "settled",
        "waiter",
    )

    def __init__(self, key, method, head, body, waiter=None):
        self.key = key
        self.method = method
        self.head = head
        self.body = body  # None, bytes (sent with the head) or a seekable file
        self.retry = method in RETRIED_METHODS and body is None
        self.connection = None
        self.connecting = None
        self.settled = False
        self.waiter = _DeferredWaiter(self) if waiter is None else waiter

    @property
    def deferred(self):
        """The Deferred of an exchange made without a waiter of its own."""
        return self.waiter.deferred

    def answer(self, response):
        if not self.settled:
            self.settled = True
            try:
                self.waiter.answered(response)
            except Exception:
                self.waiter.crashed(Failure())

    def fail(self, error):
        if not self.settled:
            self.settled = True
            try:
                self.waiter.failed(error if isinstance(error, Failure) else Failure(error))
            except Exception:
                self.waiter.crashed(Failure())

    def cancel(self):
        """Give up: stop connecting, or drop the connection; the waiter hears
        ``failed`` (as a cancelled Deferred: the connect's error or CancelledError)."""
        if self.settled:
            return
        if self.connecting is not None:
            self.connecting.cancel()
        elif self.connection is not None:
            self.connection.abort()
        self.fail(defer.CancelledError())


class _DeferredWaiter:
    """An exchange's outcome as a Deferred; cancelling it cancels the exchange."""

    __slots__ = ("deferred",)

    def __init__(self, exchange):
        self.deferred = defer.Deferred(lambda _deferred: exchange.cancel())

    def answered(self, response):
        self.deferred.callback(response)

    def failed(self, failure):
        self.deferred.errback(failure)

    def crashed(self, failure):  # a Deferred's callback does not raise into its caller
        _log.failure("upstream exchange", failure)


class UpstreamConnection(Protocol):
    """One keep-alive connection to a backend; one request at a time."""

    def __init__(self, pool, key):
        self._pool = pool
        self.key = key
        self._exchange = None
        self._buffer = b""
        self._response = None  # the head of the response in progress
        self._mode = _NONE
        self._left = 0  # body bytes still to come (_LENGTH) or of the current chunk
        self._chunk_state = _SIZE
        self._receiver = None
        self._pending = None  # body pieces received before a receiver was attached
        self._pending_bytes = 0
        self._producing = False  # the receiver registered us as its producer
        self._sending = None  # the request body's producer while it writes
        self._reusable = False
        self._outcome = None  # how the response ended: None (complete) or the error
        self.served = 0  # requests completed on this connection
        self.idle_since = None
        self.closed = False

    # -- lifecycle ----------------------------------------------------------------------

    def connectionMade(self):
        no_delay(getattr(self.transport, "transport", None) or self.transport)

    def send(self, exchange):
        exchange.connection = self
        self._exchange = exchange
        self._buffer = b""
        self._response = None
        self._receiver = self._pending = None
        self._pending_bytes = 0
        self._producing = False
        body = exchange.body
        if body is None or isinstance(body, bytes):
            write_now(self.transport, exchange.head + body if body else exchange.head)
            return
        self.transport.write(exchange.head)
        producer = self._sending = FileBodyProducer(body)
        self.transport.registerProducer(producer, True)
        producer.startProducing(self.transport).addBoth(self._body_sent, producer)

    def _body_sent(self, result, producer):
        if self._sending is producer:
            self._sending = None
            if not self.closed:
                self.transport.unregisterProducer()
        # a stopped producer's failure is expected: the exchange ended

    def abort(self):
        if not self.closed:
            self.transport.abortConnection()

    def connectionLost(self, reason):
        self.closed = True
        self._pool.forget(self)
        if self._sending is not None:
            producer, self._sending = self._sending, None
            producer.stopProducing()
        exchange, self._exchange = self._exchange, None
        if exchange is None:
            return
        if self._response is None:  # no response head
            if not exchange.settled:
                got_bytes = bool(self._buffer)
                if exchange.retry and self.served and not got_bytes:
                    # an idle keep-alive connection the backend closed as we reused it
                    self._pool.retry(exchange)
                    return
                why = reason.getErrorMessage()
                exchange.fail(ClosedEarly(f"connection closed before a response: {why}"))
            return
        if self._mode == _CLOSE:
            self._finish(None)
        else:
            self._finish(ClosedEarly(f"response body cut: {reason.getErrorMessage()}"))

    # -- receiving ------------------------------------------------------------------------

    def dataReceived(self, data):
        if self._response is not None:
            self._body(data)
            return
        exchange = self._exchange
        if exchange is None:  # bytes nobody asked for: this connection is unusable
            self.transport.abortConnection()
            return
        buffer = self._buffer + data if self._buffer else data
        end = buffer.find(b"\r\n\r\n")
        if end < 0 or end > MAX_HEAD_BYTES:
            if len(buffer) > MAX_HEAD_BYTES:
                self._fail(BadResponse("response head too large"))
            else:
                self._buffer = buffer
            return
        self._buffer = b""
        try:
            response = self._parse_head(buffer[:end])
        except (ValueError, IndexError) as error:
            self._fail(BadResponse(f"not an HTTP response: {error}"))
            return
        rest = buffer[end + 4:]
        if response is None:  # 1xx: the real response follows
            if rest:
                self.dataReceived(rest)
            return
        self._response = response
        if rest:
            self._body(rest)
        if self._mode == _NONE and self._exchange is exchange:
            self._finish(None)  # no body to wait for
        exchange.answer(response)

    def _parse_head(self, head):
        crlf = head.count(b"\r\n")
        if head.count(b"\n") != crlf or head.count(b"\r") != crlf:
            raise ValueError("a bare CR or LF in the head")  # header lines are passed on as sent
        lines = head.split(b"\r\n")
        version, code, phrase = _status_line(lines[0])
        if code < 200:
            return None
        headers = []
        length = None
        chunked = encoded = False
        keep_alive = version == b"HTTP/1.1"
        connection_header = ()
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name or name[-1] in _BLANKS or line[0] in _BLANKS:
                raise ValueError(f"bad header line {line[:40]!r}")
            name = name.lower()
            value = value.strip(b" \t")
            if name in _FRAMING:
                if name == b"content-length":
                    if not value.isdigit() or (length is not None and int(value) != length):
                        raise ValueError("bad Content-Length")
                    length = int(value)
                    continue
                if name == b"transfer-encoding":
                    encoded = True
                    chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
                    if not chunked:
                        keep_alive = False  # delimited by the close
                else:  # connection
                    connection_header += (value,)
                    if b"close" in value.lower():
                        keep_alive = False
            headers.append((name, value, line))
        if self._exchange.method == b"HEAD" or code in _NO_BODY_CODES:
            mode = _NONE
        elif encoded:
            mode, length = (_CHUNKED if chunked else _CLOSE), None
        elif length is not None:
            mode = _LENGTH if length else _NONE
        else:
            mode, keep_alive = _CLOSE, False
        self._mode = mode
        self._left = length or 0
        self._chunk_state = _SIZE
        self._reusable = keep_alive
        return Response(code, phrase, headers, length, self, connection_header=connection_header)

    def _body(self, data):
        mode = self._mode
        if mode == _LENGTH:
            left = self._left
            if len(data) >= left:
                extra = len(data) > left
                self._left = 0
                if left:
                    self._deliver(data[:left] if extra else data)
                if extra:  # more than the response: the connection can not be trusted
                    self._reusable = False
                self._finish(None)
                return
            self._left = left - len(data)
            self._deliver(data)
        elif mode == _CHUNKED:
            self._chunks(data)
        elif mode == _CLOSE:
            self._deliver(data)
        elif data:  # a body where there is none
            self._reusable = False

    def _chunks(self, data):
        buffer = self._buffer + data if self._buffer else data
        position, size = 0, len(buffer)
        while position < size and self._response is not None:
            state = self._chunk_state
            if state == _DATA:
                take = min(self._left, size - position)
                self._deliver(buffer[position:position + take])
                position += take
                self._left -= take
                if not self._left:
                    self._chunk_state = _DATA_END
                continue
            end = buffer.find(b"\r\n", position)
            if end < 0:
                if size - position > MAX_CHUNK_LINE:
                    self._fail(BadResponse("chunk size line too long"))
                    return
                break
            line = buffer[position:end]
            position = end + 2
            if state == _DATA_END:
                if line:
                    self._fail(BadResponse("chunk not followed by CRLF"))
                    return
                self._chunk_state = _SIZE
            elif state == _SIZE:
                digits = line.split(b";", 1)[0].strip()
                if not digits or len(digits) > 15 or digits.strip(b"0123456789abcdefABCDEF"):
                    self._fail(BadResponse("bad chunk size"))
                    return
                self._left = int(digits, 16)
                self._chunk_state = _DATA if self._left else _TRAILER
            elif not line:  # _TRAILER: the empty line ends the body
                if position < size:
                    self._reusable = False
                self._buffer = b""
                self._finish(None)
                return
        self._buffer = buffer[position:]

    def _deliver(self, data):
        receiver = self._receiver
        if receiver is not None:
            receiver.data(data)
            return
        if self._pending is None:
            self._pending = []
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes > PENDING_LIMIT:
            self.transport.pauseProducing()  # until a receiver comes

    def deliver_body(self, receiver):
        if self._response is None or self._receiver is not None:
            raise RuntimeError("no response body to deliver")
        self._receiver = receiver
        pending, self._pending = self._pending, None
        if pending:
            for data in pending:
                receiver.data(data)
        if self._exchange is None:  # complete already
            self._finished(receiver)
            return
        self._producing = True
        receiver.producing(self.transport)
        if self._pending_bytes > PENDING_LIMIT:
            self.transport.resumeProducing()
        self._pending_bytes = 0

    def _finish(self, error):
        """The response is complete (*error* None) or failed."""
        exchange, self._exchange = self._exchange, None
        self._outcome = error
        if error is not None:
            self._reusable = False
        if exchange is not None and self._sending is not None:
            self._reusable = False  # answered before the request body was all sent
            producer, self._sending = self._sending, None
            producer.stopProducing()
            if not self.closed:
                self.transport.unregisterProducer()
        receiver = self._receiver
        if receiver is not None:
            self._finished(receiver)
        elif not self._reusable and not self.closed:
            self.transport.loseConnection()

    def _finished(self, receiver):
        error = self._outcome
        self._receiver = None
        self._response = None
        if self._reusable and not self.closed:
            self.served += 1
            if self._producing:
                self.transport.resumeProducing()  # the receiver may have paused us
            receiver.done(error)
            self._pool.release(self)
            return
        receiver.done(error)
        if not self.closed:
            self.transport.loseConnection()

    def _fail(self, error):
        exchange = self._exchange
        self._reusable = False
        if self._response is None and exchange is not None:
            self._exchange = None
            exchange.fail(error)
        else:
            self._finish(error)
        self.transport.abortConnection()


def _status_line(line):
    """``(version, code, phrase)`` of a response's status line; ValueError if it is not
    HTTP/1.x or asks to switch protocols (nobody asked)."""
    version, _, status = line.partition(b" ")
    code_text, _, phrase = status.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code_text) != 3:
        raise ValueError(repr(line[:40]))
    code = int(code_text)
    if code < 100:
        raise ValueError(f"status {code}")
    if code == 101:
        raise ValueError("101 Switching Protocols was not asked for")
    return version, code, phrase


class UpstreamPool:
    """Keep-alive connections per backend, and the requests sent over them."""

    def __init__(self, reactor, *, per_host=64, idle_timeout=60.0, connect_timeout=8.0,
                 tls_policy=None):
        self._reactor = reactor
        self.per_host = per_host
        self.idle_timeout = idle_timeout
        self._connect_timeout = connect_timeout
        self._tls_policy = tls_policy or BrowserLikePolicyForHTTPS()
        self._idle = {}  # key -> [UpstreamConnection], the most recently used last
        self._endpoints = {}
        self._sweep = None
        self._closed = False

    def request(self, key, method, head, body=None):
        """Send *head* (the request line and headers, CRLF-terminated) and *body*
        (None, bytes, or a seekable file) to the backend *key*, ``(scheme, host,
        port)``; a Deferred of the :class:`Response` head."""
        return self.send(key, method, head, body).deferred

    def send(self, key, method, head, body=None, waiter=None):
        """As :meth:`request`, telling *waiter* (see :class:`_Exchange`) instead of a
        Deferred; returns the exchange, whose ``cancel()`` gives up on it."""
        exchange = _Exchange(key, method, head, body, waiter)
        idle = self._idle.get(key)
        now = self._reactor.seconds()
        while idle:
            connection = idle.pop()
            if now - connection.idle_since < self.idle_timeout:
                connection.send(exchange)
                return exchange
            connection.transport.loseConnection()
        self._connect(exchange)
        return exchange

    def retry(self, exchange):
        exchange.retry = False
        exchange.connection = None
        self._connect(exchange)

    def _connect(self, exchange):
        key = exchange.key
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            endpoint = self._endpoints[key] = self._endpoint(*key)
        connecting = exchange.connecting = endpoint.connect(
            Factory.forProtocol(lambda: UpstreamConnection(self, key)))

        def connected(connection):
            exchange.connecting = None
            connection.send(exchange)

        def failed(failure):
            exchange.connecting = None
            exchange.fail(failure)

        connecting.addCallbacks(connected, failed)

    def _endpoint(self, scheme, host, port):
        endpoint = HostnameEndpoint(self._reactor, host, port, timeout=self._connect_timeout)
        if scheme == "https":
            creator = self._tls_policy.creatorForNetloc(host.encode("idna"), port)
            endpoint = wrapClientTLS(creator, endpoint)
        elif scheme != "http":
            raise ValueError(f"unsupported scheme: {scheme!r}")
        return endpoint

    def release(self, connection):
        """*connection* finished a response and may carry the next request."""
        idle = self._idle.setdefault(connection.key, [])
        if len(idle) >= self.per_host or self._closed:
            connection.transport.loseConnection()
            return
        connection.idle_since = self._reactor.seconds()
        idle.append(connection)
        if self._sweep is None:
            self._sweep = self._reactor.callLater(self.idle_timeout, self._close_idle)

    def forget(self, connection):
        idle = self._idle.get(connection.key)
        if idle and connection in idle:
            idle.remove(connection)

    def _close_idle(self):
        """Close connections idle for ``idle_timeout``, every ``idle_timeout``."""
        self._sweep = None
        oldest = self._reactor.seconds() - self.idle_timeout
        for idle in self._idle.values():
            for connection in [c for c in idle if c.idle_since <= oldest]:
                idle.remove(connection)
                connection.transport.loseConnection()
        if any(self._idle.values()):
            self._sweep = self._reactor.callLater(self.idle_timeout, self._close_idle)

    def close(self):
        """Close every idle connection, and each busy one once its response is done (at
        shutdown)."""
        self._closed = True
        if self._sweep is not None and self._sweep.active():
            self._sweep.cancel()
        self._sweep = None
        idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.transport.loseConnection()
