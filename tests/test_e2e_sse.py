"""Server-Sent Events end to end: real listener, raw HTTP client."""
import pytest_twisted

from tests.support import greeting, subs_query, within

ALICE = [{"eventType": "greeting", "oneOf": [{"name": "alice"}]}]


@pytest_twisted.ensureDeferred
async def test_connect_without_parameters_gets_welcome_and_empty_set(gateway):
    client = await gateway.sse()
    assert client.status == 200
    assert client.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert client.headers["cache-control"] == "no-cache"
    assert client.headers["access-control-allow-origin"] == "*"
    created = await client.next_message()
    assert created["event"] == "rig.connection.create"
    # rig events carry the current position, so a reconnect resumes from here
    assert created["id"].endswith(".0")
    assert created["data"]["source"] == "rig"
    assert created["data"]["specversion"] == "1.0"
    assert created["data"]["data"]["connection_token"]
    subscriptions = await client.next_message()
    assert subscriptions["event"] == "rig.subscriptions_set"
    assert subscriptions["data"]["data"] == []


@pytest_twisted.ensureDeferred
async def test_matching_events_arrive_with_exact_framing(gateway):
    client = await gateway.sse("?subscriptions=" + subs_query(ALICE))
    _token, subscriptions = await client.welcome()
    assert subscriptions == ALICE
    await gateway.publish(greeting("bob", "b1"))
    body = b'{"specversion":"1.0","type":"greeting","source":"s","id":"a1","data":{"name":"alice"}}'
    await gateway.publish(body)
    message = await client.next_message()
    assert message["event"] == "greeting"
    assert message["data"]["id"] == "a1"  # bob's event was not delivered
    position = gateway.hub.history.position_id()
    frame = b"id: " + position + b"\nevent: greeting\ndata: " + body + b"\n\n"
    assert client.body.endswith(frame)
    assert position.endswith(b".2")  # bob's event took position 1


@pytest_twisted.ensureDeferred
async def test_multiline_json_becomes_several_data_lines(gateway):
    client = await gateway.sse("?subscriptions=" + subs_query([{"eventType": "greeting"}]))
    await client.welcome()
    body = b'{"specversion":"1.0",\n"type":"greeting",\r\n"source":"s","id":"ml"}'
    await gateway.publish(body)
    event = await client.next_event()
    assert event["id"] == "ml"
    assert b'data: {"specversion":"1.0",\ndata: "type":"greeting",\ndata: "source"' in client.body


@pytest_twisted.ensureDeferred
async def test_http10_client_gets_unchunked_stream(gateway):
    client = await gateway.sse("?subscriptions=" + subs_query([{"eventType": "greeting"}]),
                               version="1.0")
    assert "transfer-encoding" not in client.headers
    await client.welcome()
    await gateway.publish(greeting("carol", "c1"))
    assert (await client.next_event())["id"] == "c1"


@pytest_twisted.ensureDeferred
async def test_bad_subscription_json_is_400(gateway):
    client = await gateway.sse("?subscriptions=" + "can't%20%7B%20be%20%5B%20parsed.")
    assert client.status == 400
    assert await client.response_body() == client.body
    assert client.body.startswith(b"Failed to decode subscription list: ")
    assert "content-type" not in client.headers


@pytest_twisted.ensureDeferred
async def test_subscriptions_object_instead_of_array_is_400(gateway):
    client = await gateway.sse("?subscriptions=" + subs_query({"eventType": "greeting"}))
    assert client.status == 400
    assert await client.response_body() == client.body
    assert client.body.startswith(b"could not parse subscriptions: invalid subscription")


@pytest_twisted.ensureDeferred
async def test_invalid_subscription_entries_are_400(gateway):
    for bad in ([{"eventType": 7}], [{"eventType": ""}], [{"oneOf": []}],
                [{"eventType": "x", "oneOf": {"a": 1}}], [{"eventType": "x", "oneOf": [1]}],
                [{"eventType": "x", "oneOf": [{"": 1}]}], ["greeting"]):
        client = await gateway.sse("?subscriptions=" + subs_query(bad))
        assert client.status == 400, bad
        await client.response_body()
        assert client.body.startswith(b"could not parse subscriptions: invalid subscription: ")


