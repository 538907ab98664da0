"""The SSE response head, made by the stream itself rather than by twisted.web's first write."""
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.http import datetimeToString

from rig.connections.sse import sse_headers
from rig.hub import Hub
from rig.settings import Settings
from rig.web.http import RigSite
from rig.web.inbound import inbound_resource

CORS = "https://app.example"
STREAM_HEADERS = (b"Content-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\n"
                  b"Access-Control-Allow-Origin: https://app.example\r\n")


class _CountingTransport(StringTransport):
    writes = 0

    def write(self, data):
        self.writes += 1
        super().write(data)


def _open():
    clock = Clock()
    clock.advance(1_800_000_000)
    hub = Hub(clock)
    site = RigSite(inbound_resource(hub, Settings.load(None, {"CORS": CORS}), None),
                   reactor=clock)
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    transport = _CountingTransport()
    channel.makeConnection(transport)
    return clock, hub, channel, transport


def _connect(request_bytes):
    clock, hub, channel, transport = _open()
    channel.dataReceived(request_bytes)
    clock.advance(0)  # anything queued goes out at the end of the turn
    return clock, hub, channel, transport


@pytest.mark.parametrize("request_line, extra, status_line, before, after", [
    (b"GET /_rig/v1/connection/sse HTTP/1.1", b"", b"HTTP/1.1 200 OK", b"",
     b"Transfer-Encoding: chunked\r\n"),
    (b"POST /_rig/v1/connection/sse HTTP/1.1", b"Content-Length: 0\r\n", b"HTTP/1.1 200 OK",
     b"", b"Transfer-Encoding: chunked\r\n"),
    (b"GET /_rig/v1/connection/sse HTTP/1.0", b"", b"HTTP/1.0 200 OK", b"", b""),
    (b"GET /_rig/v1/connection/sse HTTP/1.1", b"Connection: close\r\n", b"HTTP/1.1 200 OK",
     b"Connection: close\r\n", b"Transfer-Encoding: chunked\r\n"),
])
def test_the_stream_head_is_the_one_twisted_web_wrote(request_line, extra, status_line, before,
                                                      after):
    clock, hub, _channel, transport = _connect(
        request_line + b"\r\nHost: x\r\n" + extra + b"\r\n")
    date = b"Date: " + datetimeToString(clock.seconds()) + b"\r\n"
    head = status_line + b"\r\n" + before + date + STREAM_HEADERS + after + b"\r\n"
    sent = transport.value()
    assert sent.startswith(head)
    assert b"rig.connection.create" in sent[len(head):] and len(hub.connections) == 1


def test_a_head_request_gets_the_head_of_a_stream_and_no_stream():
    clock, hub, channel, transport = _connect(
        b"HEAD /_rig/v1/connection/sse HTTP/1.1\r\nHost: x\r\n\r\n")
    date = b"Date: " + datetimeToString(clock.seconds()) + b"\r\n"
    assert transport.value() == b"HTTP/1.1 200 OK\r\n" + date + STREAM_HEADERS + b"\r\n"
    assert hub.connections == {}
    transport.clear()
    channel.dataReceived(b"GET /_rig/health HTTP/1.1\r\nHost: x\r\n\r\n")  # still usable
    assert transport.value().startswith(b"HTTP/1.1 200 OK") and transport.value().endswith(b"OK")


def test_a_client_that_leaves_is_unregistered_and_a_stream_that_ends_finishes_its_request():
    _clock, hub, channel, transport = _connect(
        b"GET /_rig/v1/connection/sse HTTP/1.1\r\nHost: x\r\n\r\n")
    (connection,) = hub.connections.values()
    channel.connectionLost(Failure(ConnectionDone()))
    assert hub.connections == {} and connection.transport is None
    _clock, hub, channel, transport = _connect(
        b"GET /_rig/v1/connection/sse HTTP/1.1\r\nHost: x\r\n\r\n")
    (connection,) = hub.connections.values()
    connection.close()
    assert transport.value().endswith(b"\r\n0\r\n\r\n")  # the last chunk
    assert hub.connections == {} and not transport.disconnecting  # keep-alive, as before


def test_the_stream_headers_are_checked_as_set_header_would_check_them():
    headers = dict(sse_headers(b"https://a.example\r\nX-Injected: 1"))
    assert b"\r" not in headers[b"Access-Control-Allow-Origin"]
    assert b"\n" not in headers[b"Access-Control-Allow-Origin"]


def test_the_head_and_both_welcome_events_go_out_in_one_write():
    _clock, _hub, _channel, transport = _connect(
        b"GET /_rig/v1/connection/sse?subscriptions=%5B%7B%22eventType%22%3A%22a%22%7D%5D"
        b" HTTP/1.1\r\nHost: x\r\n\r\n")
    sent = transport.value()
    assert transport.writes == 1
    assert sent.index(b"event: rig.connection.create") < sent.index(
        b"event: rig.subscriptions_set") < sent.index(b'"eventType":"a"')


def test_the_welcome_goes_out_with_the_head_at_once_and_later_frames_at_the_end_of_the_turn():
    clock, hub, channel, transport = _open()
    channel.dataReceived(b"GET /_rig/v1/connection/sse HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.writes == 1 and b"rig.subscriptions_set" in transport.value()
    (connection,) = hub.connections.values()
    connection.heartbeat()  # anything after the welcome waits for the turn's flush
    assert transport.writes == 1
    clock.advance(0)
    assert transport.writes == 2 and transport.value().endswith(b": heartbeat\n\n\r\n")
