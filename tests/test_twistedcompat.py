"""Each use of a Twisted private attribute, checked against the installed Twisted."""
import inspect
import signal

import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.scripts import twistd

from rig.twistedcompat import forget_sigterm


def test_twistd_exits_with_the_signal_the_reactor_remembers():
    assert hasattr(reactor, "_exitSignal")
    assert "_exitSignal" in inspect.getsource(twistd)  # what twistd re-raises after the stop


def test_forget_sigterm_clears_only_sigterm():
    class Reactor:
        _exitSignal = signal.SIGTERM

    stopped = Reactor()
    forget_sigterm(stopped)
    assert stopped._exitSignal is None
    stopped._exitSignal = signal.SIGINT
    forget_sigterm(stopped)
    assert stopped._exitSignal == signal.SIGINT


@pytest_twisted.ensureDeferred
async def test_a_tcp_transports_send_buffer_is_read_as_the_write_path_expects():
    """``write_now`` and ``queued_bytes`` read tcp.Server's dataBuffer, offset,
    _tempDataLen and socket: a real connection whose peer does not read."""
    from twisted.internet import defer, protocol
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    from rig.twistedcompat import queued_bytes, write_now

    accepted = defer.Deferred()

    class Server(protocol.Protocol):
        def connectionMade(self):
            accepted.callback(self.transport)

    port = reactor.listenTCP(0, protocol.Factory.forProtocol(Server), interface="127.0.0.1")
    client = await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1",
                                                      port.getHost().port), protocol.Protocol())
    client.transport.pauseProducing()  # the peer never reads
    try:
        transport = await accepted
        assert queued_bytes(transport) == 0
        assert write_now(transport, b"hello", limit=10)  # straight to the socket
        assert queued_bytes(transport) == 0
        chunk = b"x" * 1_000_000
        writes = 0
        while write_now(transport, chunk, limit=2_000_000):  # until the limit refuses
            writes += 1
            assert writes < 100, "the kernel buffers cannot take this much"
        assert 2_000_000 < queued_bytes(transport) <= 3_000_000
        assert queued_bytes(object()) == 0
        # a connected (client) transport is written the same way (the proxy's backends)
        assert write_now(client.transport, b"hello") and queued_bytes(client.transport) == 0
    finally:
        client.transport.abortConnection()
        await port.stopListening()


def test_twisted_http2_internals_the_h2_connection_builds_on():
    """rig.twistedcompat.H2Connection overrides _requestDone and _handleWindowUpdate,
    wakes _sendingDeferred, blocks streams in ``priority``, counts ``conn.send_data``
    and ``writeDataToStream``; stream_queued reads H2Stream's _conn and streamID."""
    from twisted.web import _http2

    from rig.twistedcompat import H2Connection

    loop = inspect.getsource(_http2.H2Connection._sendPrioritisedData)
    assert "self.conn.send_data(stream, frameData)" in loop
    assert "self._requestDone(stream)" in loop
    assert "self._sendingDeferred" in inspect.getsource(_http2.H2Connection.writeDataToStream)
    assert "priority.unblock" in inspect.getsource(_http2.H2Connection._handleWindowUpdate)
    assert "writeDataToStream" in inspect.getsource(_http2.H2Stream.write)
    stream_init = inspect.getsource(_http2.H2Stream.__init__)
    assert "self._conn = connection" in stream_init and "self.streamID" in stream_init
    # the send loop is rewritten (rig.twistedcompat.H2Connection._sendPrioritisedData) from
    # these: the per-stream queues, their end marker, the producer flags
    for name in ("_outboundStreamQueues", "_stillProducing", "_consumerBlocked",
                 "_END_STREAM_SENTINEL", "self._reactor.callLater(0, self._sendPrioritisedData)",
                 "flowControlBlocked", "remainingOutboundWindow"):
        assert name in loop, name
    connection = H2Connection(reactor)
    assert connection._sendingDeferred is None and connection.priority is not None
    assert connection.queued == {}


class _Reader:
    """A socket the reactor watches for reads; records what the reactor calls."""

    def __init__(self, sock, fail=False):
        self.sock, self.fail = sock, fail
        self.reads, self.lost = 0, []

    def fileno(self):
        return self.sock.fileno()

    def logPrefix(self):
        return "reader"

    def doRead(self):
        self.reads += 1
        self.sock.recv(100)
        if self.fail:
            raise RuntimeError("handler failed")

    def connectionLost(self, reason):
        self.lost.append(reason)


