"""Tracing end to end (issue 16): real span receivers, a real backend, real clients.

The gateway exports to an OTLP/HTTP receiver and a Zipkin receiver started here
(tests/collectors.py decodes what arrives); the backend records the headers it
gets. Timers run fast (a 50 ms export delay) so spans arrive within the test.
"""
import json

import pytest_twisted
import treq
from twisted.internet import reactor

from rig.streams.source import parse_redis_url
from rig.testing import eventually
from rig.tracing.context import parse_traceparent
from tests.collectors import OTLPReceiver, ZipkinReceiver
from tests.support import greeting, subs_query, within
from tests.test_e2e_proxy import api, echo, endpoint

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
TRACESTATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
FAST_EXPORT = {"otel_bsp_schedule_delay": 0.05}


@pytest_twisted.async_yield_fixture
async def receivers():
    otlp, zipkin = OTLPReceiver(), ZipkinReceiver()
    yield otlp, zipkin
    await otlp.stop()
    await zipkin.stop()


def books(backend):
    return api(backend.port.getHost().port, endpoint("get", "GET", "/books/(.+)"))


@pytest_twisted.ensureDeferred
async def test_a_proxied_requests_span_arrives_with_the_clients_trace_and_the_backend_is_its_child(
        make_gateway, stub_server, receivers):
    otlp, zipkin = receivers
    backend = stub_server(echo)
    gateway = make_gateway(proxy_config=(books(backend),),
                           otel_exporter_otlp_endpoint=otlp.base_url,
                           zipkin_addr=zipkin.base_url, otel_service_name="edge", **FAST_EXPORT)
    response = await gateway.request("GET", "/books/1", headers={
        "traceparent": TRACEPARENT, "tracestate": TRACESTATE})
    assert response.code == 200
    sent = (await within(response.json()))["headers"]
    trace_id, gateway_span, flags = parse_traceparent(sent["traceparent"])
    assert (trace_id, flags) == (TRACE_ID, "01")
    assert gateway_span != CLIENT_SPAN
    assert sent["tracestate"] == TRACESTATE
    for receiver in (otlp, zipkin):
        span, = await receiver.wait_for(lambda s: s.trace_id == TRACE_ID)
        assert (span.span_id, span.parent_id) == (gateway_span, CLIENT_SPAN)
        assert (span.name, span.kind, span.service) == ("GET /books/(.+)", "server", "edge")
        assert str(span.attributes["http.response.status_code"]) == "200"
        assert span.attributes["rig.api.id"] == "books"
        assert span.attributes["url.path"] == "/books/1"
        assert 0 < span.start_ns <= span.end_ns


@pytest_twisted.ensureDeferred
async def test_without_an_exporter_the_backend_still_gets_a_child_or_a_new_trace(
        make_gateway, stub_server):
    backend = stub_server(echo)
    gateway = make_gateway(proxy_config=(books(backend),))
    assert not gateway.service.tracing.exporting

    async def sent(headers):
        response = await gateway.request("GET", "/books/1", headers=headers)
        return (await within(response.json()))["headers"]

    child = await sent({"traceparent": TRACEPARENT, "tracestate": TRACESTATE})
    trace_id, span_id, flags = parse_traceparent(child["traceparent"])
    assert (trace_id, flags) == (TRACE_ID, "01") and span_id != CLIENT_SPAN
    assert child["tracestate"] == TRACESTATE
    unsampled = await sent({"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-00"})
    assert parse_traceparent(unsampled["traceparent"])[2] == "00"  # flags kept
    fresh = [await sent({}) for _ in range(2)]
    for invalid in (f"ff-{TRACE_ID}-{CLIENT_SPAN}-01", f"00-{'0' * 32}-{CLIENT_SPAN}-01",
                    f"00-{TRACE_ID.upper()}-{CLIENT_SPAN}-01", "garbage"):
        fresh.append(await sent({"traceparent": invalid, "tracestate": TRACESTATE}))
    trace_ids = set()
    for headers in fresh:
        trace_id, _span_id, flags = parse_traceparent(headers["traceparent"])
        assert trace_id != TRACE_ID and flags == "01"
        assert "tracestate" not in headers  # without a valid parent it means nothing
        trace_ids.add(trace_id)
    assert len(trace_ids) == len(fresh)


