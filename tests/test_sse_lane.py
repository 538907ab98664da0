"""SSE connects served from their request head alone (rig.connections.sse_lane), and
the ordinary twisted.web path for everything else: the same answers both ways."""
import json
import re
from urllib.parse import quote

import jwt
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from rig.auth.authority import Authority
from rig.hub import Hub
from rig.settings import Settings
from rig.web.inbound import inbound_site

SECRET = "lane-secret"
NOW = 1_800_000_000
SUBS = quote(json.dumps([{"eventType": "greeting", "oneOf": [{"name": "alice"}]}]))
TOKEN = jwt.encode({"exp": NOW + 3600, "jti": "j1", "username": "alice"}, SECRET)


class _Transport(StringTransport):
    def pauseProducing(self):
        self.producerState = "paused"

    def resumeProducing(self):
        self.producerState = "producing"


def _gateway(lane=True, **env):
    clock = Clock()
    clock.advance(NOW)
    settings = Settings.load(None, {"CORS": "https://app.example", **env})
    hub = Hub(clock, auth=Authority.from_settings(settings, clock),
              max_connections_per_minute=settings.max_connections_per_minute)
    site = inbound_site(hub, settings, None)
    site.reactor = clock
    if not lane:
        site.stream_lane = None
    return clock, hub, site


def _connect(site, clock, data):
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    transport = _Transport()
    channel.makeConnection(transport)
    channel.dataReceived(data)
    clock.advance(0)
    return channel, transport


def _comparable(sent):
    """The answer without what differs per connection: ids, tokens."""
    sent = re.sub(rb'"id":"[0-9a-f-]{36}"', b'"id":"ID"', sent)
    sent = re.sub(rb'"connection_token":"[A-Za-z0-9_=-]+"', b'"connection_token":"T"', sent)
    return re.sub(rb"\nid: [0-9a-f]+\.", b"\nid: EPOCH.", sent)


GET = b"GET /_rig/v1/connection/sse%s HTTP/1.1\r\nHost: gw\r\n%s\r\n"
HEADS = {  # name: (head, whether the lane serves it)
    "plain": (GET % (b"", b""), True),
    "empty query": (GET % (b"?", b""), True),
    "subscriptions": (GET % (b"?subscriptions=" + SUBS.encode(), b""), True),
    "jwt": (GET % (b"?jwt=" + TOKEN.encode(), b"Accept: text/event-stream\r\n"), True),
    "last event id": (GET % (b"", b"Last-Event-ID:  abc.7 \r\n"), True),
    "trace": (GET % (b"", (b"traceparent: 00-0af7651916cd43dd8448eb211c80319c-"
                         b"b7ad6b7169203331-01\r\ntracestate: a=1\r\n")), True),
    "keep-alive asked": (GET % (b"", b"Connection: keep-alive\r\n"), True),  # browsers
    "close among others": (GET % (b"", b"Connection: keep-alive CLOSE\r\n"), False),
    "close asked": (GET % (b"", b"Connection: close\r\n"), False),
    "bad subscriptions": (GET % (b"?subscriptions=%5B", b""), False),
    "bad jwt": (GET % (b"?jwt=x.y.z", b""), False),
    "unknown header": (GET % (b"", b"X-Never-Seen-Before-Lane: 1\r\n"), False),
    "twice": (GET % (b"", b"Accept: a\r\nAccept: b\r\n"), False),
    "no colon": (GET % (b"", b"Accept\r\n"), False),
    "nul": (GET % (b"", b"Accept: a\x00b\r\n"), False),
    "http/1.0": (b"GET /_rig/v1/connection/sse HTTP/1.0\r\nHost: gw\r\n\r\n", False),
    "head": (b"HEAD /_rig/v1/connection/sse HTTP/1.1\r\nHost: gw\r\n\r\n", False),
    "post": (b"POST /_rig/v1/connection/sse HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n",
             False),
    "other path": (b"GET /_rig/v1/connection/ssex HTTP/1.1\r\nHost: gw\r\n\r\n", False),
    "space in target": (b"GET /_rig/v1/connection/sse?a=b c HTTP/1.1\r\nHost: gw\r\n\r\n", False),
}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_a_connect_gets_the_same_answer_with_the_lane_and_without(name):
    data, laned = HEADS[name]
    answers = []
    for lane in (True, False):
        clock, hub, site = _gateway(lane, JWT_SECRET_KEY=SECRET)
        _connect(site, clock, GET % (b"", (b"Accept: x\r\nLast-Event-ID: 1\r\n"
                                     b"Traceparent: x\r\nTracestate: x\r\n"
                                     b"Connection: keep-alive\r\n")))  # names seen
        channel, transport = _connect(site, clock, data)
        assert (channel.lane_stream is not None) == (lane and laned)
        answers.append((_comparable(transport.value()), transport.disconnecting,
                        sorted(len(c.token) for c in hub.connections.values())))
    assert answers[0] == answers[1]
    if laned:
        assert answers[0][0].startswith(b"HTTP/1.1 200 OK\r\n")