def _epoll_reactor():
    from twisted.internet.epollreactor import EPollReactor

    fresh = EPollReactor()
    fresh.removeAll()  # the waker: nothing but the test's sockets is watched
    return fresh


def test_lean_dispatch_calls_the_ready_sockets_handler_and_disconnects_one_that_raises():
    """The replaced epoll dispatch reads ``_poller``, ``_selectables`` and
    ``_doReadOrWrite``: a read event reaches ``doRead``, and a handler that raises is
    disconnected with its error and logged, as Twisted's own dispatch does."""
    import socket

    from twisted.logger import globalLogPublisher

    from rig.twistedcompat import lean_dispatch

    fresh = _epoll_reactor()
    assert lean_dispatch(fresh) is True
    assert fresh.doIteration is fresh.doPoll
    pairs = [socket.socketpair() for _ in range(2)]
    good, bad = _Reader(pairs[0][0]), _Reader(pairs[1][0], fail=True)
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        for reader, (_, peer) in ((good, pairs[0]), (bad, pairs[1])):
            fresh.addReader(reader)
            peer.send(b"x")
        fresh.doIteration(1)
        fresh.doIteration(0)  # nothing ready: returns at once
    finally:
        globalLogPublisher.removeObserver(logged.append)
        fresh.removeAll()
        fresh._poller.close()
        for left, right in pairs:
            left.close()
            right.close()
    assert (good.reads, good.lost) == (1, [])
    assert bad.reads == 1
    assert len(bad.lost) == 1 and bad.lost[0].check(RuntimeError)
    assert bad not in fresh.getReaders() and good not in fresh.getReaders()
    # Twisted's own dispatch logs it, with the legacy logger
    assert any(event.get("failure") is not None and event["failure"].check(RuntimeError)
               for event in logged)


def test_lean_dispatch_leaves_other_reactors_and_a_running_one_alone():
    from twisted.internet.selectreactor import SelectReactor

    from rig.tap import _lean_dispatch
    from rig.twistedcompat import lean_dispatch

    select = SelectReactor()
    assert lean_dispatch(select) is False
    assert "doIteration" not in vars(select)

    fresh = _epoll_reactor()
    try:
        fresh.running = True  # as a test run's reactor is
        _lean_dispatch(fresh)
        assert "doIteration" not in vars(fresh)
        fresh.running = False  # as twistd's is before it starts
        _lean_dispatch(fresh)
        assert vars(fresh)["doIteration"] is vars(fresh)["doPoll"]
    finally:
        fresh._poller.close()


def _parsed(parse, line):
    try:
        return parse(line)
    except ValueError:
        return "refused"


_LINE_PARTS = st.one_of(
    st.sampled_from([b"GET", b"POST", b"get", b"M-SEARCH", b"!#$%&'*+-.^_`|~", b"", b"G\xe9T",
                     b"/", b"/_rig/v1/connection/sse?subscriptions=%5B%5D", b"*", b"/\xb0",
                     b"/\xb1", b"/\x7f", b"/a\tb", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0",
                     b"http/1.1", b"HTTP/1.1\n", b"HTTP/1.10"]),
    st.binary(max_size=12))


@settings(max_examples=2000, deadline=None)
@given(st.lists(_LINE_PARTS, min_size=1, max_size=4).map(b" ".join) | st.binary(max_size=40))
def test_a_request_line_is_parsed_or_refused_exactly_as_twisted_web_does(line):
    from twisted.web.http import _parseRequestLine

    from rig.twistedcompat import _request_line

    assert _parsed(_request_line, line) == _parsed(_parseRequestLine, line)


def test_every_byte_of_a_request_target_is_judged_as_twisted_web_judges_it():
    from twisted.web.http import _parseRequestLine

    from rig.twistedcompat import _request_line

    for byte in range(256):
        for method in (b"GET", bytes([byte]) * 2):
            line = b"%s /a%cb HTTP/1.1" % (method, byte)
            assert _parsed(_request_line, line) == _parsed(_parseRequestLine, line), line
