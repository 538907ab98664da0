"""Hostile input (issue 13): a clear 4xx or a clean close, never a 500, a hang or a traceback."""
import json
from urllib.parse import quote

import pytest
import pytest_twisted
from twisted.logger import LogLevel

from rig.jsonbounds import MAX_DEPTH, JSONInputError, loads, within_depth
from tests.support import within

DEEP = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a":' * 200 + "1" + "}" * 200
LP = "/_rig/v1/connection/longpolling"


def failures(log_events):
    """Tracebacks and critical lines: what must never appear."""
    return [event for event in log_events
            if "log_failure" in event or event.get("log_level") == LogLevel.critical]


def test_bounded_json_decoding():
    assert loads(b'{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}
    for text, why in [(DEEP, "nested too deeply"), (DEEP_OBJECT, "nested too deeply"),
                      ("[1e999]", "out of range"), ("NaN", "NaN is not a valid JSON value"),
                      ("[-Infinity]", "-Infinity is not"), (b"\xff", "not valid UTF-8"),
                      ("1" * 5000, "Exceeds the limit"), ("{", "line 1 column 2")]:
        with pytest.raises(JSONInputError, match=why):
            loads(text)
    assert within_depth(json.loads("[" * MAX_DEPTH + "]" * MAX_DEPTH))
    assert not within_depth(json.loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)))
    assert loads("1" * 4000) == int("1" * 4000)  # big, but a number: the use decides


@pytest_twisted.ensureDeferred
async def test_deep_json_is_a_400_everywhere(gateway, log_events):
    client = await gateway.sse()
    token, _ = await client.welcome()
    response = await gateway.request(
        "PUT", f"/_rig/v1/connection/sse/{token}/subscriptions", data=DEEP.encode(),
        headers={"content-type": "application/json"})
    assert response.code == 400
    assert "nested too deeply" in await within(response.text())
    deep_query = "?subscriptions=" + quote("[" * 5000 + "]" * 5000, safe="")  # 30 KB
    for path in ("/_rig/v1/connection/sse", LP):
        response = await gateway.request("GET", path + deep_query)
        text = await within(response.text())
        assert (response.code, "nested too deeply" in text) == (400, True), (path, text)
        too_long = await gateway.request("GET", path + "?subscriptions=" + quote(DEEP))
        assert (too_long.code, await within(too_long.text())) == (414, "URI too long.")
    for path, body in (("/v3/apis", DEEP), ("/v3/session-blacklist", DEEP),
                       ("/v3/apis", DEEP_OBJECT), ("/v3/session-blacklist", DEEP_OBJECT)):
        response = await gateway.request("POST", path, internal=True, data=body.encode(),
                                         headers={"content-type": "application/json"})
        assert response.code == 400, path
        await within(response.text())
    response = await gateway.request("POST", "/_rig/v1/events", data=b'{"x": [1e999]}',
                                     headers={"content-type": "application/json"})
    assert response.code == 400
    assert "out of range" in await within(response.text())
    assert failures(log_events) == []


@pytest_twisted.ensureDeferred
async def test_a_websocket_with_deep_subscriptions_is_closed_at_once(gateway, log_events):
    client = await gateway.ws("?subscriptions=" + quote("[" * 5000 + "]" * 5000, safe=""))
    code, reason = await client.close_info()
    assert code == 1000 and "nested too deeply" in reason
    assert gateway.hub.connections == {}
    assert failures(log_events) == []


@pytest_twisted.ensureDeferred
async def test_an_oversized_header_line_is_a_431(gateway):
    from tests.support import RawHTTPClient

    client = await RawHTTPClient.open(gateway.inbound_port, "GET", "/_rig/health",
                                      headers=[("x-big", "a" * 40_000)])
    assert client.status == 431
    assert await client.response_body() == b"Request header too large."


@pytest_twisted.ensureDeferred
async def test_huge_numbers_are_a_4xx(make_gateway, stub_server, log_events):
    from tests.support import make_jwt

    gateway = make_gateway(jwt_secret_key="mysecret")
    forever = make_jwt({"jti": "s"}, exp=10**400)
    response = await gateway.request("GET", "/_rig/v1/connection/sse?jwt=" + forever)
    text = await within(response.text())
    assert response.code == 400 and "expiry out of range" in text
    for validity in (10**400, 1e308, "1e400", 10 * 365 * 86400 + 1):
        response = await gateway.request(
            "POST", "/v3/session-blacklist", internal=True,
            json={"sessionId": "s", "validityInSeconds": validity})
        text = await within(response.text())
        assert response.code == 400, (validity, text)
        assert len(text) < 120
    backend = stub_server(lambda info: (200, b"secret stuff"))
    api = {"id": "secured", "name": "secured", "auth_type": "jwt",
           "proxy": {"target_url": "127.0.0.1", "port": backend.port.getHost().port},
           "version_data": {"default": {"endpoints": [
               {"id": "e", "method": "GET", "path_regex": "/secured", "secured": True}]}}}
    response = await gateway.request("POST", "/v3/apis", internal=True, json=api)
    assert response.code == 201
    response = await gateway.request("GET", "/secured?jwt=" + forever)
    assert response.code == 401
    await within(response.text())
    assert backend.requests == []
    assert failures(log_events) == []
