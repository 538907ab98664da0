"""WebSocket end to end: real listener, autobahn client."""
import gc
import json

import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from rig.connections.ws import NO_TWO_WAY, RigWebSocketProtocol
from rig.testing import eventually
from rig.web.http import BoundedRequest, RigChannel
from rig.web.inbound import NOT_AN_UPGRADE
from tests.support import RawHTTPClient, greeting, subs_query, within

ALICE = [{"eventType": "greeting", "oneOf": [{"name": "alice"}]}]


@pytest_twisted.ensureDeferred
async def test_welcome_then_matching_events_as_text_frames(gateway):
    client = await gateway.ws("?subscriptions=" + subs_query(ALICE))
    token, subscriptions = await client.welcome()
    assert token and subscriptions == ALICE
    await gateway.publish(greeting("bob", "b1"))
    await gateway.publish(greeting("alice", "a1", extra="kept"))
    event = await client.next_event()
    assert event["id"] == "a1" and event["extra"] == "kept"


@pytest_twisted.ensureDeferred
async def test_client_data_frame_gets_the_documented_close(gateway):
    client = await gateway.ws()
    await client.welcome()
    client.send_text("hello")
    code, reason = await client.close_info()
    assert code == 1000
    assert reason == "This WebSocket endpoint cannot be used for two-way communication."
    assert len(gateway.hub.connections) == 0


@pytest_twisted.ensureDeferred
async def test_bad_subscription_json_closes_with_decoder_message(gateway):
    client = await gateway.ws("?subscriptions=can't%20be%20parsed")
    code, reason = await client.close_info()
    assert code == 1000
    assert reason.startswith("Failed to decode subscription list: ")


@pytest_twisted.ensureDeferred
async def test_invalid_jwt_and_invalid_subscriptions_close_with_bad_request(gateway):
    for query in ("?jwt=foobar", "?subscriptions=" + subs_query([{"eventType": 1}])):
        client = await gateway.ws(query)
        assert await client.close_info() == (1000, "Bad request.")


@pytest_twisted.ensureDeferred
async def test_rate_limit_closes_with_bad_request(make_gateway):
    gateway = make_gateway(max_connections_per_minute=1)
    first = await gateway.ws()
    await first.welcome()
    second = await gateway.ws()
    assert await second.close_info() == (1000, "Bad request.")


@pytest_twisted.ensureDeferred
async def test_server_pings_and_keeps_answering_connections(make_gateway):
    gateway = make_gateway(heartbeat_interval=0.5)  # a pong has one interval to arrive
    client = await gateway.ws("?subscriptions=" + subs_query([{"eventType": "greeting"}]))
    await client.welcome()
    while client.pings < 3:  # autobahn answers with pongs, so the connection stays
        await gateway.publish(greeting("p", "ping-check"))
        assert (await client.next_event())["id"] == "ping-check"
    assert len(gateway.hub.connections) == 1


@pytest_twisted.ensureDeferred
async def test_shutdown_closes_with_going_away(make_gateway):
    gateway = make_gateway()
    client = await gateway.ws()
    await client.welcome()
    await gateway.service.stopService()
    code, _reason = await client.close_info()
    assert code == 1001


@pytest_twisted.ensureDeferred
async def test_an_open_connection_keeps_little_and_still_works(gateway):
    """autobahn's options live on the class and the idle defaults and handshake
    leftovers are dropped; events, pings and the close handshake still work."""
    client = await gateway.ws("?subscriptions=" + subs_query(ALICE))
    await client.welcome()
    (connection,) = gateway.hub.connections.values()
    own = vars(connection)
    assert len(own) <= 20, sorted(own)
    assert not {"http_headers", "http_request_data", "maxFramePayloadSize", "_wskey"} & set(own)
    assert type(connection.send_queue).__name__ == "_SendQueue"
    assert connection.maxFramePayloadSize == 65536  # the factory's option, from the class
    assert connection.perMessageCompressionAccept(["an offer"]) is None  # not a method
    await gateway.publish(greeting("alice", "a2"))
    assert (await client.next_event())["id"] == "a2"
    client.send_text("hello")  # autobahn's own paths still find what they read
    assert await client.close_info() == (1000, NO_TWO_WAY)


@pytest_twisted.ensureDeferred
async def test_a_plain_get_is_told_to_upgrade(gateway):
    """Found by the schemathesis fuzz (issue 16): a GET without ``Upgrade: websocket`` got
    autobahn's 200 banner page, naming autobahn and its version; now 426."""
    raw = await RawHTTPClient.open(gateway.inbound_port, "GET", "/_rig/v1/connection/ws?jwt=x")
    gateway.clients.append(raw)
    assert raw.status == 426
    assert raw.headers.get("upgrade") == "websocket"
    assert "server" not in raw.headers
    await within(raw.complete)
    assert raw.body == NOT_AN_UPGRADE.encode()
    assert len(gateway.hub.connections) == 0


def _left_of(gateway):
    """What is still in memory of *gateway*'s WebSockets: their protocols, and the HTTP
    channels and requests that asked for the upgrades."""
    site = gateway.service.getServiceNamed("inbound").factory
    return [obj for obj in gc.get_objects()
            if (isinstance(obj, RigWebSocketProtocol) and obj.factory.hub is gateway.hub)
            or (isinstance(obj, RigChannel) and obj.site is site)
            or (isinstance(obj, BoundedRequest) and obj.channel is not None
                and obj.channel.site is site)]


