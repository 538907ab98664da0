"""Cross-node events through a broker, the mesh as the fallback (issue 18).

Against real ``redis-server`` and ``nats-server`` processes started by the fixtures;
three gateways in one reactor here, three ``twistd`` processes in the last test.
"""
import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from rig.backplane.backplane import channel_of
from rig.cluster.membership import SwimConfig
from rig.cluster.routing import RecentPositions
from rig.settings import Settings, SettingsError
from rig.testing import eventually as poll
from tests.support import NatsServer, RedisServer, greeting, subs_query

FAST = SwimConfig(probe_interval=0.2, probe_timeout=0.1, push_pull_interval=1.0)


def eventually(predicate, seconds=15.0, what="condition"):
    return poll(reactor, predicate, seconds, what)


def query(*types):
    return "?subscriptions=" + subs_query([{"eventType": event_type} for event_type in types])


@pytest_twisted.async_yield_fixture(params=["redis", "nats"])
async def broker(request, tmp_path):
    """A real broker process of each kind, and the CLUSTER_BACKPLANE value for it."""
    server = (RedisServer if request.param == "redis" else NatsServer)(str(tmp_path))
    await server.start()
    server.backplane_url = (f"redis://127.0.0.1:{server.port}" if request.param == "redis"
                            else f"nats://127.0.0.1:{server.port}")
    yield server
    server.stop()


async def three_nodes(make_gateway, broker, **overrides):
    settings = Settings.from_mapping({}, {"CLUSTER_BACKPLANE": broker.backplane_url,
                                          "CLUSTER_PORT": "tcp:0:interface=127.0.0.1",
                                          "NODE_COOKIE": "backplane"})
    common = {"node_cookie": "backplane", "swim_config": FAST,
              "cluster_listen": "tcp:0:interface=127.0.0.1",
              "cluster_backplane": settings.cluster_backplane, **overrides}
    a = make_gateway(**common)
    seed = (a.service.cluster.links.address,)
    nodes = [a, make_gateway(cluster_seeds=seed, **common),
             make_gateway(cluster_seeds=seed, **common)]

    async def formed():
        return all(len([m for m in node.service.cluster.members() if m.state == "alive"]) == 3
                   and node.service.backplane.up for node in nodes)

    await eventually(formed, what="three nodes on the backplane")

    async def flags_known():  # each knows every node receives from the broker
        return all(len(node.service.backplane.replica.on_broker()) == 3 for node in nodes)

    await eventually(flags_known, what="backplane flags gossiped")
    return nodes


def test_channels_and_positions():
    assert channel_of("rig.events.", "com.example.greeting") == "rig.events.com.example.greeting"
    odd = channel_of("rig.events.", "a b*>.")
    assert odd == "rig.events.~" + b"a b*>.".hex()
    assert channel_of("p.", "~x") != channel_of("p.", "x")
    recent = RecentPositions(per_origin=3, max_origins=2)
    assert recent.first_time(b"e1.1") and not recent.first_time("e1.1")
    for seq in (2, 3, 4):
        assert recent.first_time(f"e1.{seq}")
    assert recent.first_time("e1.1")  # forgotten: only the last 3 are kept
    assert recent.first_time("e2.1") and recent.first_time("e3.1")
    assert recent.first_time("e1.4")  # the oldest sender was dropped


def test_backplane_settings():
    with pytest.raises(SettingsError, match="CLUSTER_PORT"):
        Settings.from_mapping({}, {"CLUSTER_BACKPLANE": "redis://h"})
    with pytest.raises(SettingsError, match="CLUSTER_BACKPLANE"):
        Settings.from_mapping({}, {"CLUSTER_BACKPLANE": "kafka://h", "CLUSTER_PORT": "7000",
                                   "NODE_COOKIE": "c"})
    settings = Settings.from_mapping({}, {
        "CLUSTER_BACKPLANE": "redis://:s3cret@h:6380", "CLUSTER_PORT": "7000",
        "NODE_COOKIE": "c"})
    kind, address = settings.cluster_backplane
    assert (kind, address.host, address.port) == ("redis", "h", 6380)
    assert "s3cret" not in repr(settings)
    kind, servers = Settings.from_mapping({}, {
        "CLUSTER_BACKPLANE": "nats://a:1,nats://b:2", "CLUSTER_PORT": "7000",
        "NODE_COOKIE": "c"}).cluster_backplane
    assert (kind, [s.port for s in servers]) == ("nats", [1, 2])
    with pytest.raises(SettingsError, match="CLUSTER_BACKPLANE_PREFIX"):
        Settings.from_mapping({}, {"CLUSTER_BACKPLANE_PREFIX": "a b."})


