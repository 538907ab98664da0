"""The confirmation promise, across real processes (issue 12).

Once a client has its confirmation (``rig.subscriptions_set`` on connect, the
204 of the subscriptions PUT, the first long-poll answer), every matching event
published afterwards on any node reaches it. Each round subscribes on node B
to an event type no node has seen before and publishes on node A the instant
the confirmation arrives.
"""
import json

import pytest_twisted
import treq
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from tests.support import RawHTTPClient, WSClient, subs_query, within

COOKIE = "promise-cookie"
ROUNDS = 12
LONGPOLL = "/_rig/v1/connection/longpolling"


async def start_pair(processes, tmp_path, **env):
    """Node A and node B (B joins through A), both ready."""
    a = await processes.node("a", str(tmp_path), COOKIE, **env).start(processes.pool)
    b = processes.node("b", str(tmp_path), COOKIE, seeds=[a.cluster_address], **env)
    return a, await b.start(processes.pool)


def fresh(event_type, event_id):
    return {"specversion": "1.0", "type": event_type, "source": "promise", "id": event_id,
            "data": {}}


async def publish(pool, node, event):
    response = await within(treq.post(node.url("/_rig/v1/events"), pool=pool,
                                      data=json.dumps(event).encode(),
                                      headers={"content-type": "application/json"}))
    assert response.code == 202, await within(response.text())
    await within(response.text())


async def received(client):
    """The id of the next event on *client*, or nothing if none comes in time."""
    try:
        return [(await client.next_event())["id"]]
    except defer.TimeoutError:
        return []


def subscribe_query(event_type):
    return "?subscriptions=" + subs_query([{"eventType": event_type}])


async def ws_round(pool, a, b, event_type):
    client = await WSClient.open(b.inbound, "/_rig/v1/connection/ws" + subscribe_query(event_type))
    try:
        await client.welcome()  # rig.subscriptions_set: the confirmation
        await publish(pool, a, fresh(event_type, event_type))
        return await received(client)
    finally:
        client.disconnect()


async def sse_round(pool, a, b, event_type):
    client = await RawHTTPClient.open(b.inbound, "GET", "/_rig/v1/connection/sse"
                                      + subscribe_query(event_type))
    try:
        await client.welcome()
        await publish(pool, a, fresh(event_type, event_type))
        return await received(client)
    finally:
        client.disconnect()


async def longpoll_round(pool, a, b, event_type):
    created = await within(treq.get(b.url(LONGPOLL + subscribe_query(event_type)), pool=pool))
    assert json.loads(await within(created.text())) == "ok"  # the confirmation
    await publish(pool, a, fresh(event_type, event_type))
    cookies, seen = created.cookies(), []
    while event_type not in seen:  # the welcome events come first; then the event
        polled = await within(treq.get(b.url(LONGPOLL), pool=pool, cookies=cookies), 10)
        body = json.loads(await within(polled.text()))
        seen += [event["id"] for event in body["events"] if event["type"] == event_type]
        cookies = polled.cookies()
        if not body["events"]:
            break  # a wait ran out with nothing: the event was missed
    return seen


async def put_round(pool, a, b, event_type, via):
    client = await WSClient.open(b.inbound, "/_rig/v1/connection/ws")
    try:
        token, _ = await client.welcome()
        response = await within(treq.put(
            via.url(f"/_rig/v1/connection/ws/{token}/subscriptions"), pool=pool,
            data=json.dumps({"subscriptions": [{"eventType": event_type}]}).encode(),
            headers={"content-type": "application/json"}))
        assert response.code == 204, await within(response.text())  # the confirmation
        await within(response.text())
        await publish(pool, a, fresh(event_type, event_type))
        assert (await client.next_event())["type"] == "rig.subscriptions_set"
        return await received(client)
    finally:
        client.disconnect()


@pytest_twisted.ensureDeferred
async def test_events_published_elsewhere_right_after_the_confirmation_arrive(
        processes, tmp_path):
    a, b = await start_pair(processes, tmp_path)
    pool = processes.pool
    missed = []
    for number in range(ROUNDS):
        rounds = {
            "ws": lambda t: ws_round(pool, a, b, t),
            "sse": lambda t: sse_round(pool, a, b, t),
            "longpoll": lambda t: longpoll_round(pool, a, b, t),
            "put via A": lambda t: put_round(pool, a, b, t, via=a),
            "put via B": lambda t: put_round(pool, a, b, t, via=b),
        }
        for kind, run in rounds.items():
            event_type = f"fresh.{kind.replace(' ', '-')}.{number}"
            if await run(event_type) != [event_type]:
                missed.append(event_type)
    assert missed == []


@pytest_twisted.ensureDeferred
async def test_two_nodes_sharing_a_consumer_group_deliver_each_entry_once_per_subscriber(
        processes, tmp_path, redis_server):
    a, b = await start_pair(processes, tmp_path, REDIS_URL=redis_server.url)
    redis = await redis_server.client()
    try:
        for number in range(4):
            event_type = f"fresh.redis.{number}"
            on_a = processes.client(await WSClient.open(
                a.inbound, "/_rig/v1/connection/ws" + subscribe_query(event_type)))
            on_b = processes.client(await RawHTTPClient.open(
                b.inbound, "GET", "/_rig/v1/connection/sse" + subscribe_query(event_type)))
            await on_a.welcome()
            await on_b.welcome()
            expected = [f"{event_type}-{index}" for index in range(10)]
            for event_id in expected:
                await redis.execute_command("XADD", "rig", "*", "event",
                                            json.dumps(fresh(event_type, event_id)))
            for client in (on_a, on_b):
                got = [(await client.next_event())["id"] for _ in expected]
                assert sorted(got) == expected
            await deferLater(reactor, 0.3)  # nothing more comes: each entry exactly once
            assert len(on_a.messages.pending) == 0
            assert [m for m in on_b.messages.pending if "comment" not in m] == []
    finally:
        await redis.disconnect()
