"""CloudEvents 0.3, as the official SDK (the ``cloudevents`` package) produces it (issue 17):
structured and binary, JSON and bytes, over HTTP and Redis."""
import base64
import json

import pytest_twisted
from cloudevents.core.bindings.http import to_binary_event, to_structured_event
from cloudevents.core.v03.event import CloudEvent as CloudEvent03

from rig.events import parse_http
from tests.support import subs_query, within
from tests.test_redis_source import redis_gateway

BYTES = b"\xff\xfe\x00 not UTF-8"


def sdk_event(event_id, data, **attributes):
    return CloudEvent03({"type": "greeting", "source": "sdk", "id": event_id,
                         "schemaurl": "https://example.com/greeting.json", **attributes}, data)


def parsed(message):
    headers = {name.lower(): value for name, value in message.headers.items()}
    return parse_http(headers.get("content-type"), headers, message.body)


def test_structured_and_binary_json_events_parse_as_the_sdk_wrote_them():
    event = sdk_event("s1", {"name": "ada"}, datacontenttype="application/json")
    for message in (to_structured_event(event), to_binary_event(event)):
        parsed_event = parsed(message)
        assert (parsed_event.specversion, parsed_event.type, parsed_event.id) == (
            "0.3", "greeting", "s1")
        document = parsed_event.document
        assert document["data"] == {"name": "ada"}
        assert document["schemaurl"] == "https://example.com/greeting.json"
        assert parsed_event.filterable["data"] == {"name": "ada"}


def test_bytes_travel_as_base64_with_datacontentencoding_in_both_modes():
    event = sdk_event("b1", BYTES, datacontenttype="application/octet-stream")
    structured = to_structured_event(event)
    assert json.loads(structured.body)["datacontentencoding"] == "base64"  # the SDK's way
    for message in (structured, to_binary_event(event)):
        document = parsed(message).document
        assert document["datacontentencoding"] == "base64"
        assert base64.b64decode(document["data"]) == BYTES
        assert document["datacontenttype"] == "application/octet-stream"
        assert "data" not in parsed(message).filterable  # nothing to filter on in bytes


def test_base64_json_data_is_what_extractors_see():
    body = json.dumps({"specversion": "0.3", "type": "greeting", "source": "s", "id": "j",
                       "datacontentencoding": "base64",
                       "data": base64.b64encode(b'{"name":"ada"}').decode()}).encode()
    event = parse_http("application/cloudevents+json", {}, body)
    assert event.filterable["data"] == {"name": "ada"}
    assert event.document["data"] == base64.b64encode(b'{"name":"ada"}').decode()  # as sent
    for data in (None, base64.b64encode(b"\xff").decode()):  # found by the fuzz: null data
        body = json.dumps({"specversion": "0.3", "type": "t", "source": "s", "id": "n",
                           "datacontentencoding": "base64", "data": data}).encode()
        assert "data" not in parse_http("application/json", {}, body).filterable or data is None


@pytest_twisted.ensureDeferred
async def test_sdk_events_over_http_reach_subscribers_filtered_by_their_data(gateway):
    stream = await gateway.sse("?subscriptions=" + subs_query(
        [{"eventType": "greeting", "oneOf": [{"name": "ada"}]}]))
    await stream.welcome()
    for message in (to_structured_event(sdk_event("h1", {"name": "bob"})),
                    to_binary_event(sdk_event("h2", {"name": "ada"},
                                              datacontenttype="application/json")),
                    to_structured_event(sdk_event("h3", {"name": "ada"}))):
        response = await gateway.request("POST", "/_rig/v1/events", data=message.body,
                                         headers=dict(message.headers))
        assert response.code == 202, await within(response.text())
        await within(response.text())
    received = [await stream.next_event(), await stream.next_event()]
    assert [(e["id"], e["specversion"], e["data"]) for e in received] == [
        ("h2", "0.3", {"name": "ada"}), ("h3", "0.3", {"name": "ada"})]  # bob's filtered out
    assert received[0]["schemaurl"] == "https://example.com/greeting.json"


@pytest_twisted.ensureDeferred
async def test_sdk_events_from_redis_structured_and_binary(make_gateway, redis_server):
    gateway, _source = await redis_gateway(make_gateway, redis_server)
    stream = await gateway.sse("?subscriptions=" + subs_query([{"eventType": "greeting"}]))
    await stream.welcome()
    structured = to_structured_event(sdk_event("r1", {"name": "ada"}))
    binary = to_binary_event(sdk_event("r2", {"name": "bob"},
                                       datacontenttype="application/json"))
    fields = [part for name, value in binary.headers.items()
              for part in (name.replace("ce-", "ce_"), value)]
    redis = await redis_server.client()
    try:
        await redis.execute_command("XADD", "rig", "*", "event", structured.body.decode())
        await redis.execute_command("XADD", "rig", "*", *fields, "data", binary.body.decode())
    finally:
        await redis.disconnect()
    first, second = await stream.next_event(), await stream.next_event()
    assert (first["id"], first["specversion"], first["data"]) == ("r1", "0.3", {"name": "ada"})
    assert (second["id"], second["specversion"], second["data"]) == (
        "r2", "0.3", {"name": "bob"})