@pytest_twisted.ensureDeferred
async def test_an_event_keeps_its_trace_attributes_on_the_way_to_subscribers(make_gateway):
    gateway = make_gateway()
    stream = await gateway.sse("?subscriptions=" + subs_query([{"eventType": "greeting"}]))
    await stream.welcome()
    await gateway.publish(greeting("a", "s1", traceparent=TRACEPARENT, tracestate=TRACESTATE))
    structured = await stream.next_event()
    assert (structured["traceparent"], structured["tracestate"]) == (TRACEPARENT, TRACESTATE)
    await gateway.publish(b'{"name":"b"}', headers={
        "content-type": "application/json", "ce-specversion": "1.0", "ce-type": "greeting",
        "ce-source": "s", "ce-id": "b1", "ce-traceparent": TRACEPARENT,
        "ce-tracestate": "7=1"})  # would be the number 7... if it were not a trace attribute
    binary = await stream.next_event()
    assert (binary["id"], binary["traceparent"], binary["tracestate"]) == (
        "b1", TRACEPARENT, "7=1")


@pytest_twisted.ensureDeferred
async def test_external_checks_get_a_child_of_the_request_and_export_a_client_span(
        make_gateway, stub_server, receivers):
    otlp, _zipkin = receivers
    checker = stub_server(lambda info: (200, b""))
    gateway = make_gateway(subscription_check=checker.url, submission_check=checker.url,
                           otel_exporter_otlp_endpoint=otlp.base_url, **FAST_EXPORT)
    stream = await gateway.sse("?subscriptions=" + subs_query([{"eventType": "greeting"}]),
                               headers=[("traceparent", TRACEPARENT)])
    await stream.welcome()
    await gateway.publish(greeting("x"), headers={"content-type": "application/json",
                                                  "traceparent": TRACEPARENT})
    assert len(checker.requests) == 2
    span_ids = set()
    for request in checker.requests:
        trace_id, span_id, _flags = parse_traceparent(request["headers"]["traceparent"])
        assert trace_id == TRACE_ID and span_id != CLIENT_SPAN
        span_ids.add(span_id)
    spans = await otlp.wait_for(lambda s: s.kind == "client")
    await eventually(reactor, lambda: len(otlp.spans) >= 2, what="both check spans")
    assert {s.name for s in otlp.spans} == {"subscription check", "submission check"}
    assert {s.span_id for s in otlp.spans} == span_ids
    assert all(s.parent_id == CLIENT_SPAN for s in spans)


@pytest_twisted.ensureDeferred
async def test_redis_target_events_carry_the_gateways_span_and_consumed_entries_open_a_child(
        make_gateway, redis_server, receivers):
    otlp, _zipkin = receivers
    definition = {"id": "jobs", "name": "jobs", "proxy": {"target_url": "unused", "port": 1},
                  "version_data": {"default": {"endpoints": [
                      {"id": "submit", "method": "POST", "path_regex": "/jobs",
                       "target": "redis", "topic": "rig"}]}}}
    gateway = make_gateway(redis_url=parse_redis_url(redis_server.url),
                           proxy_config=(definition,),
                           otel_exporter_otlp_endpoint=otlp.base_url, **FAST_EXPORT)
    await eventually(reactor, lambda: gateway.service.redis.healthy, what="Redis consumer")
    stream = await gateway.sse("?subscriptions=" + subs_query([{"eventType": "greeting"}]))
    await stream.welcome()
    job = greeting("via redis", "r1", traceparent=f"00-{'1' * 32}-{'2' * 16}-01",
                   tracestate="old=1")
    response = await gateway.request("POST", "/jobs", json=job,
                                     headers={"traceparent": TRACEPARENT})
    assert response.code == 202
    delivered = await stream.next_event()  # consumed back from the "rig" stream
    trace_id, gateway_span, _flags = parse_traceparent(delivered["traceparent"])
    assert trace_id == TRACE_ID  # the request's trace replaced the body's
    assert "tracestate" not in delivered
    proxied, = await otlp.wait_for(lambda s: s.kind == "server")
    assert (proxied.span_id, proxied.parent_id) == (gateway_span, CLIENT_SPAN)
    consumed, = await otlp.wait_for(lambda s: s.kind == "consumer")
    assert (consumed.trace_id, consumed.parent_id) == (TRACE_ID, gateway_span)
    assert consumed.name == "rig process"
    assert consumed.attributes["messaging.message.id"] == "r1"


