"""Timers driven by a Clock: heartbeats, pings, long-poll waits and expiry, rate windows."""
import json
from functools import partial

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyChannel

from rig.connections.frames import HEARTBEAT, chunk
from rig.connections.longpoll import serve_longpoll
from rig.connections.sse import serve_sse, sse_headers
from rig.connections.ws import RigWebSocketFactory, RigWebSocketProtocol
from rig.events import parse_structured
from rig.hub import ConnectionRateLimit, Hub
from rig.settings import Settings
from rig.testing import FakeConnection
from rig.web.http import BoundedRequest, Router

GREETING = b'{"specversion":"1.0","type":"greeting","source":"s","id":"%s"}'


def make_hub(**kwargs):
    clock = Clock()
    hub = Hub(clock, **kwargs)
    hub.start()
    return clock, hub


def make_request(cookies=None, query=None):
    channel = DummyChannel()
    request = BoundedRequest(channel)
    request.test_channel = channel
    request.method = b"GET"
    request.clientproto = b"HTTP/1.1"
    request.uri = request.path = b"/_rig/v1/connection/x"
    request.args = query or {}
    request.received_cookies = cookies or {}
    return request


def served(handler, request):
    """Serve *request* with *handler* through the real Router, as the site does: the body
    when the answer is there at once, else NOT_DONE_YET (the router writes it later)."""
    result = Router([(r".*", {b"*": handler})], fallback=None).render(request)
    if result is NOT_DONE_YET and request.finished:  # answered within this call
        return body_of(request)
    return result


def written(request):
    return request.test_channel.transport.written.getvalue()


def event(event_id):
    return parse_structured(GREETING % event_id.encode())


def test_heartbeat_every_interval_and_clean_stop():
    clock, hub = make_hub(heartbeat_interval=15.0)
    connection = FakeConnection(hub, None)
    hub.register(connection, [])
    clock.advance(14.9)
    assert connection.beats == 0
    clock.advance(0.1)
    assert connection.beats == 1
    clock.pump([15, 15])
    assert connection.beats == 3
    hub.stop()
    assert clock.getDelayedCalls() == []


def test_publish_frames_once_per_transport_kind():
    clock, hub = make_hub()
    calls = []

    def framer_a(ev, seq):
        calls.append(("a", seq))
        return b"A"

    def framer_b(ev, seq):
        calls.append(("b", seq))
        return b"B"

    from rig.subscriptions.model import Subscription

    connections = [FakeConnection(hub, framer) for framer in (framer_a,) * 3 + (framer_b,) * 2]
    for connection in connections:
        hub.register(connection, [Subscription("greeting")])
    assert hub.publish(event("1")) == 5
    position = hub.history.position_id()
    assert position.endswith(b".1")
    assert sorted(calls) == [("a", position), ("b", position)]
    clock.advance(0)  # frames are written at the end of the reactor turn
    assert [c.frames[-1] for c in connections] == [b"A", b"A", b"A", b"B", b"B"]
    assert hub.publish(parse_structured(b'{"specversion":"0.2","type":"other","id":"2"}')) == 0



def test_publish_frames_only_the_kinds_it_reaches_as_connections_come_and_go():
    """The hub groups targets by kind from sets it keeps as connections subscribe and
    leave: a kind with no target is never framed, and one that left is forgotten."""
    from rig.subscriptions.model import Subscription

    clock, hub = make_hub()
    framed = []

    def framer_of(name):
        def framer(ev, seq):
            framed.append(name)
            return name.encode()
        return framer

    ws_framer = framer_of("ws")  # one function per kind, as the transports have
    ws = [FakeConnection(hub, ws_framer) for _ in range(2)]
    sse = FakeConnection(hub, framer_of("sse"))
    for connection in ws:
        hub.register(connection, [Subscription("greeting")])
    hub.register(sse, [Subscription("other")])
    assert hub.publish(event("1")) == 2
    assert framed == ["ws"]  # the SSE kind has no target: not framed
    hub.unregister(ws[0])
    hub.set_subscriptions(sse, [Subscription("greeting")])
    assert hub.publish(event("2")) == 2
    assert sorted(framed[1:]) == ["sse", "ws"]
    hub.unregister(ws[1])
    assert hub.publish(event("3")) == 1  # one kind left: framed once, for it
    assert framed[3:] == ["sse"]
    clock.advance(0)
    assert [f for f in ws[0].frames if isinstance(f, bytes)] == [b"ws"]  # before it left
    # one write per connection for the turn's frames
    assert [f for f in ws[1].frames if isinstance(f, bytes)] == [b"wsws"]
    assert [f for f in sse.frames if isinstance(f, bytes)] == [b"ssesse"]
    hub.unregister(sse)
    assert hub.publish(event("4")) == 0

