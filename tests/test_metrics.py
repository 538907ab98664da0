"""Prometheus metrics on GET :4010/metrics, read after real traffic (spec Part B 10.1)."""
import json

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor

from rig.metrics import stats as stats_module
from rig.metrics.registry import build_metrics
from rig.metrics.stats import Buckets, ProxyStats
from rig.settings import Settings, SettingsError
from tests.support import greeting, subs_query, within
from tests.test_cluster import eventually, start_node
from tests.test_e2e_backpressure import bulk
from tests.test_redis_source import JOB, redis_api, redis_gateway

GREETINGS = "?subscriptions=" + subs_query([{"eventType": "greeting"}])
BULK = "?subscriptions=" + subs_query([{"eventType": "bulk"}])
LP = "/_rig/v1/connection/longpolling"


class Scrape:
    """One parsed exposition: sample values by name and labels."""

    def __init__(self, text):
        self.text = text
        self.families = {family.name: family for family in text_string_to_metric_families(text)}
        self.samples = [sample for family in self.families.values() for sample in family.samples]

    def value(self, sample_name, **labels):
        found = [sample.value for sample in self.samples
                 if sample.name == sample_name and sample.labels == labels]
        assert len(found) == 1, (sample_name, labels, found)
        return found[0]


async def scrape(gateway, headers=None):
    response = await gateway.request("GET", "/metrics", internal=True, headers=headers)
    assert response.code == 200
    body = await within(response.text())
    return response, body


async def metrics(gateway):
    response, body = await scrape(gateway)
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/plain")
    return Scrape(body)


def api(api_id, port, path):
    return {"id": api_id, "name": api_id, "proxy": {"target_url": "127.0.0.1", "port": port},
            "version_data": {"default": {"endpoints": [
                {"id": api_id, "method": "GET", "path_regex": path}]}}}


@pytest_twisted.ensureDeferred
async def test_metrics_follow_real_traffic(make_gateway, stub_server):
    backend = stub_server(lambda info: (200, b"fine"))
    gateway = make_gateway(proxy_config=(
        api("books", backend.port.getHost().port, "/books"),
        api("dead", 9, "/dead"),  # discard port: connection refused
    ))
    ws = await gateway.ws(GREETINGS)
    sse = await gateway.sse(GREETINGS)
    await ws.welcome()
    await sse.welcome()
    for number in range(3):
        await gateway.publish(greeting("alice", f"e{number}"))
    for client in (ws, sse):
        assert [(await client.next_event())["id"] for _ in range(3)] == ["e0", "e1", "e2"]
    response = await gateway.request("GET", "/books")
    assert (response.code, await within(response.text())) == (200, "fine")
    response = await gateway.request("GET", "/dead")
    assert response.code == 502
    await within(response.text())
    response = await gateway.request("GET", "/random/route")
    assert response.code == 404
    await within(response.text())
    response = await gateway.request("POST", "/v3/session-blacklist", internal=True,
                                     json={"sessionId": "fraud", "validityInSeconds": 60})
    assert response.code == 201

    scraped = await metrics(gateway)
    assert scraped.value("rig_connections", transport="ws") == 1
    assert scraped.value("rig_connections", transport="sse") == 1
    assert scraped.value("rig_connections", transport="longpoll") == 0
    assert scraped.value("rig_subscriptions_total") == 2
    assert scraped.value("rig_events_received_total", source="http") == 3
    assert scraped.value("rig_events_received_total", source="redis") == 0
    assert scraped.value("rig_deliveries_total") == 6  # 3 events to 2 connections
    assert scraped.value("rig_slow_clients_total", transport="ws") == 0
    assert scraped.value("rig_queued_bytes", transport="ws") >= 0

    def proxied(path, target, response_from, status):
        return scraped.value("rig_proxy_requests_total", method="GET", path=path,
                             target=target, response_from=response_from, status=status)

    assert proxied("/books", "http", "http", "ok") == 1
    assert proxied("/dead", "http", "http", "unreachable") == 1
    assert proxied("/random/route", "N/A", "N/A", "not_found") == 1
    assert scraped.value("rig_proxy_request_duration_seconds_count", target="http") == 2
    assert scraped.value("rig_proxy_request_duration_seconds_bucket", target="http",
                         le="+Inf") == 2
    assert scraped.value("rig_distributed_set_items_current", name="SessionBlacklist") == 1
    assert scraped.value("rig_distributed_set_items_total", name="SessionBlacklist") == 1
    assert scraped.families["rig_subscriptions_total"].type == "gauge"
    assert scraped.families["rig_proxy_requests"].type == "counter"
    for name in ("process_cpu_seconds", "process_resident_memory_bytes", "python_info",
                 "python_gc_objects_collected"):
        assert name in scraped.families, name
    assert "rig_cluster_members" not in scraped.families  # no cluster configured
    assert "rig_consumed_events" not in scraped.families  # no Redis configured

    ws.disconnect()
    await eventually(lambda: len(gateway.hub.connections) == 1, message="ws gone")
    scraped = await metrics(gateway)
    assert scraped.value("rig_connections", transport="ws") == 0
    assert scraped.value("rig_subscriptions_total") == 1
    assert scraped.value("rig_deliveries_total") == 6


