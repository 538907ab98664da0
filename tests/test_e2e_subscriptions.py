"""The subscriptions PUT endpoint end to end (spec Part B 2.6, scenarios 12-23)."""
from urllib.parse import quote

import pytest_twisted

from tests.support import greeting, subs_query, within

ALICE = {"eventType": "greeting", "oneOf": [{"name": "alice"}]}
BOB = {"eventType": "greeting", "oneOf": [{"name": "bob"}]}


def put_path(token, kind="sse"):
    return f"/_rig/v1/connection/{kind}/{token}/subscriptions"


async def put(gateway, token, body, kind="sse", **kwargs):
    response = await gateway.request("PUT", put_path(token, kind), json=body, **kwargs)
    return response, await within(response.text())


@pytest_twisted.ensureDeferred
async def test_put_replaces_set_and_takes_effect_immediately(gateway):
    client = await gateway.sse()
    token, subscriptions = await client.welcome()
    assert subscriptions == []
    await gateway.publish(greeting("alice", "ignored"))
    response, text = await put(gateway, token, {"subscriptions": [ALICE]})
    assert (response.code, text) == (204, "")
    assert response.headers.getRawHeaders("access-control-allow-origin") == ["*"]
    assert (await client.next_event())["data"] == [ALICE]
    await gateway.publish(greeting("bob", "bob-1"))
    await gateway.publish(greeting("alice", "alice-1"))
    assert (await client.next_event())["id"] == "alice-1"
    await put(gateway, token, {"subscriptions": []})
    assert (await client.next_event())["data"] == []
    await gateway.publish(greeting("alice", "alice-2"))
    await put(gateway, token, {"subscriptions": [BOB]})
    assert (await client.next_event())["data"] == [BOB]  # alice-2 was not delivered
    assert len(gateway.hub.index) == 1


@pytest_twisted.ensureDeferred
async def test_token_works_across_transport_paths(gateway):
    ws = await gateway.ws()
    token, _ = await ws.welcome()
    response, _ = await put(gateway, token, {"subscriptions": [{"eventType": "greeting2"}]},
                            kind="sse")
    assert response.code == 204
    assert (await ws.next_event())["data"] == [{"eventType": "greeting2", "oneOf": []}]


@pytest_twisted.ensureDeferred
async def test_percent_encoded_token_is_decoded(gateway):
    """Frontends may encode the token (encodeURIComponent turns its = padding into %3D)."""
    client = await gateway.sse()
    token, _ = await client.welcome()
    assert "=" in token
    response, _ = await put(gateway, quote(token, safe=""), {"subscriptions": [ALICE]})
    assert response.code == 204
    assert (await client.next_event())["data"] == [ALICE]


@pytest_twisted.ensureDeferred
async def test_invalid_and_dead_tokens(gateway):
    response, text = await put(gateway, "not-a-token!", {"subscriptions": []})
    assert (response.code, text) == (400, "Invalid connection token.")
    client = await gateway.sse()
    token, _ = await client.welcome()
    forged = token[:-4] + ("AAA=" if not token.endswith("AAA=") else "BBB=")
    response, text = await put(gateway, forged, {"subscriptions": []})
    assert (response.code, text) == (400, "Invalid connection token.")
    client.disconnect()
    await within(client.closed)
    response, text = await put(gateway, token, {"subscriptions": []})
    assert (response.code, text) == (410, "Connection no longer exists.")


@pytest_twisted.ensureDeferred
async def test_body_errors_in_rigs_order(gateway):
    client = await gateway.sse()
    token, _ = await client.welcome()
    response, text = await put(gateway, token, {"foo": []})
    assert response.code == 400
    assert text.startswith('Expected field "subscriptions" is not present.')
    response = await gateway.request("PUT", put_path(token), data=b"{nope",
                                     headers={"content-type": "application/json"})
    assert response.code == 400
    assert (await within(response.text())).startswith("Expected JSON encoded body.")
    response = await gateway.request("PUT", put_path(token), data=b'{"subscriptions":[]}',
                                     headers={"content-type": "text/plain"})
    assert response.code == 400
    response = await gateway.request("PUT", put_path(token), data=b"\xff\xfe",
                                     headers={"content-type": "application/json"})
    assert response.code == 400
    response, text = await put(gateway, token, {"subscriptions": []},
                               headers={"accept": "text/html"})
    assert response.code == 406 and "application/json" in text
    response, text = await put(gateway, token, {"subscriptions": [{"this": "is not", "a": "s"}]})
    assert response.code == 400 and "could not parse given subscriptions" in text
    response, text = await put(gateway, token, {"subscriptions": {"eventType": "greeting"}})
    assert response.code == 400 and "could not parse given subscriptions" in text
    response, text = await put(gateway, token, {"subscriptions": []},
                               headers={"authorization": "Bearer this is not a valid JWT"})
    assert response.code == 400 and "invalid authorization header" in text
    # none of the failures emitted a new subscriptions set
    response, _ = await put(gateway, token, {"subscriptions": [BOB]})
    assert response.code == 204
    assert (await client.next_event())["data"] == [BOB]


@pytest_twisted.ensureDeferred
async def test_preflight(gateway):
    response = await gateway.request("OPTIONS", put_path("x", "ws"))
    assert response.code == 204
    assert response.headers.getRawHeaders("access-control-allow-methods") == ["PUT"]
    assert response.headers.getRawHeaders("access-control-allow-headers") == [
        "content-type,authorization"]


@pytest_twisted.ensureDeferred
async def test_constraint_semantics_name_and_age(gateway):
    subscription = {"eventType": "person.create", "oneOf": [{"name": "joe", "age": 30}]}
    client = await gateway.ws("?subscriptions=" + subs_query([subscription]))
    await client.welcome()

    def person(event_id, **data):
        return {"specversion": "0.2", "type": "person.create", "id": event_id, "data": data}

    for event in (person("joe20", name="joe", age=20), person("joenull", name="joe", age=None),
                  person("bob30", name="bob", age=30), person("joe-str", name="joe", age="30"),
                  person("joe30", name="joe", age=30.0)):
        await gateway.publish(event)
    assert (await client.next_event())["id"] == "joe30"


@pytest_twisted.ensureDeferred
async def test_unknown_constraint_fields_are_wildcards(gateway):
    query = subs_query([{"eventType": "greeting", "oneOf": [{"unknown": "x"}]},
                        {"eventType": "greeting", "oneOf": [{"name": "joe"}]}])
    client = await gateway.ws("?subscriptions=" + query)
    await client.welcome()
    await gateway.publish(greeting("sam", "sam"))
    assert (await client.next_event())["id"] == "sam"
    await gateway.publish(greeting("joe", "joe"))  # matches twice, delivered once
    await gateway.publish(greeting("zed", "zed"))
    assert (await client.next_event())["id"] == "joe"
    assert (await client.next_event())["id"] == "zed"