@pytest_twisted.ensureDeferred
async def test_events_from_every_node_reach_every_node_once_through_the_broker(
        make_gateway, broker):
    nodes = await three_nodes(make_gateway, broker)
    clients = []
    for node in nodes:
        ws, sse = await node.ws(query("greeting")), await node.sse(query("greeting"))
        await ws.welcome()
        await sse.welcome()
        clients += [ws, sse]
    links_before = [node.service.backplane.router.link_sends for node in nodes]
    for number, node in enumerate(nodes * 3):
        await node.publish(greeting("n", f"e{number}"))
    expected = sorted(f"e{number}" for number in range(9))
    for client in clients:
        assert sorted([(await client.next_event())["id"] for _ in expected]) == expected
    await deferLater(reactor, 0.3)
    for client in clients:
        assert not client.messages.pending  # nothing twice
    assert [node.service.backplane.router.link_sends for node in nodes] == links_before
    assert all(node.service.backplane.counts["published"] == 3 for node in nodes)
    assert all(node.service.backplane.counts["echoes"] == 3 for node in nodes)


@pytest_twisted.ensureDeferred
async def test_messages_without_the_clusters_tag_are_dropped(make_gateway, broker):
    nodes = await three_nodes(make_gateway, broker)
    client = await nodes[0].ws(query("greeting"))
    await client.welcome()
    body = json.dumps(greeting("n", "forged")).encode()
    channel = channel_of("rig.events.", "greeting")
    for payload in (b"ffff.1 " + b"0" * 32 + b"\n" + body, b"ffff.2\n" + body, body):
        if isinstance(broker, NatsServer):
            publisher = await broker.client()
            publisher.publish(channel, payload)
            await publisher.flush()
            await publisher.stopService()
        else:
            redis = await broker.client()
            await redis.execute_command("SPUBLISH", channel, payload)
            await redis.disconnect()
    await eventually(lambda: nodes[0].service.backplane.counts["forged"] == 3,
                     what="forgeries counted")
    await nodes[1].publish(greeting("n", "genuine"))
    assert (await client.next_event())["id"] == "genuine"  # and nothing before it


@pytest_twisted.ensureDeferred
async def test_a_confirmation_waits_for_the_broker_to_subscribe_a_fresh_type(
        make_gateway, broker):
    a, b, c = await three_nodes(make_gateway, broker)
    for number in range(5):  # each a type nobody had: a new channel for b's broker link
        fresh = f"fresh.{number}"
        client = await b.ws(query(fresh))
        await client.welcome()  # the confirmation; then, at once, from the other nodes:
        await a.publish(greeting("n", f"{fresh}.a", type=fresh))
        await c.publish(greeting("n", f"{fresh}.c", type=fresh))
        got = sorted([(await client.next_event())["id"] for _ in range(2)])
        assert got == [f"{fresh}.a", f"{fresh}.c"]


@pytest_twisted.ensureDeferred
async def test_the_broker_killed_and_restarted_mid_stream_loses_and_repeats_nothing(
        make_gateway, broker):
    nodes = await three_nodes(make_gateway, broker, prometheus_metrics_enabled=True)
    clients = []
    for node in nodes:
        client = await node.ws(query("greeting"))
        await client.welcome()
        clients.append(client)
    published = []

    async def publish_some(count):
        for _ in range(count):
            event_id = f"e{len(published)}"
            await nodes[len(published) % 3].publish(greeting("n", event_id))
            published.append(event_id)
            await deferLater(reactor, 0.02)

    await publish_some(15)
    broker.stop()  # killed: every node loses it at once
    await publish_some(5)  # at once, before anyone may have noticed
    await eventually(lambda: not any(node.service.backplane.up for node in nodes),
                     what="every node noticed")
    health = json.loads(await (await nodes[0].request("GET", "/v3/health", internal=True))
                        .text())
    assert health["status"] == "degraded" and health["checks"]["backplane"] == "unavailable"
    metrics = await (await nodes[0].request("GET", "/metrics", internal=True)).text()
    assert "rig_backplane_up 0.0" in metrics
    await publish_some(15)  # over the mesh
    await broker.start()  # back, on the same port
    restarted = publish_some(30)  # while the nodes return to it
    await eventually(lambda: all(node.service.backplane.up for node in nodes),
                     what="every node back on the broker")
    await restarted
    await publish_some(15)
    for client in clients:
        got = [(await client.next_event())["id"] for _ in published]
        assert sorted(got) == sorted(published)  # each once: none lost, none twice
    await deferLater(reactor, 0.3)
    assert not any(client.messages.pending for client in clients)
    metrics = await (await nodes[0].request("GET", "/metrics", internal=True)).text()
    assert "rig_backplane_up 1.0" in metrics
    assert all(node.service.backplane.counts["published"] > 0 for node in nodes)


