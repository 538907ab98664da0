"""Event submission end to end on both ports (spec Part B 4.2, scenarios 24-33)."""
import json

import pytest_twisted

from tests.support import greeting, subs_query, within

ALL_GREETINGS = "?subscriptions=" + subs_query([{"eventType": "greeting"}])


@pytest_twisted.ensureDeferred
async def test_structured_events_of_every_version_are_forwarded_byte_for_byte(gateway):
    client = await gateway.ws(ALL_GREETINGS)
    await client.welcome()
    events = [
        {"additional top-level property": True, "cloudEventsVersion": "0.1", "eventID": "1",
         "eventType": "greeting", "source": "nil"},
        {"additional top-level property": True, "specversion": "0.2", "id": "2",
         "type": "greeting", "source": "nil"},
        greeting("x", "3", additional=True),
    ]
    for event in events:
        body = json.dumps(event, indent=1).encode()
        response = await gateway.publish(body)
        assert response.headers.getRawHeaders("content-type") == [
            "application/json; charset=utf-8"]
        assert await client.next_event() == event


@pytest_twisted.ensureDeferred
async def test_202_body_is_the_event_object(gateway):
    response = await gateway.request("POST", "/_rig/v1/events", json=greeting("a", "r1"))
    assert response.code == 202
    assert await within(response.json()) == greeting("a", "r1")


@pytest_twisted.ensureDeferred
async def test_binary_mode_json_and_text(gateway):
    client = await gateway.ws("?subscriptions=" + subs_query(
        [{"eventType": "greeting", "oneOf": [{"name": "alice"}]}, {"eventType": "note"}]))
    await client.welcome()
    headers = {"ce-specversion": "0.2", "ce-type": "greeting", "ce-source": "s",
               "ce-id": "bin-1", "content-type": "application/json"}
    await gateway.publish(b'{"name":"alice"}', headers=headers)
    assert await client.next_event() == {
        "specversion": "0.2", "type": "greeting", "source": "s", "id": "bin-1",
        "data": {"name": "alice"}}
    text = "The name this event carries is »Alice«."
    headers = {"ce-specversion": "1.0", "ce-type": "note", "ce-source": "s", "ce-id": "bin-2",
               "content-type": "text/plain"}
    await gateway.publish(text.encode(), headers=headers)
    event = await client.next_event()
    assert event["data"] == text and event["datacontenttype"] == "text/plain"


@pytest_twisted.ensureDeferred
async def test_internal_messages_endpoint_ignores_ce_headers_in_structured_mode(gateway):
    client = await gateway.ws(ALL_GREETINGS)
    await client.welcome()
    event = {"cloudEventsVersion": "0.1", "eventType": "greeting", "eventID": "i1",
             "source": "s"}
    response = await gateway.request(
        "POST", "/v3/messages", internal=True, data=json.dumps(event).encode(),
        headers={"content-type": "application/cloudevents+json;charset=utf-8",
                 "ce-specversion": "illegal"})
    assert response.code == 202
    assert await client.next_event() == event
    response = await gateway.request("POST", "/v3/messages", internal=True,
                                     json={"type": "greeting"})
    assert response.code == 400


@pytest_twisted.ensureDeferred
async def test_bad_submissions(gateway):
    cases = [
        ({"content-type": "text/plain", "ce-specversion": "0.4"}, b"x", 400,
         'instead of ["0.2"]'),
        ({"content-type": "application/json"}, b'{"specversion":"1.0","type":"t","id":"1"}', 400,
         "The request body does not look like a CloudEvent"),
        ({"content-type": "application/json"}, b"{not json", 400, "not valid JSON"),
        ({"content-type": "application/json"}, b"[1,2]", 400, "not a JSON object"),
        ({"content-type": "application/json"},
         b'{"specversion":"1.0","type":"t","id":"1","source":"\xff"}', 400, "UTF-8"),
        ({"content-type": "application/cloudevents-batch"}, b"[]", 415, "batched"),
        ({"content-type": "application/cloudevents+avro"}, b"x", 415, "structured mode"),
    ]
    for headers, body, status, fragment in cases:
        response = await gateway.request("POST", "/_rig/v1/events", data=body, headers=headers)
        text = await within(response.text())
        assert response.code == status, (headers, body, text)
        assert fragment in text, (fragment, text)


@pytest_twisted.ensureDeferred
async def test_oversized_body_is_413_and_gateway_keeps_serving(make_gateway):
    gateway = make_gateway(max_request_bytes=1_000_000)
    client = await gateway.ws(ALL_GREETINGS)
    await client.welcome()
    big = b'{"specversion":"1.0","type":"greeting","source":"s","id":"big","data":"' + (
        b"x" * 10_000_000) + b'"}'
    response = await gateway.request("POST", "/_rig/v1/events", data=big,
                                     headers={"content-type": "application/json"})
    assert response.code == 413
    await gateway.publish(greeting("after", "after-big"))
    assert (await client.next_event())["id"] == "after-big"


@pytest_twisted.ensureDeferred
async def test_preflight_and_health_and_not_found(gateway):
    response = await gateway.request("OPTIONS", "/_rig/v1/events")
    assert response.code == 204
    assert response.headers.getRawHeaders("access-control-allow-methods") == ["POST"]
    assert response.headers.getRawHeaders("access-control-allow-origin") == ["*"]
    for path, internal in (("/_rig/health", False), ("/health", True)):
        response = await gateway.request("GET", path, internal=internal)
        assert response.code == 200 and await within(response.text()) == "OK"
        assert response.headers.getRawHeaders("content-type")[0].startswith("text/plain")
    response = await gateway.request("GET", "/random/route")
    assert response.code == 404 and await within(response.json()) == {"message": "Not Found"}
    response = await gateway.request("DELETE", "/_rig/v1/events")
    assert response.code == 404
    response = await gateway.request("GET", "/nope", internal=True)
    assert response.code == 404
    assert await within(response.json()) == {"errors": {"detail": "Not found"}}


@pytest_twisted.ensureDeferred
async def test_event_without_subscribers_is_accepted(gateway):
    response = await gateway.request("POST", "/_rig/v1/events",
                                     json={"specversion": "1.0", "type": "nobody.cares",
                                           "source": "s", "id": "1"})
    assert response.code == 202