def test_rate_limit_window_resets_each_minute():
    clock = Clock()
    clock.advance(120)
    limit = ConnectionRateLimit(clock, 2)
    assert [limit.allow() for _ in range(3)] == [True, True, False]
    clock.advance(59.9)
    assert not limit.allow()
    clock.advance(0.1)
    assert limit.allow()


def test_sse_heartbeat_frames_on_the_stream():
    clock, hub = make_hub(heartbeat_interval=15.0)
    request = make_request()
    assert served(partial(serve_sse, hub, sse_headers(b"*")), request) is NOT_DONE_YET
    clock.advance(0)
    head = written(request)
    assert b"200 OK" in head and b"event: rig.connection.create" in head
    clock.advance(14.9)
    assert written(request) == head  # no heartbeat right after connecting
    clock.advance(0.1)
    assert written(request) == head + chunk(HEARTBEAT)
    request.connectionLost(Failure(ConnectionDone()))
    assert hub.connections == {}


def test_websocket_ping_then_drop_when_no_pong():
    clock, hub = make_hub(heartbeat_interval=15.0)
    protocol = RigWebSocketProtocol()
    protocol.factory = RigWebSocketFactory(hub)
    protocol.transport = StringTransport()
    protocol.state = protocol.STATE_OPEN
    protocol.local_id = hub.new_local_id()
    hub.connections[protocol.local_id] = protocol
    clock.advance(15)
    clock.advance(0)
    assert protocol.transport.value() == b"\x89\x00"
    protocol.onPong(b"")
    clock.advance(15)
    clock.advance(0)
    assert protocol.transport.value() == b"\x89\x00" * 2
    assert protocol.local_id in hub.connections
    clock.advance(15)  # the second ping was never answered
    assert protocol.local_id not in hub.connections
    hub.stop()


class CountingTransport(StringTransport):
    """Counts writes: each is a send on a real socket."""

    writes = 0

    def write(self, data):
        self.writes += 1
        super().write(data)

    def unregisterProducer(self):
        self.producer = None  # as a TCP transport, which allows it without a producer


def opened_websocket(hub, query):
    protocol = RigWebSocketFactory(hub).buildProtocol(None)
    protocol.makeConnection(CountingTransport())
    protocol.open_upgraded(b"ACCEPT", query, (None, None))
    return protocol


def test_a_websockets_101_goes_out_with_its_welcome_in_one_write():
    clock, hub = make_hub()
    protocol = opened_websocket(hub, {b"subscriptions": [b'[{"eventType":"greeting"}]']})
    assert protocol.transport.writes == 0  # the welcome is queued for this turn's flush
    clock.advance(0)
    sent = protocol.transport.value()
    assert protocol.transport.writes == 1
    assert sent.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: ACCEPT\r\n\r\n\x81" in sent
    assert b"rig.subscriptions_set" in sent
    clock.advance(15)
    clock.advance(0)
    assert protocol.transport.value() == sent + b"\x89\x00"  # the 101 went once
    hub.stop()


def test_a_refused_websockets_101_goes_out_with_its_close_frame():
    _clock, hub = make_hub()
    protocol = opened_websocket(hub, {b"subscriptions": [b"not json"]})
    sent = protocol.transport.value()
    assert protocol.transport.writes == 1
    assert sent.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert sent.split(b"\r\n\r\n", 1)[1][:1] == b"\x88"  # a close frame
    assert b"Failed to decode subscription list" in sent
    hub.stop()