@pytest_twisted.ensureDeferred
async def test_three_gateway_processes_on_the_backplane(processes, broker, tmp_path):
    """Real ``twistd rig`` processes configured by environment variables: subscribers
    on every node, publishers on every node, each event once to each, through the broker."""
    import treq

    from tests.support import WSClient, get_json, wait_for, within

    env = {"CLUSTER_BACKPLANE": broker.backplane_url}
    a = await processes.node("a", str(tmp_path), "bp-cookie", **env).start(processes.pool)
    b = processes.node("b", str(tmp_path), "bp-cookie", seeds=[a.cluster_address], **env)
    c = processes.node("c", str(tmp_path), "bp-cookie", seeds=[a.cluster_address], **env)
    for node in (b, c):
        await node.start(processes.pool)
    nodes = (a, b, c)

    async def all_on_the_broker():
        for node in nodes:
            health = await get_json(processes.pool, node.url("/v3/health", internal=True))
            view = await get_json(processes.pool, node.url("/v3/cluster", internal=True))
            alive = [m for m in view["members"] if m["state"] == "alive"]
            if health["checks"].get("backplane") != "ok" or len(alive) != 3:
                return False
        return True

    await wait_for(all_on_the_broker, 30, "three processes on the backplane")
    clients = [processes.client(await WSClient.open(node.inbound, "/_rig/v1/connection/ws"
                                                    + query("greeting"))) for node in nodes]
    for client in clients:
        await client.welcome()
    for number in range(12):
        node = nodes[number % 3]
        response = await within(treq.post(
            node.url("/_rig/v1/events"), pool=processes.pool,
            data=json.dumps(greeting("n", f"p{number}")).encode(),
            headers={"content-type": "application/json"}))
        assert response.code == 202
        await within(response.content())
    expected = sorted(f"p{number}" for number in range(12))
    for client in clients:
        assert sorted([(await client.next_event())["id"] for _ in expected]) == expected
    await deferLater(reactor, 0.3)
    assert not any(client.messages.pending for client in clients)
    for node in nodes:
        response = await within(treq.get(node.url("/metrics", internal=True),
                                          pool=processes.pool))
        metrics = await within(response.text())
        assert 'rig_backplane_messages_total{outcome="published"} 4.0' in metrics
        assert 'rig_backplane_messages_total{outcome="received"} 8.0' in metrics


async def broker_subscribers(broker, channel):
    """How many connections the broker itself has subscribed to *channel*."""
    if isinstance(broker, NatsServer):
        return await broker.subscribers(channel)
    client = await broker.client()
    try:
        reply = await client.execute_command("PUBSUB", "SHARDNUMSUB", channel)
        return int(reply[1])
    finally:
        await client.disconnect()


@pytest_twisted.ensureDeferred
async def test_a_channel_is_held_while_there_is_interest_and_the_history_age_after(
        make_gateway, broker):
    nodes = await three_nodes(make_gateway, broker, recovery_history_age=1.0)
    channel = channel_of("rig.events.", "news.sports")
    assert await broker_subscribers(broker, channel) == 0
    client = await nodes[1].ws(query("news.sports"))
    await client.welcome()
    assert await broker_subscribers(broker, channel) == 1  # before the confirmation
    client.disconnect()

    async def left():
        return await broker_subscribers(broker, channel) == 0

    await eventually(left, what="unsubscribed once the history no longer needs it")