@pytest_twisted.ensureDeferred
async def test_proxy_timeouts_have_their_own_status(make_gateway, stub_server):
    hanging = stub_server(lambda info: None)
    accepting = stub_server(lambda info: (202, b""))  # then never answers on /v3/responses
    waiting = api("async", accepting.port.getHost().port, "/async")
    waiting["version_data"]["default"]["endpoints"][0]["response_from"] = "http_async"
    gateway = make_gateway(proxy_config=(api("slow", hanging.port.getHost().port, "/slow"),
                                         waiting),
                           proxy_recv_timeout=0.2, proxy_http_async_response_timeout=0.2)
    for path in ("/slow", "/async"):
        response = await gateway.request("GET", path)
        assert response.code == 504
        await within(response.text())
    scraped = await metrics(gateway)
    assert scraped.value("rig_proxy_requests_total", method="GET", path="/slow", target="http",
                         response_from="http", status="request_timeout") == 1
    assert scraped.value("rig_proxy_requests_total", method="GET", path="/async",
                         target="http", response_from="http_async",
                         status="response_timeout") == 1
    assert scraped.value("rig_proxy_request_duration_seconds_sum", target="http") >= 0.4


@pytest_twisted.ensureDeferred
async def test_openmetrics_when_the_scraper_asks(gateway):
    response, body = await scrape(gateway, headers={
        "accept": "application/openmetrics-text; version=1.0.0; charset=utf-8"})
    assert response.headers.getRawHeaders("content-type")[0].startswith(
        "application/openmetrics-text")
    assert body.endswith("# EOF\n")
    assert "rig_subscriptions_total 0.0" in body
    response = await gateway.request("HEAD", "/metrics", internal=True)
    assert response.code == 200


@pytest_twisted.ensureDeferred
async def test_disabled_metrics_answer_an_empty_exposition(make_gateway):
    gateway = make_gateway(prometheus_metrics_enabled=False)
    await gateway.publish(greeting("alice"))
    response, body = await scrape(gateway)
    assert body == ""
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/plain")


def test_the_setting_and_an_empty_registry_when_disabled():
    assert Settings().prometheus_metrics_enabled is True
    for text, expected in (("false", False), ("FALSE", False), ("0", False), ("no", False),
                           ("true", True), ("1", True), ("Yes", True)):
        settings = Settings.from_mapping({}, {"PROMETHEUS_METRICS_ENABLED": text})
        assert settings.prometheus_metrics_enabled is expected
    assert Settings.from_mapping({"prometheus_metrics_enabled": False}, {}) \
        .prometheus_metrics_enabled is False
    for mapping, environ in (({}, {"PROMETHEUS_METRICS_ENABLED": "maybe"}),
                             ({"prometheus_metrics_enabled": "false"}, {})):
        with pytest.raises(SettingsError, match="PROMETHEUS_METRICS_ENABLED: must be true"):
            Settings.from_mapping(mapping, environ)
    metrics = build_metrics(reactor, enabled=False, hub=None, proxy_stats=ProxyStats())
    assert list(metrics.registry.collect()) == []


def test_histogram_buckets_are_less_or_equal_and_cumulative():
    buckets = Buckets((1, 5))
    for value in (0.5, 1, 3, 5, 7):
        buckets.observe(value)
    assert buckets.cumulative() == [("1.0", 2), ("5.0", 4), ("+Inf", 5)]
    assert (buckets.count, buckets.sum) == (5, 16.5)


def test_proxy_paths_beyond_the_series_limit_share_one_label(monkeypatch):
    monkeypatch.setattr(stats_module, "MAX_PROXY_SERIES", 2)
    stats = ProxyStats()
    for path in ("/a", "/b", "/c", "/d", "/a"):
        stats.record("GET", path, "N/A", "N/A", "not_found")
    assert stats.counts == {
        ("GET", "/a", "N/A", "N/A", "not_found"): 2,
        ("GET", "/b", "N/A", "N/A", "not_found"): 1,
        ("GET", "(other)", "N/A", "N/A", "not_found"): 2,
    }


