"""The live dashboard (issue 16): its sampler on a Clock, its routes end to end."""
import base64
import json

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from rig.dashboard.sampler import DashboardSampler, latency, quantile
from rig.dashboard.workers import merge_snapshots
from rig.httputil import JSON
from rig.hub import Hub
from rig.metrics.stats import ProxyStats, StreamStats
from rig.streams.source import parse_redis_url
from rig.testing import FakeConnection, eventually
from rig.web.examples import CONTENT_TYPES
from tests.support import greeting, subs_query, within
from tests.test_cluster import start_node
from tests.test_e2e_proxy import api, echo, endpoint

TOKEN = "operator-token-0123456789"


def tick(clock, seconds):
    """Advance one second at a time (a LoopingCall runs once per ``advance``)."""
    for _ in range(seconds):
        clock.advance(1.0)


def make_sampler(**kwargs):
    clock = Clock()
    hub = Hub(clock)
    proxy = ProxyStats()
    sampler = DashboardSampler(clock, hub, proxy, **kwargs)
    sampler.startService()
    return clock, hub, proxy, sampler


def test_rates_are_counter_differences_per_second():
    clock, hub, _, sampler = make_sampler()
    hub.stats.received["http"] += 6
    hub.stats.received["redis"] += 2
    hub.stats.deliveries += 12
    hub.stats.slow_clients["sse"] += 1
    tick(clock, 2)  # two samples: all of it in the first second
    first, second = sampler.samples
    assert (first["t"], second["t"]) == (1.0, 2.0)
    assert first["received"] == {"http": 6.0, "redis": 2.0, "nats": 0.0, "cluster": 0.0}
    assert (first["deliveries"], first["slow_clients"]["sse"]) == (12.0, 1.0)
    assert second["received"] == {"http": 0.0, "redis": 0.0, "nats": 0.0, "cluster": 0.0}
    assert second["deliveries"] == 0.0
    now = sampler.snapshot()["current"]
    assert now["received"] == {"http": 6, "redis": 2, "nats": 0, "cluster": 0}
    assert (now["deliveries"], now["slow_clients"]["sse"]) == (12, 1)


def test_connections_by_transport_follow_register_and_unregister():
    clock, hub, _, sampler = make_sampler()
    connections = [FakeConnection(hub, kind=kind) for kind in ("ws", "ws", "sse", "longpoll")]
    for connection in connections:
        hub.register(connection, [])
    hub.register(connections[0], [])  # registering again does not count twice
    clock.advance(1.0)
    assert sampler.samples[-1]["connections"] == {"ws": 2, "sse": 1, "longpoll": 1}
    hub.unregister(connections[0])
    hub.unregister(connections[0])  # nor does leaving twice
    hub.unregister(connections[2])
    clock.advance(1.0)
    assert sampler.samples[-1]["connections"] == {"ws": 1, "sse": 0, "longpoll": 1}
    assert sampler.snapshot()["current"]["connections"] == {"ws": 1, "sse": 0, "longpoll": 1}


def test_keeps_a_window_of_samples_and_answers_those_after_since():
    clock, _, _, sampler = make_sampler(window=3)
    clock.advance(1.0)
    clock.advance(1.0)
    assert [sample["t"] for sample in sampler.snapshot()["samples"]] == [1.0, 2.0]
    for _ in range(3):
        clock.advance(1.0)
    snapshot = sampler.snapshot()
    assert [sample["t"] for sample in snapshot["samples"]] == [3.0, 4.0, 5.0]
    assert [sample["t"] for sample in sampler.snapshot(since=4.0)["samples"]] == [5.0]
    assert sampler.snapshot(since=5.0)["samples"] == []
    assert (snapshot["started"], snapshot["time"], snapshot["window"]) == (0.0, 5.0, 3)


def test_proxy_rate_and_latency_by_target():
    clock, _, proxy, sampler = make_sampler()
    for seconds in (0.004, 0.004, 0.02, 0.3):
        proxy.record("GET", "/books", "http", "http", 200, seconds=seconds)
    proxy.record("GET", "/nowhere", "N/A", "N/A", "not_found")  # no target: no latency
    clock.advance(1.0)
    assert sampler.samples[-1]["proxy"] == {"http": {"rate": 4.0, "latency_ms": 82.0}}
    proxy.record("POST", "/jobs", "redis", "redis", 202, seconds=0.05)
    clock.advance(1.0)
    assert sampler.samples[-1]["proxy"] == {"http": {"rate": 0.0, "latency_ms": None},
                                            "redis": {"rate": 1.0, "latency_ms": 50.0}}
    rows = sampler.snapshot()["current"]["proxy"]
    assert [(row["target"], row["requests"], row["rate"]) for row in rows] == [
        ("http", 4, 0.0), ("redis", 1, 1.0)]
    assert rows[0]["latency_ms"] == {"mean": 82.0, "p50": 5.0, "p95": 450.0, "p99": 490.0}


