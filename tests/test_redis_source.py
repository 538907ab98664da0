"""Consuming CloudEvents from Redis streams, against a real redis-server (issue 6)."""
import json

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from rig.streams.source import parse_redis_url
from rig.testing import eventually as poll
from tests.support import greeting, subs_query

ALL = "?subscriptions=" + subs_query([{"eventType": "greeting"}])


def eventually(predicate, seconds=10.0, what="condition"):
    return poll(reactor, predicate, seconds, what)


def nothing_pending(redis, stream):
    """A predicate: the group has no entry delivered but not acknowledged on *stream*."""
    async def check():
        return int((await redis.execute_command("XPENDING", stream, "rig"))[0]) == 0

    return check


async def redis_gateway(make_gateway, redis_server, **overrides):
    gateway = make_gateway(redis_url=parse_redis_url(redis_server.url), **overrides)
    source = gateway.service.redis

    async def ready():
        return source.healthy

    await eventually(ready, what="consumer connected")
    return gateway, source


def test_redis_urls():
    address = parse_redis_url("rediss://:s%40cret@cache.internal:6380/3")
    assert (address.host, address.port, address.db, address.password, address.tls) == (
        "cache.internal", 6380, 3, "s@cret", True)
    assert parse_redis_url("redis://localhost").port == 6379
    for bad in ("http://x", "redis://host:port", "redis://host/db"):
        try:
            parse_redis_url(bad)
        except ValueError:
            continue
        raise AssertionError(bad)


@pytest_twisted.ensureDeferred
async def test_entries_reach_subscribers_and_are_acknowledged(make_gateway, redis_server):
    gateway, source = await redis_gateway(make_gateway, redis_server)
    client = await gateway.ws(ALL)
    await client.welcome()
    redis = await redis_server.client()
    try:
        await redis.execute_command("XADD", "rig", "*", "event",
                                    json.dumps(greeting("r", "from-redis")))
        await redis.execute_command(
            "XADD", "rig", "*", "ce_specversion", "1.0", "ce_type", "greeting",
            "ce_source", "s", "ce_id", "binary", "content-type", "application/json",
            "data", '{"name":"b"}')
        assert (await client.next_event())["id"] == "from-redis"
        event = await client.next_event()
        assert (event["id"], event["data"]) == ("binary", {"name": "b"})
        await eventually(nothing_pending(redis, "rig"), what="acknowledged")
        assert source.counts["consumed"] == 2
    finally:
        await redis.disconnect()


@pytest_twisted.ensureDeferred
async def test_bad_entries_are_acknowledged_logged_and_counted(make_gateway, redis_server):
    gateway, source = await redis_gateway(make_gateway, redis_server)
    client = await gateway.ws(ALL)
    await client.welcome()
    redis = await redis_server.client()
    try:
        await redis.execute_command("XADD", "rig", "*", "event", "{not json")
        await redis.execute_command("XADD", "rig", "*", "something", "else")
        await redis.execute_command("XADD", "rig", "*", "event",
                                    json.dumps({"specversion": "1.0", "type": "greeting"}))
        await redis.execute_command("XADD", "rig", "*", "event",
                                    json.dumps(greeting("r", "good-one")))
        assert (await client.next_event())["id"] == "good-one"
        assert source.counts["invalid"] == 3
        await eventually(nothing_pending(redis, "rig"), what="bad entries acknowledged")
    finally:
        await redis.disconnect()


@pytest_twisted.ensureDeferred
async def test_redis_restart_mid_stream(make_gateway, redis_server):
    gateway, source = await redis_gateway(make_gateway, redis_server)
    client = await gateway.ws(ALL)
    await client.welcome()
    redis_server.stop()

    async def degraded():
        return not source.healthy

    await eventually(degraded, what="consumer notices Redis is gone")
    health = await gateway.request("GET", "/health", internal=True)
    assert health.code == 200  # the gateway keeps serving without Redis
    readiness = json.loads(await (await gateway.request("GET", "/v3/health", internal=True)).text())
    assert readiness == {"status": "degraded", "checks": {"redis": "unavailable"}}
    await redis_server.start()

    async def healthy():
        return source.healthy

    await eventually(healthy, 20, "consumer reconnected")
    readiness = json.loads(await (await gateway.request("GET", "/v3/health", internal=True)).text())
    assert readiness["status"] == "ok"
    redis = await redis_server.client()
    try:
        await redis.execute_command("XADD", "rig", "*", "event",
                                    json.dumps(greeting("r", "after-restart")))
        assert (await client.next_event())["id"] == "after-restart"
    finally:
        await redis.disconnect()


@pytest_twisted.ensureDeferred
async def test_redis_down_at_start_does_not_stop_the_gateway(make_gateway):
    gateway = make_gateway(redis_url=parse_redis_url("redis://127.0.0.1:9/0"))
    response = await gateway.request("GET", "/health", internal=True)
    assert response.code == 200
    assert gateway.service.redis.healthy is False


def redis_api(target_stream, **endpoint):
    return {"id": "jobs", "name": "jobs", "proxy": {"target_url": "unused", "port": 1},
            "version_data": {"default": {"endpoints": [
                {"id": "submit", "method": "POST", "path_regex": "/jobs", "target": "redis",
                 "topic": target_stream, **endpoint}]}}}


JOB = {"specversion": "1.0", "type": "job.requested", "source": "client", "id": "j1",
       "rig": {"target_partition": "replaced"}, "data": {"n": 1}}