@pytest_twisted.ensureDeferred
async def test_jwt_without_validation_configured_is_400(gateway):
    client = await gateway.sse("?jwt=foobar")
    assert client.status == 400
    assert await client.response_body() == client.body
    assert client.body.startswith(b"could not parse subscriptions: could not decode JWT: ")


@pytest_twisted.ensureDeferred
async def test_rate_limit_gives_429_after_quota(make_gateway):
    gateway = make_gateway(max_connections_per_minute=2)
    for _ in range(2):
        client = await gateway.sse()
        assert client.status == 200
    bad = await gateway.sse("?subscriptions=nope")  # invalid attempts use no quota
    assert bad.status == 400
    refused = await gateway.sse()
    assert refused.status == 429
    await refused.response_body()
    assert refused.body == b"Reached maximum number of connections"


@pytest_twisted.ensureDeferred
async def test_heartbeat_comment_is_sent(make_gateway):
    gateway = make_gateway(heartbeat_interval=0.2)
    client = await gateway.sse()
    await client.welcome()
    message = await client.next_message(skip_comments=False)
    assert message == {"comment": "heartbeat"}
    assert client.body.endswith(b": heartbeat\n\n")


@pytest_twisted.ensureDeferred
async def test_disconnected_client_is_unregistered_and_others_keep_working(gateway):
    leaving = await gateway.sse("?subscriptions=" + subs_query([{"eventType": "greeting"}]))
    staying = await gateway.sse("?subscriptions=" + subs_query([{"eventType": "greeting"}]))
    await leaving.welcome()
    await staying.welcome()
    assert len(gateway.hub.connections) == 2
    leaving.disconnect()
    await within(leaving.closed)
    for number in range(3):
        await gateway.publish(greeting("x", f"e{number}"))
        assert (await staying.next_event())["id"] == f"e{number}"
    assert len(gateway.hub.connections) == 1
    assert len(gateway.hub.index) == 1


@pytest_twisted.ensureDeferred
async def test_shutdown_ends_the_stream(make_gateway):
    gateway = make_gateway()
    client = await gateway.sse()
    await client.welcome()
    await gateway.service.stopService()
    assert await client.response_body() == client.body
    assert client.body.endswith(b"\n\n")


def test_the_response_head_goes_out_with_the_first_frame_in_one_write():
    """One send per connect, not two: the head waits for the welcome, then nothing waits."""
    from types import SimpleNamespace

    from twisted.internet.testing import MemoryReactorClock, StringTransport

    from rig.connections.sse import SSEConnection
    from rig.hub.hub import Hub

    class CountingTransport(StringTransport):
        writes = 0

        def write(self, data):
            self.writes += 1
            super().write(data)

    transport = CountingTransport()
    request = SimpleNamespace(channel=SimpleNamespace(transport=transport), chunked=False)
    head = b"HTTP/1.1 200 OK\r\n\r\n"
    connection = SSEConnection(Hub(MemoryReactorClock()), request, 1, head=head)
    connection.write_frame(b"data: 1\n\n")
    assert (transport.writes, transport.value()) == (1, b"HTTP/1.1 200 OK\r\n\r\ndata: 1\n\n")
    connection.write_frame(b"data: 2\n\n")
    assert transport.value().endswith(b"\n\ndata: 2\n\n") and transport.writes == 2


@pytest_twisted.ensureDeferred
async def test_the_inbound_connection_has_nagle_off(gateway):
    """A frame held back by Nagle would wait for the client's delayed ACK (up to 40 ms)."""
    import socket

    client = await gateway.sse()
    await client.welcome()
    site = gateway.service.getServiceNamed("inbound").factory
    (channel,) = site._channels
    handle = channel.transport.getHandle()
    assert handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
