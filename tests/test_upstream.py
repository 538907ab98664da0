"""The proxy's HTTP/1.1 client (rig.proxy.upstream): framing, reuse, failures.

Responses are fed one byte at a time as well as whole, so every parser state
meets a packet boundary.
"""
import socket

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from rig.proxy.upstream import (
    BadResponse,
    ClosedEarly,
    UpstreamConnection,
    UpstreamPool,
    _Exchange,
)
from tests.support import within

KEY = ("http", "backend", 80)


class Receiver:
    def __init__(self):
        self.body = b""
        self.error = "not done"
        self.producer = None

    def producing(self, producer):
        self.producer = producer

    def data(self, data):
        self.body += data

    def done(self, error):
        assert self.error == "not done", "done twice"
        self.error = error


def exchange(method=b"GET", body=None):
    pool = UpstreamPool(Clock())
    connection = UpstreamConnection(pool, KEY)
    transport = StringTransport()
    connection.makeConnection(transport)
    sent = _Exchange(KEY, method, method + b" / HTTP/1.1\r\n\r\n", body)
    connection.send(sent)
    heads = []
    sent.deferred.addBoth(heads.append)
    return pool, connection, transport, heads


def feed(connection, data, bytewise):
    pieces = [data[i:i + 1] for i in range(len(data))] if bytewise else [data]
    for piece in pieces:
        connection.dataReceived(piece)


def respond(data, bytewise, method=b"GET"):
    """Feed *data*; the response head, the receiver, the pool and the connection."""
    pool, connection, transport, heads = exchange(method)
    feed(connection, data, bytewise)
    receiver = Receiver()
    assert heads, "no response head"
    if not isinstance(heads[0], Failure):
        heads[0].deliver_body(receiver)
    return heads[0], receiver, pool, connection, transport


BYTEWISE = pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])


@BYTEWISE
def test_a_content_length_body_and_the_connection_goes_back_to_the_pool(bytewise):
    response, receiver, pool, connection, transport = respond(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
        bytewise)
    assert (response.code, response.phrase, response.length) == (200, b"OK", 5)
    assert response.headers == [(b"content-type", b"text/plain", b"Content-Type: text/plain")]
    assert (receiver.body, receiver.error) == (b"hello", None)
    assert pool._idle[KEY] == [connection]
    assert transport.value() == b"GET / HTTP/1.1\r\n\r\n" and transport.connected