def test_latency_figures_leave_the_last_minute_behind():
    clock, _, proxy, sampler = make_sampler()
    proxy.record("GET", "/books", "http", "http", 200, seconds=0.2)
    tick(clock, 62)
    row = sampler.snapshot()["current"]["proxy"][0]
    assert row["requests"] == 1
    assert row["latency_ms"] == {"mean": None, "p50": None, "p95": None, "p99": None}


def test_quantile_interpolates_inside_a_bucket_as_prometheus_does():
    bounds = (0.1, 0.2, 0.5)
    assert quantile([0, 0, 0, 0], 0.5, bounds) is None
    assert quantile([2, 0, 0, 0], 0.5, bounds) == pytest.approx(0.05)
    assert quantile([0, 4, 0, 0], 0.75, bounds) == pytest.approx(0.175)
    assert quantile([1, 0, 0, 1], 0.99, bounds) == 0.5  # beyond the last bound: that bound
    counts = [0] * 15  # the proxy's buckets; two requests between 0.1 and 0.25 s
    counts[6] = 2
    assert latency(counts, 0.3) == {"mean": 150.0, "p50": 175.0, "p95": 242.5, "p99": 248.5}


class FakeRedis:
    """What the sampler reads of a RedisSource: health, stream counters, the group's lag."""

    def __init__(self):
        self.healthy = True
        self.stream_stats = {"events": StreamStats()}
        self.lag = {"events": 7}
        self.asked = 0

    async def consumer_lag(self):
        self.asked += 1
        if self.lag is None:
            raise ConnectionError("not connected to Redis")
        return dict(self.lag)


def test_redis_lag_is_asked_now_and_then_and_unknown_when_redis_fails():
    """Once known, the lag is asked every *lag_every* samples; unknown, every sample."""
    redis = FakeRedis()
    clock, _, _, sampler = make_sampler(redis=redis, lag_every=3)
    assert redis.asked == 1  # at start
    redis.stream_stats["events"].consumed += 4
    redis.stream_stats["events"].failed += 1
    clock.advance(1.0)
    assert sampler.samples[-1]["redis_lag"] == 7
    assert sampler.snapshot()["current"]["redis"] == {
        "healthy": True, "lag": {"events": 7},
        "streams": {"events": {"consumed": 4, "failed": 1}}}
    tick(clock, 2)
    assert redis.asked == 2  # every third sample
    redis.lag, redis.healthy = None, False
    tick(clock, 3)
    assert redis.asked == 3
    assert sampler.snapshot()["current"]["redis"]["lag"] is None
    assert sampler.snapshot()["current"]["redis"]["healthy"] is False
    tick(clock, 1)
    assert sampler.samples[-1]["redis_lag"] is None
    assert redis.asked == 4  # unknown: asked every second until Redis answers
    redis.lag, redis.healthy = {"events": 2}, True
    tick(clock, 1)
    assert redis.asked == 5
    assert sampler.snapshot()["current"]["redis"]["lag"] == {"events": 2}


def test_a_lag_query_in_flight_is_not_repeated_and_stopping_cancels_it():
    redis = FakeRedis()
    hanging = Deferred()

    async def consumer_lag():
        redis.asked += 1
        return await hanging

    redis.consumer_lag = consumer_lag
    clock, _, _, sampler = make_sampler(redis=redis, lag_every=1)
    clock.advance(1.0)  # Redis gets two seconds to answer
    assert redis.asked == 1
    assert sampler.samples[-1]["redis_lag"] is None
    sampler.stopService()
    assert hanging.called  # cancelled
    assert clock.getDelayedCalls() == []


def test_stopping_stops_sampling():
    clock, _, _, sampler = make_sampler()
    clock.advance(1.0)
    sampler.stopService()
    assert clock.getDelayedCalls() == []
    assert len(sampler.samples) == 1


# -- end to end ----------------------------------------------------------------------


async def get(gateway, path, **kwargs):
    response = await gateway.request("GET", path, internal=True, **kwargs)
    return response, await within(response.content())


async def data(gateway, **kwargs):
    response, body = await get(gateway, "/dashboard/data", **kwargs)
    assert response.code == 200, body
    assert response.headers.getRawHeaders("content-type") == [JSON.decode()]
    return json.loads(body)