@pytest_twisted.ensureDeferred
async def test_a_closed_websocket_is_freed_at_once_without_the_garbage_collector(gateway):
    """A WebSocket's HTTP channel and request go once it is open, and the protocol once it
    closes, by reference counting. Before, the transport (the channel was its producer)
    kept the channel and its request for the connection's life, the channel's head timer
    for 30 s more, and they, and the protocol (autobahn fires ``is_closed`` with the
    protocol itself), formed reference cycles that survived into the collector's older
    generations, at every connect."""
    gc.collect()
    gc.disable()
    try:
        closed_by_server = await gateway.ws("?subscriptions=" + subs_query(ALICE))
        aborted_by_client = await gateway.ws()
        await closed_by_server.welcome()
        await aborted_by_client.welcome()
        assert len(_left_of(gateway)) == 2  # the two protocols: the channels are gone
        closed_by_server.send_text("hello")
        assert (await closed_by_server.close_info())[0] == 1000
        aborted_by_client.disconnect()
        await eventually(reactor, lambda: not gateway.hub.connections, 5, "both closed")
        await eventually(reactor, lambda: not _left_of(gateway), 2, "their objects freed")
    finally:
        gc.enable()


class RawUpgrade(protocol.Protocol):
    """Sends an opening handshake (and *extra* header lines) and records what arrives."""

    def __init__(self, extra=b""):
        self.extra = extra
        self.chunks = []
        self.answered = defer.Deferred()  # the 101 arrived
        self.welcomed = defer.Deferred()  # rig.subscriptions_set arrived

    @classmethod
    async def open(cls, gateway, extra=b""):
        client = cls(extra)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", gateway.inbound_port)
        await within(connectProtocol(endpoint, client))
        return client

    def connectionMade(self):
        self.transport.write(
            b"GET /_rig/v1/connection/ws?subscriptions=" + subs_query(ALICE).encode()
            + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Extensions: permessage-deflate\r\n" + self.extra + b"\r\n")

    def dataReceived(self, data):
        self.chunks.append(data)
        received = b"".join(self.chunks)
        if b"\r\n\r\n" in received and not self.answered.called:
            self.answered.callback(None)
        if b"rig.subscriptions_set" in received and not self.welcomed.called:
            self.welcomed.callback(None)

    def answer_and_messages(self):
        """The 101's status line and headers, and the JSON of each text frame after it."""
        head, _, frames = b"".join(self.chunks).partition(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        headers = {name.lower(): value
                   for name, _, value in (line.partition(b": ") for line in lines)}
        messages = []
        while frames:
            assert frames[0] == 0x81  # a final text frame, unmasked
            length, start = frames[1], 2
            if length == 126:
                length, start = int.from_bytes(frames[2:4], "big"), 4
            messages.append(json.loads(frames[start:start + length]))
            frames = frames[start + length:]
        return status, headers, messages


@pytest_twisted.ensureDeferred
async def test_the_opening_handshake_answer_and_the_welcome(gateway):
    """The 101 carries RFC 6455's accept value and names no server software (autobahn's
    named itself and its version), and declines the compression offer; the two welcome
    frames follow (in the same write: tests/test_clock_driven.py)."""
    client = await RawUpgrade.open(gateway)
    await within(client.welcomed)
    status, headers, messages = client.answer_and_messages()
    assert status == b"HTTP/1.1 101 Switching Protocols"
    assert headers == {b"upgrade": b"websocket", b"connection": b"Upgrade",
                       b"sec-websocket-accept": b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="}
    assert [message["type"] for message in messages] == [
        "rig.connection.create", "rig.subscriptions_set"]
    assert messages[1]["data"] == ALICE
    client.transport.abortConnection()


@pytest_twisted.ensureDeferred
async def test_the_101_does_not_wait_for_the_subscription_check(make_gateway, stub_server):
    """While an external check decides, the client already has its 101 (the upgrade always
    succeeds); the query and the trace context reach the check as sent, and the welcome
    follows its answer."""
    checker = stub_server(lambda info: None)  # holds every request until released
    gateway = make_gateway(subscription_check=checker.url)
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    client = await RawUpgrade.open(
        gateway, b"traceparent: 00-" + trace_id.encode() + b"-b7ad6b7169203331-01\r\n")
    await within(client.answered)
    await eventually(reactor, lambda: checker.hanging, 5, "the check asked")
    assert not client.welcomed.called
    (check,) = checker.requests
    assert json.loads(check["body"]) == {"subscriptions": ALICE}
    assert check["headers"]["traceparent"].split("-")[1] == trace_id
    (held,) = checker.hanging
    held.setResponseCode(200)
    held.finish()
    await within(client.welcomed)
    status, _headers, messages = client.answer_and_messages()
    assert status == b"HTTP/1.1 101 Switching Protocols"
    assert [message["type"] for message in messages] == [
        "rig.connection.create", "rig.subscriptions_set"]
    client.transport.abortConnection()