def test_the_lane_hands_the_connection_what_the_ordinary_path_would_have():
    for lane in (True, False):
        clock, hub, site = _gateway(lane, JWT_SECRET_KEY=SECRET)
        _connect(site, clock, GET % (b"", b""))
        _connect(site, clock, GET % (b"?jwt=" + TOKEN.encode() + b"&subscriptions=" +
                                     SUBS.encode(), b"Last-Event-ID: nowhere.3\r\n"))
        connection = list(hub.connections.values())[-1]
        assert [s.to_json() for s in hub.subscriptions_of(connection)] == [
            {"eventType": "greeting", "oneOf": [{"name": "alice"}]}]
        assert hub.sessions == {"j1": {connection}}
        assert b'"recovered":false' in connection.transport.value()


def test_a_lane_stream_ends_with_its_last_chunk_and_the_connection_serves_on():
    clock, hub, site = _gateway()
    _connect(site, clock, GET % (b"", b""))
    channel, transport = _connect(site, clock, GET % (b"", b""))
    (connection,) = [c for c in hub.connections.values() if c.transport is transport]
    assert channel.lane_stream is connection and channel._idle_timer is None
    channel.dataReceived(b"GET /_rig/health HTTP/1.1\r\nHost: gw\r\n\r\n")  # pipelined
    assert transport.producerState == "paused"
    assert transport.value().count(b"HTTP/1.1 200 OK") == 1  # held while the stream lasts
    connection.close()
    sent = transport.value()
    assert sent.index(b"\r\n0\r\n\r\n") < sent.index(b"HTTP/1.1 200 OK", 10)  # then served
    assert sent.endswith(b"OK") and transport.producerState == "producing"
    assert not transport.disconnecting and channel.lane_stream is None
    assert channel._idle_timer is not None and channel._idle_timer.active()  # idle again


def test_a_client_that_leaves_a_lane_stream_is_unregistered():
    clock, hub, site = _gateway()
    _connect(site, clock, GET % (b"", b""))
    before = len(hub.connections)
    channel, _transport = _connect(site, clock, GET % (b"", b""))
    assert len(hub.connections) == before + 1
    channel.connectionLost(None)
    assert len(hub.connections) == before and channel.lane_stream is None


def test_a_drain_waits_for_a_lane_stream_and_closes_when_it_ends():
    clock, _hub, site = _gateway()
    ordinary, _ = _connect(site, clock, GET % (b"", b""))  # the names' first time
    ordinary.connectionLost(None)
    channel, transport = _connect(site, clock, GET % (b"", b""))
    assert channel.lane_stream is not None
    drained = site.drain(clock, 10)
    assert not transport.disconnecting and not drained.called
    channel.lane_stream.close()
    assert transport.disconnecting and transport.value().endswith(b"\r\n0\r\n\r\n")
    channel.connectionLost(None)
    assert drained.called and drained.result == 0


def test_a_connect_a_subscription_check_must_allow_takes_the_ordinary_path_counted_once():
    clock, _hub, site = _gateway(SUBSCRIPTION_CHECK="jwt_validation", JWT_SECRET_KEY=SECRET,
                                MAX_CONNECTIONS_PER_MINUTE="2")
    _connect(site, clock, GET % (b"", b""))  # no subscriptions: the lane (counted: 1)
    channel, transport = _connect(
        site, clock, GET % (b"?subscriptions=" + SUBS.encode() + b"&jwt=" + TOKEN.encode(),
                            b""))
    assert channel.lane_stream is None and b"rig.subscriptions_set" in transport.value()
    channel, transport = _connect(site, clock, GET % (b"", b""))
    assert b"429" in transport.value()[:20]  # the quota of 2 is used up, by two connects


def test_bytes_held_during_a_lane_stream_on_a_transport_that_cannot_pause_are_served_after():
    """Under TLS the transport is no push producer: twisted.web's stand-in, as its own."""
    from twisted.internet.interfaces import IConsumer, IPushProducer, ITransport
    from zope.interface import implementer_only

    @implementer_only(ITransport, IConsumer)
    class Unpausable(StringTransport):
        def pauseProducing(self):
            raise AssertionError("a TLS transport has no pauseProducing")

        resumeProducing = pauseProducing

    clock, _hub, site = _gateway()
    _connect(site, clock, GET % (b"", b""))
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    transport = Unpausable()
    assert not IPushProducer.providedBy(transport)
    channel.makeConnection(transport)
    channel.dataReceived(GET % (b"", b""))
    assert channel.lane_stream is not None
    channel.dataReceived(b"GET /_rig/health HTTP/1.1\r\nHost: gw\r\n\r\n")
    channel.lane_stream.close()
    assert transport.value().endswith(b"OK") and channel.lane_stream is None


def test_a_client_that_floods_a_lane_stream_is_cut_off_and_unregistered():
    clock, hub, site = _gateway()
    _connect(site, clock, GET % (b"", b""))
    channel, transport = _connect(site, clock, GET % (b"", b""))
    connection = channel.lane_stream
    for _ in range(2):
        channel.dataReceived(b"x" * 30_000)  # read on despite the pause (as under TLS)
    assert not transport.disconnecting  # a head's worth is held
    channel.dataReceived(b"x" * 30_000)
    assert transport.disconnecting
    channel.connectionLost(None)
    assert connection.local_id not in hub.connections