@pytest_twisted.ensureDeferred
async def test_the_page_and_its_assets_are_served(gateway):
    response, body = await get(gateway, "/dashboard")
    assert response.code == 200
    assert response.headers.getRawHeaders("content-type") == [CONTENT_TYPES[".html"].decode()]
    page = body.decode()
    assert 'src="dashboard/dashboard.js"' in page and 'href="dashboard/dashboard.css"' in page
    [policy] = response.headers.getRawHeaders("content-security-policy")
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    for name, kind in (("dashboard.js", ".js"), ("dashboard.css", ".css")):
        response, body = await get(gateway, f"/dashboard/{name}")
        assert response.code == 200 and body
        assert response.headers.getRawHeaders("content-type") == [CONTENT_TYPES[kind].decode()]
    for path in ("/dashboard/", "/dashboard/other.js", "/dashboard/../metrics"):
        response, _ = await get(gateway, path)
        assert response.code == 404, path


@pytest_twisted.ensureDeferred
async def test_the_numbers_move_with_traffic(make_gateway, stub_server):
    backend = stub_server(echo)
    gateway = make_gateway(proxy_config=(api(backend.port.getHost().port,
                                             endpoint("list", "GET", "/books")),))
    before = await data(gateway)
    assert before["current"]["connections"] == {"ws": 0, "sse": 0, "longpoll": 0}
    assert before["current"]["proxy"] == []
    assert (before["current"]["cluster"], before["current"]["redis"]) == (None, None)

    query = "?subscriptions=" + subs_query([{"eventType": "greeting"}])
    sse = await gateway.sse(query)
    await sse.welcome()
    ws = await gateway.ws(query)
    await ws.welcome()
    for number in range(3):
        await gateway.publish(greeting("alice", f"e{number}"))
    response = await gateway.request("GET", "/books")
    assert response.code == 200
    await within(response.content())

    async def moved():
        snapshot = await data(gateway)
        samples = snapshot["samples"]
        return (snapshot["current"]["connections"]["sse"] == 1
                and any(sample["received"]["http"] > 0 for sample in samples)
                and any(sample["deliveries"] > 0 for sample in samples)
                and any(sample["proxy"].get("http", {}).get("rate") for sample in samples)
                and snapshot)

    await eventually(reactor, moved, seconds=5.0, what="the dashboard's numbers to move")
    snapshot = await data(gateway)
    now = snapshot["current"]
    assert now["connections"] == {"ws": 1, "sse": 1, "longpoll": 0}
    assert now["received"]["http"] == 3 and now["deliveries"] == 6
    [row] = now["proxy"]
    assert (row["target"], row["requests"]) == ("http", 1)
    assert row["latency_ms"]["mean"] > 0
    last = snapshot["samples"][-1]["t"]
    later = await data(gateway, params={"since": str(last)})
    assert all(sample["t"] > last for sample in later["samples"])


@pytest_twisted.ensureDeferred
async def test_a_bad_since_is_400(gateway):
    for since in ("soon", "nan", "inf"):
        response, body = await get(gateway, "/dashboard/data", params={"since": since})
        assert response.code == 400, since
        assert "since" in json.loads(body)["errors"]["detail"]


@pytest_twisted.ensureDeferred
async def test_disabled_the_page_and_its_data_are_unknown_paths(make_gateway):
    gateway = make_gateway(dashboard_enabled=False)
    for path in ("/dashboard", "/dashboard/data", "/dashboard/dashboard.js"):
        response, body = await get(gateway, path)
        assert (response.code, json.loads(body)) == (404, {"errors": {"detail": "Not found"}})
    assert "dashboard" not in [service.name for service in gateway.service]


@pytest_twisted.ensureDeferred
async def test_with_api_auth_tokens_the_dashboard_needs_one(make_gateway):
    gateway = make_gateway(api_auth_tokens=(TOKEN,))
    for path in ("/dashboard", "/dashboard/data", "/dashboard/dashboard.js"):
        response, _ = await get(gateway, path)
        assert response.code == 401, path
        # a browser prompts for Basic (and ignores Bearer): any user, a token as password
        assert any(challenge.startswith("Basic ")
                   for challenge in response.headers.getRawHeaders("www-authenticate"))
        response, _ = await get(gateway, path, headers={"authorization": f"Bearer {TOKEN}"})
        assert response.code == 200, path
        login = base64.b64encode(f"operator:{TOKEN}".encode()).decode()
        response, _ = await get(gateway, path, headers={"authorization": f"Basic {login}"})
        assert response.code == 200, path


