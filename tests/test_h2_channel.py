"""The HTTP/2 channel of a RigSite (rig/web/h2.py), driven in memory on a Clock."""
import h2.config
import h2.connection
import h2.events
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from rig.twistedcompat import is_h2_stream, queued_bytes, stream_queued, write_stream
from rig.web.h2 import take_over
from rig.web.http import RigSite

IDLE = 75.0


class Holding(Resource):
    """Answers nothing: each request waits in ``held`` for the test to answer it."""

    isLeaf = True

    def __init__(self):
        super().__init__()
        self.held = []

    def render(self, request):
        self.held.append(request)
        return NOT_DONE_YET


class Exchange:
    """An h2 client state machine talking to an H2Channel over a StringTransport."""

    def __init__(self, idle_timeout=IDLE):
        self.clock = Clock()
        self.resource = Holding()
        self.site = RigSite(self.resource, idle_timeout=idle_timeout, reactor=self.clock)
        self.transport = StringTransport()
        first = self.site.buildProtocol(None)  # a RigChannel, as on any new connection
        first.makeConnection(self.transport)
        self.channel = take_over(first)  # as when TLS's ALPN chose h2
        assert self.transport.wrappedProtocol is self.channel
        assert list(self.site._channels) == [self.channel]
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.client.initiate_connection()
        self.events = []
        self.pump()

    def pump(self):
        """Move bytes both ways until neither side has more to say."""
        for _ in range(100):
            self.clock.advance(0)
            to_server = self.client.data_to_send()
            if to_server:
                self.channel.dataReceived(to_server)
            to_client = self.transport.value()
            self.transport.clear()
            if to_client:
                self.events += self.client.receive_data(to_client)
            if not (to_server or to_client):
                return
        raise AssertionError("the exchange never settles")

    def get(self, path="/stream"):
        stream_id = self.client.get_next_available_stream_id()
        self.client.send_headers(stream_id, [(b":method", b"GET"), (b":path", path.encode()),
                                             (b":scheme", b"https"),
                                             (b":authority", b"localhost")], end_stream=True)
        self.pump()
        return self.resource.held[-1]

    def of(self, kind):
        return [event for event in self.events if isinstance(event, kind)]


def test_a_request_over_http2_has_a_stream_for_its_channel():
    exchange = Exchange()
    request = exchange.get()
    assert is_h2_stream(request.channel)
    assert not is_h2_stream(exchange.channel)
    assert request.clientproto == b"HTTP/2"
    assert exchange.channel in exchange.site._channels


def test_bytes_written_to_a_stream_are_counted_until_sent():
    exchange = Exchange()
    request = exchange.get()
    request.write(b"")  # the head
    stream = request.channel
    window = exchange.client.local_settings.initial_window_size  # the client's: 65535
    assert write_stream(stream, b"x" * 100_000)
    exchange.pump()
    assert stream_queued(stream) == queued_bytes(stream) == 100_000 - window
    assert not write_stream(stream, b"y", limit=30_000)  # over the limit: refused
    assert write_stream(stream, b"y", limit=40_000)
    received = sum(event.flow_controlled_length for event in exchange.of(h2.events.DataReceived))
    exchange.client.acknowledge_received_data(received, stream.streamID)
    exchange.pump()
    assert stream_queued(stream) == 0


def test_the_idle_timeout_spares_a_connection_with_a_stream_open():
    exchange = Exchange()
    request = exchange.get()
    exchange.clock.advance(IDLE * 3)
    assert not exchange.transport.disconnecting  # an SSE stream or a parked poll
    request.write(b"done")
    request.finish()
    exchange.pump()
    exchange.clock.advance(IDLE + 1)
    assert exchange.transport.disconnecting
    assert exchange.transport.producer is None  # else TLS would wait to close


