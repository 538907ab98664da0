"""Long polling end to end, with treq as the HTTP client."""
import json

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests.support import greeting, subs_query, within

LP = "/_rig/v1/connection/longpolling"


async def connect(gateway, query=""):
    response = await gateway.request("GET", LP + query)
    body = await within(response.json())
    return response, body


def cookies_of(response):
    jar = response.cookies()
    return {"connection_token": jar["connection_token"], "last_event_id": jar["last_event_id"]}


async def poll(gateway, cookies):
    response = await gateway.request("GET", LP, cookies=cookies)
    assert response.code == 200
    body = await within(response.json())
    return body, cookies_of(response)


@pytest_twisted.ensureDeferred
async def test_connect_then_first_poll_has_welcome_events(gateway):
    response, body = await connect(gateway)
    assert response.code == 200 and body == "ok"
    cookies = cookies_of(response)
    assert cookies["last_event_id"] == '"first_event"'
    raw_cookies = response.headers.getRawHeaders("set-cookie")
    assert all("HttpOnly" in value and "Path=/" in value for value in raw_cookies)
    assert response.headers.getRawHeaders("access-control-allow-credentials") == ["true"]
    body, cookies = await poll(gateway, cookies)
    created, subscriptions = body["events"]
    assert created["type"] == "rig.connection.create"
    assert created["data"]["connection_token"] == cookies["connection_token"]
    assert subscriptions["type"] == "rig.subscriptions_set" and subscriptions["data"] == []
    assert json.loads(cookies["last_event_id"]) == body["last_event_id"]


@pytest_twisted.ensureDeferred
async def test_parked_poll_answers_as_soon_as_an_event_arrives(gateway):
    query = "?subscriptions=" + subs_query([{"eventType": "greeting"}])
    response, _ = await connect(gateway, query)
    _, cookies = await poll(gateway, cookies_of(response))
    answered = []
    parked = gateway.request("GET", LP, cookies=cookies)
    parked.addCallback(lambda response: answered.append(response) or response)
    await deferLater(reactor, 0.1)
    assert not answered
    await gateway.publish(greeting("alice", "lp1"))
    response = await parked
    body = await within(response.json())
    assert [event["id"] for event in body["events"]] == ["lp1"]


@pytest_twisted.ensureDeferred
async def test_poll_with_nothing_new_returns_empty_after_the_wait(make_gateway):
    gateway = make_gateway(longpoll_wait=0.3)
    response, _ = await connect(gateway)
    first, cookies = await poll(gateway, cookies_of(response))
    body, _ = await poll(gateway, cookies)
    assert body == {"last_event_id": first["last_event_id"], "events": []}


@pytest_twisted.ensureDeferred
async def test_put_subscriptions_then_next_poll_has_new_set_and_events(gateway):
    response, _ = await connect(gateway)
    _, cookies = await poll(gateway, cookies_of(response))
    token = cookies["connection_token"]
    put = await gateway.request(
        "PUT", f"/_rig/v1/connection/longpolling/{token}/subscriptions",
        json={"subscriptions": [{"eventType": "greeting", "oneOf": [{"name": "alice"}]}]},
    )
    assert put.code == 204
    await gateway.publish(greeting("bob", "b"))
    await gateway.publish(greeting("alice", "a"))
    body, _ = await poll(gateway, cookies)
    assert body["events"][0]["type"] == "rig.subscriptions_set"
    assert [event["id"] for event in body["events"][1:]] == ["a"]


@pytest_twisted.ensureDeferred
async def test_bad_cookie_starts_a_new_session(gateway):
    response = await gateway.request("GET", LP, cookies={"connection_token": "garbage!!"})
    assert response.code == 200
    assert await within(response.json()) == "ok"


@pytest_twisted.ensureDeferred
async def test_invalid_subscriptions_400_with_cors_and_wrapped_form_accepted(gateway):
    response = await gateway.request("GET", LP + "?subscriptions=" + subs_query([{"x": 1}]))
    assert response.code == 400
    assert response.headers.getRawHeaders("access-control-allow-origin") == ["*"]
    text = await within(response.text())
    assert text.startswith("could not parse subscriptions:")
    wrapped = {"subscriptions": [{"eventType": "greeting"}]}
    response, _ = await connect(gateway, "?subscriptions=" + subs_query(wrapped))
    first, _ = await poll(gateway, cookies_of(response))
    assert first["events"][1]["data"] == [{"eventType": "greeting", "oneOf": []}]


@pytest_twisted.ensureDeferred
async def test_rate_limit_429_without_cors(make_gateway):
    gateway = make_gateway(max_connections_per_minute=1)
    response, _ = await connect(gateway)
    assert response.code == 200
    refused = await gateway.request("GET", LP)
    assert refused.code == 429
    assert await within(refused.text()) == "Reached maximum number of connections"
    assert refused.headers.getRawHeaders("access-control-allow-origin") is None


@pytest_twisted.ensureDeferred
async def test_client_vanishing_while_parked_leaves_the_session_intact(gateway):
    query = "?subscriptions=" + subs_query([{"eventType": "greeting"}])
    response, _ = await connect(gateway, query)
    _, cookies = await poll(gateway, cookies_of(response))
    parked = gateway.request("GET", LP, cookies=cookies)
    await deferLater(reactor, 0.1)
    parked.addErrback(lambda failure: None)
    parked.cancel()  # the client goes away mid-poll
    await deferLater(reactor, 0.1)
    await gateway.publish(greeting("alice", "after"))
    body, _ = await poll(gateway, cookies)
    assert [event["id"] for event in body["events"]] == ["after"]


@pytest_twisted.ensureDeferred
async def test_preflight(gateway):
    response = await gateway.request("OPTIONS", LP)
    assert response.code == 204
    headers = response.headers
    assert headers.getRawHeaders("access-control-allow-methods") == ["GET"]
    assert headers.getRawHeaders("access-control-allow-credentials") == ["true"]
    assert headers.getRawHeaders("access-control-allow-headers") == ["*"]