@pytest_twisted.ensureDeferred
async def test_redis_pubsub_over_tls_with_a_password(tmp_path):
    from twisted.internet.ssl import Certificate

    from rig.backplane.brokers import RedisPubSub
    from rig.backplane.resp import RedisError
    from rig.streams.source import parse_redis_url
    from tests.certs import make_certificate

    files = make_certificate(tmp_path)
    server = RedisServer(str(tmp_path), ["--requirepass", "s3cret"], tls=files)
    await server.start()
    received = []
    pubsub = RedisPubSub(reactor, parse_redis_url(f"rediss://:s3cret@127.0.0.1:{server.port}"),
                         lambda channel, payload: received.append((channel, payload)),
                         trust_root=Certificate.loadPEM(files.pem))
    try:
        await pubsub.connect()
        assert pubsub.sharded  # Redis 7
        assert "s3cret" not in str(pubsub)
        await pubsub.subscribe("rig.events.greeting")
        await pubsub.publish("rig.events.greeting", b"p.1\n{}")  # acknowledged
        await eventually(lambda: received, what="message over TLS")
        assert received == [("rig.events.greeting", b"p.1\n{}")]
        await pubsub.unsubscribe("rig.events.greeting")
        await pubsub.subscribe("rig.events.news")
        pubsub.publish("rig.events.greeting", b"p.2\n{}")
        await pubsub.publish("rig.events.news", b"p.3\n{}")
        await eventually(lambda: len(received) == 2, what="the later message")
        assert received[1] == ("rig.events.news", b"p.3\n{}")  # p.2: nobody subscribed
        wrong = RedisPubSub(reactor, parse_redis_url(f"rediss://:nope@127.0.0.1:{server.port}"),
                            lambda *_: None, trust_root=Certificate.loadPEM(files.pem))
        with pytest.raises(RedisError, match="WRONGPASS"):
            await wrong.connect()
    finally:
        pubsub.close()
        server.stop()


def test_resp_replies_and_pushes_split_anywhere():
    from twisted.internet.testing import StringTransport

    from rig.backplane.resp import RedisError, RespProtocol

    stream = (b"*3\r\n$10\r\nssubscribe\r\n$1\r\na\r\n:1\r\n"
              b"*3\r\n$8\r\nsmessage\r\n$1\r\na\r\n$5\r\nx\r\ny!\r\n"
              b"-WRONGPASS nope\r\n:7\r\n$-1\r\n+OK\r\n")
    for size in (1, 2, len(stream)):
        pushed, replies = [], []
        protocol = RespProtocol(lambda channel, payload, seen=pushed: seen.append(
            (channel, payload)))
        transport = StringTransport()
        protocol.makeConnection(transport)
        for _ in range(5):
            protocol.execute("X").addBoth(replies.append)
        assert transport.value() == b"*1\r\n$1\r\nX\r\n" * 5
        for start in range(0, len(stream), size):
            protocol.dataReceived(stream[start:start + size])
        assert pushed == [(b"a", b"x\r\ny!")]
        assert replies[0] == [b"ssubscribe", b"a", 1]
        assert isinstance(replies[1].value, RedisError)
        assert replies[2:] == [7, None, b"OK"]
    protocol = RespProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"?garbage\r\n")
    assert transport.disconnecting or transport.disconnected


@pytest_twisted.ensureDeferred
async def test_one_node_losing_the_broker_gets_events_over_the_links_until_it_is_back(
        make_gateway, tmp_path):
    """The other nodes keep their broker; the one that lost it clears its flag, they send
    to it over the links, and it returns to the broker once resubscribed."""
    server = RedisServer(str(tmp_path))
    await server.start()
    server.backplane_url = f"redis://127.0.0.1:{server.port}"
    try:
        a, b, _c = await three_nodes(make_gateway, server)
        client = await b.ws(query("greeting"))
        await client.welcome()
        b_name = b.service.cluster.node_name
        b.service.backplane.pubsub.close()  # only b's connections to the broker go
        await eventually(lambda: b_name not in a.service.backplane.replica.on_broker(),
                         what="a learns that b is off the broker")
        sends = a.service.backplane.router.link_sends
        await a.publish(greeting("n", "over-the-links"))
        assert (await client.next_event())["id"] == "over-the-links"
        assert a.service.backplane.router.link_sends == sends + 1  # to b only
        await eventually(lambda: b_name in a.service.backplane.replica.on_broker(),
                         what="b back on the broker")
        await a.publish(greeting("n", "through-the-broker"))
        assert (await client.next_event())["id"] == "through-the-broker"
        assert a.service.backplane.router.link_sends == sends + 1
        await deferLater(reactor, 0.3)
        assert not client.messages.pending
    finally:
        server.stop()