@pytest_twisted.ensureDeferred
async def test_slow_clients_are_counted_and_logged_with_the_reason(make_gateway, log_events):
    gateway = make_gateway(send_queue_limit=200_000)
    slow_sse = await gateway.sse(BULK)
    slow_ws = await gateway.ws(BULK)
    reader = await gateway.ws(BULK)
    for client in (slow_sse, slow_ws, reader):
        await client.welcome()
    slow_ids = {connection.local_id: connection.kind
                for connection in gateway.hub.connections.values()}
    slow_sse.transport.pauseProducing()
    slow_ws.protocol.transport.pauseProducing()
    for number in range(200):
        await gateway.publish(bulk(number))
        assert (await reader.next_event())["id"] == str(number)
        if len(gateway.hub.connections) == 1:
            break
    await eventually(lambda: len(gateway.hub.connections) == 1, message="slow clients dropped")
    # read again at once: the gateway waits 1 s (autobahn's closeHandshakeTimeout) for the
    # client's answer to its close frame before it drops the connection, frame and all
    slow_ws.protocol.transport.resumeProducing()
    slow_sse.transport.resumeProducing()

    scraped = await metrics(gateway)
    assert scraped.value("rig_slow_clients_total", transport="ws") == 1
    assert scraped.value("rig_slow_clients_total", transport="sse") == 1
    assert scraped.value("rig_slow_clients_total", transport="longpoll") == 0
    assert scraped.value("rig_connections", transport="ws") == 1
    assert scraped.value("rig_connections", transport="sse") == 0
    slow = [event for event in log_events if event.get("reason") == "too slow"]
    assert sorted(event["transport"] for event in slow) == ["sse", "ws"]  # once each
    for event in slow:
        assert slow_ids[event["local_id"]] == event["transport"]
        assert event["limit"] == 200_000 and event["queued"] > 200_000
        assert event["log_level"].name == "info"
    outcomes = {event["transport"]: event["outcome"] for event in slow}
    assert outcomes == {"ws": "closed 1008 Too slow.", "sse": "stream ended"}
    assert await within(slow_ws.closed, 10) == (1008, "Too slow.")
    await within(slow_sse.closed, 10)


@pytest_twisted.ensureDeferred
async def test_a_long_poll_session_losing_unread_events_counts_as_slow(make_gateway,
                                                                        log_events):
    gateway = make_gateway(longpoll_buffer_size=3)

    async def poll(cookies):
        response = await gateway.request("GET", LP, cookies=cookies)
        body = await within(response.json())
        jar = response.cookies()
        return body, {name: jar[name] for name in ("connection_token", "last_event_id")}

    async def session(name):
        query = "?subscriptions=" + subs_query([{"eventType": "greeting",
                                                 "oneOf": [{"name": name}]}])
        response = await gateway.request("GET", LP + query)
        await within(response.json())
        jar = response.cookies()
        body, cookies = await poll({name: jar[name]
                                    for name in ("connection_token", "last_event_id")})
        assert len(body["events"]) == 2  # the welcome events
        return cookies

    keeping_up = await session("k")
    for number in range(4):  # never more than the buffer between two polls
        await gateway.publish(greeting("k", f"k{number}"))
        await gateway.publish(greeting("k", f"k{number}b"))
        body, keeping_up = await poll(keeping_up)
        assert [event["id"] for event in body["events"]] == [f"k{number}", f"k{number}b"]
    scraped = await metrics(gateway)
    assert scraped.value("rig_slow_clients_total", transport="longpoll") == 0

    lagging = await session("l")
    for number in range(6):
        await gateway.publish(greeting("l", f"l{number}"))
    body, lagging = await poll(lagging)
    assert [event["id"] for event in body["events"]] == ["l3", "l4", "l5"]
    scraped = await metrics(gateway)
    assert scraped.value("rig_slow_clients_total", transport="longpoll") == 1
    assert scraped.value("rig_connections", transport="longpoll") == 2
    (event,) = [event for event in log_events if event.get("reason") == "too slow"]
    assert (event["transport"], event["queued"], event["limit"], event["unit"]) == (
        "longpoll", 3, 3, "events")