def test_pings_or_unfinished_headers_do_not_keep_an_idle_connection_open():
    """Idle is no stream open, whatever else the client sends: a client that trickles
    PINGs, or a HEADERS frame whose header block never ends, is closed after the idle
    timeout as a silent one is."""
    exchange = Exchange()
    for _ in range(8):  # a PING every quarter of the idle timeout
        exchange.clock.advance(IDLE / 4)
        exchange.client.ping(b"12345678")
        exchange.pump()
        if exchange.transport.disconnecting:
            break
    assert exchange.transport.disconnecting
    unfinished = Exchange()
    frame = (b"\x00\x00\x05\x01\x00\x00\x00\x00\x01"  # HEADERS, stream 1, no END_HEADERS
             b"\x82\x86\x84\x41\x00")
    unfinished.channel.dataReceived(unfinished.client.data_to_send() + frame)
    unfinished.clock.advance(IDLE / 2)
    unfinished.channel.dataReceived(b"")
    unfinished.clock.advance(IDLE / 2 + 1)
    assert unfinished.transport.disconnecting


def test_the_idle_timeout_starts_again_when_the_last_stream_ends():
    exchange = Exchange()
    request = exchange.get()
    exchange.clock.advance(IDLE - 1)  # the stream was open for almost a whole period
    request.finish()
    exchange.pump()
    exchange.clock.advance(IDLE - 2)
    assert not exchange.transport.disconnecting  # idle for less than the timeout
    exchange.clock.advance(3)
    assert exchange.transport.disconnecting


def test_a_drain_closes_once_the_last_stream_is_over():
    exchange = Exchange()
    first, second = exchange.get(), exchange.get()
    drained = exchange.site.drain(exchange.clock, 10)
    assert not drained.called and not exchange.transport.disconnecting
    first.write(b"one")
    first.finish()
    exchange.pump()
    assert not exchange.transport.disconnecting
    second.finish()
    exchange.pump()
    assert exchange.transport.disconnecting and exchange.transport.producer is None
    assert [event.error_code for event in exchange.of(h2.events.ConnectionTerminated)] == [0]
    exchange.channel.connectionLost(None)
    assert drained.result == 0


def test_a_drain_closes_an_idle_connection_at_once():
    exchange = Exchange()
    drained = exchange.site.drain(exchange.clock, 10)
    exchange.pump()
    assert exchange.transport.disconnecting
    exchange.channel.connectionLost(None)
    assert drained.result == 0


def test_a_reset_stream_tells_its_request():
    exchange = Exchange()
    request = exchange.get()
    gone = []
    request.notifyFinish().addErrback(gone.append)
    exchange.client.reset_stream(request.channel.streamID)
    exchange.pump()
    assert request.client_gone and len(gone) == 1


def test_one_turn_of_the_send_loop_writes_every_stream_once():
    """A fan-out to many streams of one connection: one write, not one a stream."""
    exchange = Exchange()
    requests = [exchange.get() for _ in range(20)]
    for request in requests:
        request.write(b"")
    exchange.pump()
    writes = []
    exchange.transport.write = writes.append
    for request in requests:
        write_stream(request.channel, b"data: 1\n\n")
    exchange.clock.advance(0)
    assert len(writes) == 1
    assert writes[0].count(b"data: 1\n\n") == 20


def test_a_stream_whose_window_is_shut_waits_without_spinning():
    exchange = Exchange()
    request = exchange.get()
    request.write(b"x" * 70_000)  # beyond the 65535 window
    exchange.pump()
    now = exchange.clock.seconds()
    assert not [call for call in exchange.clock.getDelayedCalls() if call.getTime() <= now]
    stream_id = request.channel.streamID
    exchange.client.acknowledge_received_data(65_535, stream_id)
    exchange.pump()  # the window update wakes the send loop: the rest goes out
    received = sum(len(event.data) for event in exchange.of(h2.events.DataReceived))
    assert received == 70_000


def test_the_site_adds_no_alpn_protocols_of_its_own():
    """Twisted's Site offers h2 by ALPN whenever h2 is installed; what RIG's HTTPS
    listeners offer is their TLS options' (rig/tls.py), and nothing else."""
    from twisted.web.server import Site

    from rig.tls import HTTP_PROTOCOLS

    assert Site(Resource()).acceptableProtocols() == [b"h2", b"http/1.1"]
    assert RigSite(Resource()).acceptableProtocols() == []
    assert HTTP_PROTOCOLS == (b"h2", b"http/1.1")