@pytest_twisted.ensureDeferred
async def test_an_exporter_that_is_down_costs_a_log_line_never_a_request(
        make_gateway, stub_server, dead_port, log_events):
    backend = stub_server(echo)
    secret = "s3cr3t-api-key"
    gateway = make_gateway(proxy_config=(books(backend),),
                           otel_exporter_otlp_endpoint=f"http://user:pw@127.0.0.1:{dead_port}",
                           otel_exporter_otlp_headers=(("api-key", secret),),
                           otel_exporter_otlp_timeout=1.0, **FAST_EXPORT)
    for _ in range(5):
        response = await gateway.request("GET", "/books/1")
        assert response.code == 200
        await within(response.text())
    processor, = gateway.service.getServiceNamed("tracing").processors
    await eventually(reactor, lambda: processor.counts["failed"] >= 5, what="failed exports")
    texts = [str(event.get("log_format", "")).format(**event) for event in log_events
             if event.get("log_namespace", "").startswith("rig.")]
    failures = [text for text in texts if "Span export" in text]
    assert len(failures) == 1, failures  # one line per outage, not one per batch
    assert f"http://127.0.0.1:{dead_port}/v1/traces" in failures[0]
    assert not any(secret in text or "pw@" in text for text in texts)
    response = await gateway.request("GET", "/metrics", internal=True)
    metrics = await within(response.text())
    assert (f'rig_tracing_spans_total{{exporter="http://127.0.0.1:{dead_port}/v1/traces",'
            'outcome="failed"} 5.0') in metrics


@pytest_twisted.ensureDeferred
async def test_a_collector_that_refuses_then_recovers_gets_later_spans_gzipped_with_headers(
        make_gateway, stub_server, receivers, log_events):
    otlp, _zipkin = receivers
    otlp.status = 503
    backend = stub_server(echo)
    gateway = make_gateway(proxy_config=(books(backend),),
                           otel_exporter_otlp_traces_endpoint=otlp.base_url + "/v1/traces",
                           otel_exporter_otlp_headers=(("x-tenant", "t1"),),
                           otel_exporter_otlp_compression="gzip", **FAST_EXPORT)
    await within(gateway.request("GET", "/books/lost"))
    await eventually(reactor, lambda: otlp.requests, what="a refused export")
    otlp.status = 200
    await within(gateway.request("GET", "/books/kept"))
    await otlp.wait_for(lambda s: s.attributes.get("url.path") == "/books/kept")
    assert not [s for s in otlp.spans if s.attributes.get("url.path") == "/books/lost"]
    _path, headers = otlp.requests[-1]
    assert (headers["content-encoding"], headers["x-tenant"]) == ("gzip", "t1")
    assert headers["content-type"] == "application/x-protobuf"
    texts = [str(event.get("log_format", "")).format(**event) for event in log_events]
    assert sum("Span export" in text and "failed" in text for text in texts) == 1
    assert sum("works again" in text for text in texts) == 1


@pytest_twisted.ensureDeferred
async def test_stopping_the_gateway_sends_the_spans_still_queued(make_gateway, stub_server,
                                                                receivers):
    otlp, _zipkin = receivers
    backend = stub_server(echo)
    gateway = make_gateway(proxy_config=(books(backend),),
                           otel_exporter_otlp_endpoint=otlp.base_url,
                           otel_bsp_schedule_delay=3600.0)
    await within(gateway.request("GET", "/books/last"))
    assert otlp.spans == []
    await gateway.service.stopService()
    assert [s.attributes["url.path"] for s in otlp.spans] == ["/books/last"]


@pytest_twisted.ensureDeferred
async def test_a_twistd_process_exports_as_users_configure_it(
        processes, stub_server, receivers, tmp_path):
    otlp, zipkin = receivers
    backend = stub_server(echo)
    node = processes.node("traced", str(tmp_path), "cookie",
                          ZIPKIN_ADDR=zipkin.base_url, ZIPKIN_SERVICE_NAME="rig-vm",
                          OTEL_EXPORTER_OTLP_ENDPOINT=otlp.base_url,
                          OTEL_BSP_SCHEDULE_DELAY="50",
                          PROXY_CONFIG_FILE=json.dumps([books(backend)]))
    await node.start(processes.pool)
    response = await within(treq.get(node.url("/books/1"), headers={"traceparent": TRACEPARENT},
                                     pool=processes.pool))
    sent = (await within(response.json()))["headers"]
    span, = await zipkin.wait_for(lambda s: s.trace_id == TRACE_ID)
    assert parse_traceparent(sent["traceparent"])[1] == span.span_id
    assert (span.parent_id, span.service) == (CLIENT_SPAN, "rig-vm")
    span, = await otlp.wait_for(lambda s: s.trace_id == TRACE_ID)
    assert (span.parent_id, span.service) == (CLIENT_SPAN, "rig")