@pytest_twisted.ensureDeferred
async def test_redis_consumption_and_consumer_lag(make_gateway, redis_server):
    gateway, source = await redis_gateway(make_gateway, redis_server,
                                          proxy_config=(redis_api("jobs"),))
    client = await gateway.ws(GREETINGS)
    await client.welcome()
    redis = await redis_server.client()
    try:
        for entry in (json.dumps(greeting("r", "first")), "{not json",
                      json.dumps(greeting("r", "second"))):
            await redis.execute_command("XADD", "rig", "*", "event", entry)
        assert [(await client.next_event())["id"] for _ in range(2)] == ["first", "second"]
        scraped = await metrics(gateway)
        labels = {"source": "redis", "topic": "rig"}
        assert scraped.value("rig_consumed_events_total", **labels) == 3
        assert scraped.value("rig_consumed_events_failed_total", **labels) == 1
        assert scraped.value(
            "rig_consumed_event_processing_duration_milliseconds_count", **labels) == 3
        assert "rig-proxy-response" not in {
            sample.labels.get("topic") for sample in scraped.samples}
        assert scraped.value("rig_events_received_total", source="redis") == 2
        assert scraped.value("rig_deliveries_total") == 2
        assert scraped.value("rig_redis_consumer_lag", stream="rig") == 0
        assert scraped.value("rig_redis_consumer_lag", stream="rig-proxy-response") == 0

        # the group says it read 1 of the 3 entries added but has nothing left to
        # deliver: Redis then reports a lag of 1 without the consumer seeing anything
        await redis.execute_command("XGROUP", "SETID", "rig", "rig", "$", "ENTRIESREAD", "1")
        scraped = await metrics(gateway)
        assert scraped.value("rig_redis_consumer_lag", stream="rig") == 2

        for body, code in ((b"{not json", 400), (json.dumps(JOB).encode(), 202)):
            response = await gateway.request("POST", "/jobs", data=body,
                                             headers={"content-type": "application/json"})
            assert response.code == code
            await within(response.text())
        scraped = await metrics(gateway)
        for status in ("bad_request", "ok"):
            assert scraped.value("rig_proxy_requests_total", method="POST", path="/jobs",
                                 target="redis", response_from="http", status=status) == 1
        assert scraped.value("rig_proxy_request_duration_seconds_count", target="redis") == 2
    finally:
        await redis.disconnect()
    redis_server.stop()  # a Redis that is gone leaves the lag out; the scrape still answers
    await eventually(lambda: not source.healthy, message="Redis seen as down")
    scraped = await metrics(gateway)
    assert "rig_redis_consumer_lag" not in {sample.name for sample in scraped.samples}
    assert scraped.value("rig_consumed_events_total", source="redis", topic="rig") == 3


@pytest_twisted.ensureDeferred
async def test_cluster_members_by_state_and_events_from_peers(make_gateway):
    a = start_node(make_gateway)
    await eventually(lambda: a.service.cluster.membership is not None, message="a listening")
    b = start_node(make_gateway, seeds=[a.service.cluster.links.address])

    def alive_on_both():
        return all(node.service.cluster.membership is not None
                   and [m.state for m in node.service.cluster.members()] == ["alive"] * 2
                   for node in (a, b))

    await eventually(alive_on_both, message="two alive members")
    scraped = await metrics(a)
    assert scraped.value("rig_cluster_members", state="alive") == 2
    assert scraped.value("rig_cluster_members", state="suspect") == 0

    client = await a.ws(GREETINGS)
    await client.welcome()
    await eventually(lambda: a.service.cluster.node_name
                     in b.service.interest.owners_with("greeting"),
                     message="interest known on b")
    await b.publish(greeting("x", "from-b"))
    assert (await client.next_event())["id"] == "from-b"
    scraped = await metrics(a)
    assert scraped.value("rig_events_received_total", source="cluster") == 1
    assert scraped.value("rig_events_received_total", source="http") == 0
    assert scraped.value("rig_deliveries_total") == 1

    b_name = b.service.cluster.node_name
    await b.stop()
    await eventually(lambda: a.service.cluster.membership.member(b_name).state == "left",
                     message="b seen as left")
    scraped = await metrics(a)
    assert scraped.value("rig_cluster_members", state="alive") == 1
    assert scraped.value("rig_cluster_members", state="left") == 1


def test_every_sample_of_every_worker_is_labelled_with_its_worker():
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.parser import text_string_to_metric_families

    from rig.metrics.workers import label_workers

    def families(connections, deliveries):
        gauge = GaugeMetricFamily("rig_connections", "c", labels=["transport"])
        gauge.add_metric(["ws"], connections)
        return [gauge, CounterMetricFamily("rig_deliveries", "d", value=deliveries)]

    # a sibling's families come back through the text format
    registry = CollectorRegistry()
    registry.register(type("C", (), {"collect": lambda self: families(3, 7)})())
    sibling = list(text_string_to_metric_families(generate_latest(registry).decode()))
    merged = {family.name: family for family in label_workers([(0, families(2, 5)),
                                                              (1, sibling)])}
    assert [(s.labels, s.value) for s in merged["rig_connections"].samples] == [
        ({"transport": "ws", "worker": "0"}, 2), ({"transport": "ws", "worker": "1"}, 3)]
    assert [(s.name, s.labels, s.value) for s in merged["rig_deliveries"].samples] == [
        ("rig_deliveries_total", {"worker": "0"}, 5),
        ("rig_deliveries_total", {"worker": "1"}, 7)]