@pytest_twisted.ensureDeferred
async def test_proxy_redis_target_publishes_the_request_as_a_cloudevent(make_gateway,
                                                                       redis_server):
    gateway, _source = await redis_gateway(make_gateway, redis_server,
                                           proxy_config=(redis_api("jobs"),))
    response = await gateway.request("POST", "/jobs?x=1", json=JOB)
    assert (response.code, await response.text()) == (202, "Accepted.")
    redis = await redis_server.client()
    try:
        entries = await redis.execute_command("XRANGE", "jobs", "-", "+")
        (_entry_id, fields), = entries
        event = json.loads(dict(zip(fields[::2], fields[1::2], strict=False))["event"])
        assert event["data"] == {"n": 1} and event["id"] == "j1"
        assert event["rig"]["method"] == "POST" and event["rig"]["query"] == "x=1"
        assert "correlation" not in event["rig"] and "target_partition" not in event["rig"]
    finally:
        await redis.disconnect()
    response = await gateway.request("POST", "/jobs", data=b"not json",
                                     headers={"content-type": "application/json"})
    assert response.code == 400
    response = await gateway.request("POST", "/jobs", json={"no": "specversion"})
    assert response.code == 400


@pytest_twisted.ensureDeferred
async def test_proxy_waits_for_a_correlated_redis_response_or_times_out(make_gateway,
                                                                       redis_server):
    gateway, _source = await redis_gateway(
        make_gateway, redis_server, proxy_config=(redis_api("jobs", response_from="redis"),),
        proxy_redis_response_timeout=1.0)
    redis = await redis_server.client()
    try:
        waiting = gateway.request("POST", "/jobs", json=JOB)

        async def published():
            return bool(await redis.execute_command("XRANGE", "jobs", "-", "+"))

        await eventually(published, what="request published")
        (_entry_id, fields), = await redis.execute_command("XRANGE", "jobs", "-", "+")
        correlation = json.loads(dict(zip(fields[::2], fields[1::2], strict=False))["event"])[
            "rig"]["correlation"]
        await redis.execute_command(
            "XADD", "rig-proxy-response", "*", "rig-correlation", correlation,
            "rig-response-code", "201", "content-type", "application/json;charset=utf-8",
            "body", '{"job":"done"}')
        answer = await waiting
        assert answer.code == 201
        assert await answer.text() == '{"job":"done"}'
        assert answer.headers.getRawHeaders("content-type") == ["application/json;charset=utf-8"]
        timed_out = await gateway.request("POST", "/jobs", json=JOB)
        assert timed_out.code == 504
    finally:
        await redis.disconnect()


@pytest_twisted.ensureDeferred
async def test_two_clustered_nodes_share_the_group_and_deliver_each_entry_once(
        make_gateway, redis_server):
    from tests.support import two_node_cluster

    async def start(**overrides):
        return (await redis_gateway(make_gateway, redis_server, **overrides))[0]

    a, b = await two_node_cluster(start, "redis-cluster")
    source_a, source_b = a.service.redis, b.service.redis
    on_a, on_b = await a.ws(ALL), await b.ws(ALL)
    await on_a.welcome()
    await on_b.welcome()

    async def interest_both_ways():
        return (b.service.cluster.node_name in a.service.interest.owners_with("greeting")
                and a.service.cluster.node_name
                in b.service.interest.owners_with("greeting"))

    assert await interest_both_ways()  # confirmed: both already know
    redis = await redis_server.client()
    try:
        for number in range(20):
            await redis.execute_command("XADD", "rig", "*", "event",
                                        json.dumps(greeting("r", f"e{number}")))
    finally:
        await redis.disconnect()
    expected = [f"e{number}" for number in range(20)]
    assert sorted([(await on_a.next_event())["id"] for _ in expected]) == sorted(expected)
    assert sorted([(await on_b.next_event())["id"] for _ in expected]) == sorted(expected)
    assert source_a.counts["consumed"] + source_b.counts["consumed"] == 20  # once per group


@pytest_twisted.ensureDeferred
async def test_entries_abandoned_by_a_dead_consumer_are_claimed(make_gateway, redis_server):
    redis = await redis_server.client()
    try:  # another consumer of the group read an entry and died without acknowledging it
        await redis.execute_command("XGROUP", "CREATE", "orphans", "rig", "$", "MKSTREAM")
        await redis.execute_command("XADD", "orphans", "*", "event",
                                    json.dumps(greeting("r", "orphan")))
        read = await redis.execute_command("XREADGROUP", "GROUP", "rig", "dead-consumer",
                                           "COUNT", 10, "STREAMS", "orphans", ">")
        assert read, "the dead consumer holds the entry"
        gateway, source = await redis_gateway(make_gateway, redis_server,
                                              redis_source_streams=("orphans",))
        source._claim_idle = 0.3  # 30 s by default
        client = await gateway.ws(ALL)
        await client.welcome()
        assert (await client.next_event())["id"] == "orphan"
        assert source.counts["claimed"] == 1
        await eventually(nothing_pending(redis, "orphans"), what="claimed entry acknowledged")
    finally:
        await redis.disconnect()


@pytest_twisted.ensureDeferred
async def test_a_clustered_node_consumes_only_once_it_knows_its_peers(make_gateway,
                                                                       redis_server, dead_port):
    gateway, source = await redis_gateway(
        make_gateway, redis_server, node_cookie="redis-cluster",
        cluster_listen="tcp:0:interface=127.0.0.1", cluster_seeds=(f"127.0.0.1:{dead_port}",),
        cluster_options={"join_timeout": 1.0})
    redis = await redis_server.client()
    try:
        await redis.execute_command("XADD", "rig", "*", "event",
                                    json.dumps(greeting("r", "waits")))
        await deferLater(reactor, 0.5)
        assert not gateway.service.cluster.synced
        assert source.counts["consumed"] == 0  # left in the group for the nodes that are ready

        async def consumed():
            return source.counts["consumed"] == 1

        await eventually(consumed, what="consumed once synced")
        assert gateway.service.cluster.synced
    finally:
        await redis.disconnect()
