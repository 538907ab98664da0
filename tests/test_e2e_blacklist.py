"""The session blacklist end to end (spec Part B 6, scenarios on the internal API)."""
import pytest_twisted

from tests.support import make_jwt, within

AUTH = {"jwt_secret_key": "mysecret"}
LP = "/_rig/v1/connection/longpolling"


async def blacklist(gateway, body, version="v3"):
    response = await gateway.request("POST", f"/{version}/session-blacklist", internal=True,
                                     json=body)
    return response, await within(response.text())


@pytest_twisted.ensureDeferred
async def test_one_post_kills_a_sessions_connections_on_every_transport(make_gateway):
    gateway = make_gateway(**AUTH)
    token = make_jwt({"username": "alice", "jti": "fraud"})
    other = make_jwt({"username": "bob", "jti": "honest"})
    ws = await gateway.ws(f"?jwt={token}")
    sse = await gateway.sse(f"?jwt={token}")
    bystander = await gateway.ws(f"?jwt={other}")
    connected = await gateway.request("GET", f"{LP}?jwt={token}")
    cookies = connected.cookies()
    await ws.welcome()
    await sse.welcome()
    await bystander.welcome()
    assert len(gateway.hub.sessions["fraud"]) == 3
    response, text = await blacklist(gateway, {"sessionId": "fraud", "validityInSeconds": 60})
    assert (response.code, text) == (201, "{}")
    assert response.headers.getRawHeaders("location") == ["/v3/session-blacklist/fraud"]
    assert response.headers.getRawHeaders("access-control-allow-origin") == ["*"]
    assert await ws.close_info() == (1000, "Session killed.")
    message = await sse.next_message()
    assert message["event"] == "rig.session_killed" and "data" not in message["data"]
    await within(sse.closed)
    poll = await gateway.request("GET", LP, cookies=cookies)
    assert await within(poll.json()) == "ok"  # the long-poll session is gone: a new one starts
    assert len(gateway.hub.connections) == 2  # the bystander and the new long-poll session
    # the session's tokens are refused from now on, everywhere
    refused = await gateway.sse(f"?jwt={token}")
    assert refused.status == 400
    assert b'Ignoring blacklisted JWT with ID "fraud".' in await refused.response_body()
    await gateway.publish({"specversion": "1.0", "type": "greeting", "source": "s", "id": "b",
                           "data": {"name": "bob"}})
    assert len(gateway.hub.sessions["honest"]) == 1  # the bystander is untouched
    response = await gateway.request("GET", "/v3/session-blacklist/fraud", internal=True)
    assert (response.code, await within(response.text())) == (200, "{}")
    response = await gateway.request("GET", "/v2/session-blacklist/nobody", internal=True)
    assert (response.code, await within(response.text())) == (404, "Not found.")


@pytest_twisted.ensureDeferred
async def test_custom_session_field(make_gateway):
    gateway = make_gateway(jwt_session_field=("sid",), **AUTH)
    token = make_jwt({"sid": "s-42"})
    ws = await gateway.ws(f"?jwt={token}")
    await ws.welcome()
    await blacklist(gateway, {"sessionId": "s-42", "validityInSeconds": "60"}, version="v2")
    assert await ws.close_info() == (1000, "Session killed.")


@pytest_twisted.ensureDeferred
async def test_put_with_a_token_joins_its_session(make_gateway):
    gateway = make_gateway(**AUTH)
    sse = await gateway.sse()
    token, _ = await sse.welcome()
    bearer = make_jwt({"jti": "joined"})
    response = await gateway.request(
        "PUT", f"/_rig/v1/connection/sse/{token}/subscriptions", json={"subscriptions": []},
        headers={"authorization": f"Bearer {bearer}"})
    assert response.code == 204
    await sse.next_event()
    await blacklist(gateway, {"sessionId": "joined", "validityInSeconds": 60})
    assert (await sse.next_message())["event"] == "rig.session_killed"


@pytest_twisted.ensureDeferred
async def test_validation_errors(make_gateway):
    gateway = make_gateway(**AUTH)
    cases = [
        ({"validityInSeconds": 60}, 'Missing value for "sessionId"'),
        ({"sessionId": "", "validityInSeconds": 60}, 'Expected non-empty string, got ""'),
        ({"sessionId": 12, "validityInSeconds": 60}, "Expected non-empty string, got 12"),
        ({"sessionId": "x"}, 'Missing value for "validityInSeconds"'),
        ({"sessionId": "x", "validityInSeconds": "soon"}, 'Expected a number, got "soon"'),
        ({"sessionId": "x", "validityInSeconds": -5}, "Expected a positive number, got -5"),
        ({"sessionId": "x", "validityInSeconds": 0}, "Expected a positive number, got 0"),
        ({"sessionId": "x", "validityInSeconds": True}, "Expected a number, got true"),
    ]
    for body, message in cases:
        response, text = await blacklist(gateway, body)
        assert (response.code, text) == (400, message)
        assert response.headers.getRawHeaders("content-type") is None
    response = await gateway.request("POST", "/v3/session-blacklist", internal=True,
                                     data=b"{nope", headers={"content-type": "application/json"})
    assert response.code == 400
    response = await gateway.request("POST", "/v3/session-blacklist", internal=True,
                                     data=b"x", headers={"content-type": "text/plain"})
    assert response.code == 415
    response = await gateway.request(
        "POST", "/v3/session-blacklist", internal=True,
        data=b"sessionId=form&validityInSeconds=30",
        headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.code == 201
    assert "form" in gateway.hub.auth.blacklist


@pytest_twisted.ensureDeferred
async def test_re_adding_extends_and_entries_expire(make_gateway):
    gateway = make_gateway(**AUTH)
    blacklist_state = gateway.hub.auth.blacklist
    await blacklist(gateway, {"sessionId": "s", "validityInSeconds": 0.3})
    first = blacklist_state.expires_at("s")
    await blacklist(gateway, {"sessionId": "s", "validityInSeconds": 100})
    assert blacklist_state.expires_at("s") > first + 50
    await blacklist(gateway, {"sessionId": "short", "validityInSeconds": 0.2})
    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    await deferLater(reactor, 0.3)
    response = await gateway.request("GET", "/v3/session-blacklist/short", internal=True)
    assert response.code == 404
    accepted = await gateway.sse(f"?jwt={make_jwt({'jti': 'short'})}")
    assert accepted.status == 200