@pytest_twisted.ensureDeferred
async def test_cluster_members_and_redis_show_with_events_from_both(make_gateway,
                                                                    redis_server):
    first = start_node(make_gateway, redis_url=parse_redis_url(redis_server.url))
    await eventually(reactor, lambda: first.service.cluster.membership is not None)
    second = start_node(make_gateway, seeds=[first.service.cluster.links.address])
    client = await first.sse("?subscriptions=" + subs_query([{"eventType": "greeting"}]))
    await client.welcome()

    async def both_alive():
        members = (await data(first))["current"]["cluster"]["members"]
        return [member["state"] for member in members] == ["alive", "alive"]

    await eventually(reactor, both_alive, what="two alive members on the dashboard")
    await eventually(reactor, lambda: first.service.cluster.synced
                     and second.service.cluster.synced, what="synced")
    await second.publish(greeting("from-b", "b1"))
    redis = await redis_server.client()
    try:
        await redis.execute_command("XADD", "rig", "*", "event",
                                    json.dumps(greeting("from-redis", "r1")))
    finally:
        await redis.disconnect()

    async def counted():
        now = (await data(first))["current"]
        return (now["received"]["cluster"] == 1 and now["received"]["redis"] == 1
                and now["redis"]["lag"] is not None)

    await eventually(reactor, counted, what="the cluster and Redis events counted")
    snapshot = await data(first)
    cluster, redis_now = snapshot["current"]["cluster"], snapshot["current"]["redis"]
    assert cluster["node"] == first.hub.codec.node and cluster["synced"] is True
    assert sorted(member["self"] for member in cluster["members"]) == [False, True]
    assert redis_now["healthy"] is True
    assert redis_now["lag"]["rig"] == 0
    assert redis_now["streams"]["rig"] == {"consumed": 1, "failed": 0}


# -- WORKERS=N: one page for every worker of the machine ---------------------------


def two_workers():
    """Two samplers whose loops tick 0.4 s apart, as two workers' loops do."""
    late = Clock()
    late.advance(0.4)
    hub = Hub(late)
    proxy = ProxyStats()
    sampler = DashboardSampler(late, hub, proxy)
    sampler.startService()
    return make_sampler(), (late, hub, proxy, sampler)


def test_workers_snapshots_sum_up_and_samples_merge_by_second():
    (clock_a, hub_a, proxy_a, a), (clock_b, hub_b, proxy_b, b) = two_workers()
    hub_a.register(FakeConnection(hub_a, kind="ws"), [])
    hub_b.register(FakeConnection(hub_b, kind="ws"), [])
    hub_b.register(FakeConnection(hub_b, kind="sse"), [])
    hub_a.stats.received["http"] += 3
    hub_b.stats.received["http"] += 2
    proxy_a.record("GET", "/books", "http", "http", 200, seconds=0.004)
    proxy_b.record("GET", "/books", "http", "http", 200, seconds=0.3)
    for _ in range(4):
        clock_a.advance(1.0)
        clock_b.advance(1.0)
    parts = [a.snapshot(buckets=True), b.snapshot(buckets=True)]
    assert [s["t"] for s in parts[0]["samples"]] == [1.0, 2.0, 3.0, 4.0]
    assert [s["t"] for s in parts[1]["samples"]] == [1.4, 2.4, 3.4, 4.4]
    merged = merge_snapshots(parts, None, 2)
    assert merged["workers"] == {"answered": 2, "of": 2}
    assert merged["time"] == 4.0  # the earliest answer
    now = merged["current"]
    assert now["connections"] == {"ws": 2, "sse": 1, "longpoll": 0}
    assert now["received"]["http"] == 5
    [row] = now["proxy"]
    assert (row["target"], row["requests"]) == ("http", 2)
    assert row["latency_ms"] == {"mean": 152.0, "p50": 5.0, "p95": 475.0, "p99": 495.0}
    assert "buckets" not in row
    # whole seconds, up to the last one every worker has sampled (4.0 - 1.5)
    assert [s["t"] for s in merged["samples"]] == [1, 2]
    first = merged["samples"][0]
    assert first["received"]["http"] == 5.0 and first["connections"]["ws"] == 2
    assert first["proxy"]["http"] == {"rate": 2.0, "latency_ms": 152.0}
    assert [s["t"] for s in merge_snapshots(parts, 1, 2)["samples"]] == [2]


def test_a_worker_that_does_not_answer_is_left_out_and_said_so():
    (_, hub_a, _, a), _ = two_workers()
    hub_a.register(FakeConnection(hub_a, kind="ws"), [])
    merged = merge_snapshots([a.snapshot(buckets=True)], None, 3)
    assert merged["workers"] == {"answered": 1, "of": 3}
    assert merged["current"]["connections"]["ws"] == 1