@BYTEWISE
def test_a_chunked_body_with_extensions_and_trailers(bytewise):
    response, receiver, pool, connection, _ = respond(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\nA\r\n, world...\r\n0\r\nX-Trailer: yes\r\n\r\n", bytewise)
    assert response.length is None
    assert (receiver.body, receiver.error) == (b"hello, world...", None)
    assert pool._idle[KEY] == [connection]


@BYTEWISE
def test_interim_responses_are_skipped(bytewise):
    response, receiver, _, _, _ = respond(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", bytewise)
    assert (response.code, receiver.body, receiver.error) == (201, b"ok", None)


def test_a_body_until_close_ends_with_the_connection():
    _response, receiver, pool, connection, transport = respond(
        b"HTTP/1.0 200 OK\r\n\r\nall of it", False)
    assert receiver.error == "not done" and receiver.producer is transport
    connection.connectionLost(Failure(ConnectionDone()))
    assert (receiver.body, receiver.error) == (b"all of it", None)
    assert not pool._idle.get(KEY)


@pytest.mark.parametrize(("method", "head"), [
    (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
    (b"GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
    (b"GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n"),
])
def test_responses_without_a_body(method, head):
    _response, receiver, pool, connection, _ = respond(head, False, method)
    assert (receiver.body, receiver.error) == (b"", None)
    assert pool._idle[KEY] == [connection]


@pytest.mark.parametrize("head", [
    b"this is not HTTP\r\n\r\n",
    b"HTTP/2 200 OK\r\n\r\n",
    b"HTTP/1.1 20 OK\r\n\r\n",
    b"HTTP/1.1 abc OK\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Split: a\nInjected: yes\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Split: a\rInjected: yes\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n folded: value\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nSpace : before colon\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"x" * 70000 + b"\r\n\r\n",
])
def test_bad_response_heads_fail_the_request_and_the_connection(head):
    pool, connection, transport, heads = exchange()
    connection.dataReceived(head)
    assert isinstance(heads[0], Failure) and heads[0].check(BadResponse)
    assert transport.disconnecting or not transport.connected
    assert not pool._idle.get(KEY)


@pytest.mark.parametrize("body", [
    b"zz\r\nhello\r\n0\r\n\r\n",  # not hex
    b"5\r\nhelloXX0\r\n\r\n",  # no CRLF after the data
    b"1" * 5000,  # a size line without end
])
def test_bad_chunks_fail_the_body(body):
    response, receiver, pool, _connection, _transport = respond(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body, False)
    assert response.code == 200
    assert isinstance(receiver.error, BadResponse)
    assert not pool._idle.get(KEY)


def test_a_cut_body_is_an_error_and_bytes_beyond_the_body_close_the_connection():
    _head, receiver, _, connection, _ = respond(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly a little", False)
    connection.connectionLost(Failure(ConnectionDone()))
    assert receiver.body == b"only a little" and isinstance(receiver.error, ClosedEarly)
    _response, receiver, pool, _, transport = respond(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokAND MORE", False)
    assert (receiver.body, receiver.error) == (b"ok", None)
    assert not pool._idle.get(KEY) and transport.disconnecting


def test_connection_close_is_not_reused():
    _response, receiver, pool, _, transport = respond(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", False)
    assert receiver.error is None and not pool._idle.get(KEY) and transport.disconnecting


def test_a_closed_connection_before_any_answer_fails_the_request():
    _pool, connection, _, heads = exchange()
    connection.connectionLost(Failure(ConnectionDone()))
    assert heads[0].check(ClosedEarly)


def test_idle_connections_close_after_the_idle_timeout():
    clock = Clock()
    pool = UpstreamPool(clock, idle_timeout=60)
    connection = UpstreamConnection(pool, KEY)
    transport = StringTransport()
    connection.makeConnection(transport)
    pool.release(connection)
    clock.advance(59)
    assert pool._idle[KEY] == [connection] and not transport.disconnecting
    clock.advance(1)
    assert pool._idle[KEY] == [] and transport.disconnecting


def test_a_closed_pool_closes_its_idle_connections_and_each_busy_one_when_done():
    """At shutdown: what is idle closes at once, a response in progress ends first."""
    pool, busy, busy_transport, heads = exchange()
    idle = UpstreamConnection(pool, KEY)
    idle_transport = StringTransport()
    idle.makeConnection(idle_transport)
    pool.release(idle)
    pool.close()
    assert idle_transport.disconnecting and not busy_transport.disconnecting
    busy.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    receiver = Receiver()
    heads[0].deliver_body(receiver)
    assert (receiver.body, receiver.error) == (b"ok", None)
    assert busy_transport.disconnecting and not pool._idle.get(KEY)


class Backend(protocol.Protocol):
    """Answers each request head with *answer*; a connection that served ``serve``
    requests closes on the next one."""

    served = 0

    def dataReceived(self, data):
        factory = self.factory
        factory.heads.append(data)
        if self.served >= factory.serve:
            self.transport.loseConnection()  # as a keep-alive timeout racing the request
            return
        self.served += 1
        self.transport.write(factory.answer)


@pytest_twisted.async_yield_fixture
async def backend():
    factory = protocol.Factory.forProtocol(Backend)
    factory.heads, factory.serve, factory.connections = [], 1_000_000, []
    factory.answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    original = factory.buildProtocol

    def build(address):
        built = original(address)
        factory.connections.append(built)
        return built

    factory.buildProtocol = build
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    factory.key = ("http", "127.0.0.1", port.getHost().port)
    yield factory
    for connection in factory.connections:
        connection.transport.abortConnection()
    await port.stopListening()


async def fetch(pool, key, method=b"GET", body=None):
    response = await within(pool.request(key, method, method + b" / HTTP/1.1\r\n\r\n", body))
    receiver = Receiver()
    response.deliver_body(receiver)
    return response, receiver


@pytest_twisted.ensureDeferred
async def test_requests_reuse_one_connection_with_nagle_off(backend):
    pool = UpstreamPool(reactor)
    for _ in range(3):
        response, receiver = await fetch(pool, backend.key)
        assert (response.code, receiver.body) == (200, b"ok")
    assert len(backend.connections) == 1
    sock = pool._idle[backend.key][0].transport.getHandle()
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    pool.close()


@pytest_twisted.ensureDeferred
async def test_a_reused_connection_closed_by_the_backend_is_retried_for_a_get_only(backend):
    pool = UpstreamPool(reactor)
    await fetch(pool, backend.key)
    backend.serve = 1  # the next request on that connection meets a close
    response, receiver = await fetch(pool, backend.key)
    assert (response.code, receiver.body) == (200, b"ok")
    assert len(backend.connections) == 2  # retried on a new connection
    with pytest.raises(ClosedEarly):
        await fetch(pool, backend.key, b"POST", b"not sent twice")
    pool.close()


@pytest_twisted.ensureDeferred
async def test_cancelling_a_request_aborts_its_connection(backend):
    backend.answer = b""  # never answers
    pool = UpstreamPool(reactor)
    asking = pool.request(backend.key, b"GET", b"GET / HTTP/1.1\r\n\r\n")
    await within(defer.succeed(None))
    while not backend.heads:
        await within(deferLater())
    asking.cancel()
    with pytest.raises(defer.CancelledError):
        await asking
    assert not pool._idle.get(backend.key)


def deferLater():
    from twisted.internet.task import deferLater as later

    return later(reactor, 0.01, lambda: None)


class Waiter:
    """An exchange's waiter that records what it hears; its ``answered`` may raise."""

    def __init__(self, raises=False):
        self.heard, self.raises = [], raises

    def answered(self, response):
        self.heard.append(("answered", response.code))
        if self.raises:
            raise RuntimeError("the waiter's bug")

    def failed(self, failure):
        self.heard.append(("failed", failure.type))

    def crashed(self, failure):
        self.heard.append(("crashed", failure.type))


def _sent_with(waiter):
    connection = UpstreamConnection(UpstreamPool(Clock()), KEY)
    connection.makeConnection(StringTransport())
    sent = _Exchange(KEY, b"GET", b"GET / HTTP/1.1\r\n\r\n", None, waiter)
    connection.send(sent)
    return connection, sent


def test_a_waiter_hears_the_outcome_once_and_its_own_error_as_a_crash():
    waiter = Waiter(raises=True)
    connection, sent = _sent_with(waiter)
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert waiter.heard == [("answered", 200), ("crashed", RuntimeError)]
    sent.cancel()  # settled: nothing more is heard
    sent.fail(ClosedEarly("late"))
    assert len(waiter.heard) == 2


def test_a_cancelled_exchange_fails_with_cancelled_error_and_ignores_a_late_answer():
    waiter = Waiter()
    connection, sent = _sent_with(waiter)
    sent.cancel()
    assert waiter.heard == [("failed", defer.CancelledError)]
    assert connection.transport.disconnecting  # the connection is dropped
    connection.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert waiter.heard == [("failed", defer.CancelledError)]