def test_a_websocket_whose_admission_fails_is_closed_1011_and_not_left_half_made():
    _clock, hub = make_hub()

    def broken(*_args, **_kwargs):
        raise RuntimeError("a bug while admitting")

    hub.token_for = broken  # fails after the local id was handed out
    protocol = opened_websocket(hub, {})
    sent = protocol.transport.value()
    assert sent.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert sent.split(b"\r\n\r\n", 1)[1][:4] == b"\x88\x11\x03\xf3"  # close, 1011
    assert b"Internal error." in sent
    assert hub.connections == {}
    hub.stop()


def longpoll_settings(**overrides):
    return Settings(longpoll_wait=5.0, longpoll_session_ttl=3600.0, **overrides)


def new_session(hub, query=None):
    request = make_request(query=query)
    body = served(partial(serve_longpoll, hub, longpoll_settings(), b"*"), request)
    assert body == b'"ok"'
    (session,) = hub.connections.values()
    return session


def poll(hub, session, cursor="first_event"):
    request = make_request(cookies={
        b"connection_token": session.token.encode(),
        b"last_event_id": json.dumps(cursor).encode(),
    })
    return request, served(partial(serve_longpoll, hub, longpoll_settings(), b"*"), request)


def body_of(request):
    """The (chunked) body of the response written to *request*."""
    return (written(request).split(b"\r\n\r\n", 1)[1].split(b"\r\n", 1)[1]
            .rsplit(b"\r\n0\r\n", 1)[0])


def response_json(request):
    return json.loads(body_of(request))


def test_longpoll_poll_waits_then_answers_empty():
    clock, hub = make_hub()
    session = new_session(hub)
    _request, body = poll(hub, session)
    first = json.loads(body)
    assert [e["type"] for e in first["events"]] == ["rig.connection.create",
                                                    "rig.subscriptions_set"]
    request, body = poll(hub, session, first["last_event_id"])
    assert body is NOT_DONE_YET
    clock.advance(4.9)
    assert written(request) == b""
    clock.advance(0.1)
    assert response_json(request) == {"last_event_id": first["last_event_id"], "events": []}


def test_longpoll_parked_poll_answers_at_end_of_turn_with_the_burst():
    from rig.subscriptions.model import Subscription

    clock, hub = make_hub()
    session = new_session(hub)
    hub.set_subscriptions(session, [Subscription("greeting")])
    _request, body = poll(hub, session)
    cursor = json.loads(body)["last_event_id"]
    request, body = poll(hub, session, cursor)
    hub.publish(event("e1"))
    hub.publish(event("e2"))
    assert written(request) == b""
    clock.advance(0)
    answer = response_json(request)
    assert [e["id"] for e in answer["events"]] == ["e1", "e2"]
    assert b"last_event_id" in written(request) and b"connection_token" in written(request)


def test_longpoll_session_expires_after_ttl_but_not_while_parked():
    clock, hub = make_hub(heartbeat_interval=15.0)
    session = new_session(hub)
    request, body = poll(hub, session, "999")
    assert body is NOT_DONE_YET
    request.connectionLost(Failure(ConnectionDone()))  # the client vanished mid-poll
    clock.advance(3600 - 15)
    assert session.local_id in hub.connections
    clock.advance(30)
    assert session.local_id not in hub.connections
    # a poll with the dead token starts a new session
    request, body = poll(hub, session)
    assert body == b'"ok"'
    hub.stop()
    assert clock.getDelayedCalls() == []


def test_longpoll_buffer_is_bounded():
    from rig.subscriptions.model import Subscription

    clock, hub = make_hub()
    session = new_session(hub)
    hub.set_subscriptions(session, [Subscription("greeting")])
    for number in range(250):
        hub.publish(event(f"n{number}"))
    clock.advance(0)
    _request, body = poll(hub, session)
    events = json.loads(body)["events"]
    assert len(events) == 200
    assert events[-1]["id"] == "n249"
