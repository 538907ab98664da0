"""Every JSON-taking endpoint and query parameter, fuzzed (issue 13).

Arbitrary JSON values (deep nesting, huge and non-finite numbers, odd Unicode
with lone surrogates), as bodies and as ``subscriptions`` parameters: never a
5xx, never a traceback or a critical line in the log, and the gateway answers
afterwards. The suite runs a fixed set of 60 examples; ``RIG_FUZZ_EXAMPLES=N`` runs N
random ones instead, to hunt.
"""
import json
import os
from urllib.parse import quote

import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.logger import LogLevel

from tests.support import RawHTTPClient, within

SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(-10**400, 10**400)
           | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(st.characters(codec=None), max_size=20)
           | st.sampled_from(["greeting", "eventType", "oneOf", "1.0", "\ud800", "\x00", ""]))
KEYS = st.sampled_from(["specversion", "type", "id", "source", "data", "eventType", "oneOf",
                        "subscriptions", "sessionId", "validityInSeconds", "proxy",
                        "target_url", "port", "version_data", "endpoints", "path_regex",
                        "name", "use_env"]) | st.text(max_size=8)
VALUES = st.recursive(SCALARS, lambda children: st.lists(children, max_size=4)
                      | st.dictionaries(KEYS, children, max_size=5), max_leaves=25)


def encode(value):
    """JSON text, with NaN and Infinity as Python writes them (not JSON: must be a 400)."""
    return json.dumps(value)


def payloads(value):
    """The value itself, nested deeply, and wrapped where an endpoint looks."""
    text = encode(value)
    return [text, "[" * 300 + text + "]" * 300,
            encode({"subscriptions": value}) if "NaN" not in text else text,
            encode([{"eventType": "greeting", "oneOf": [value]}])]


def collect_failures(log_events):
    return [event for event in log_events
            if "log_failure" in event or event.get("log_level") == LogLevel.critical]


@pytest_twisted.ensureDeferred
async def test_no_json_input_gets_a_5xx(make_gateway, log_events):
    """Hypothesis drives from a thread; each example runs on the reactor against a real
    gateway (the test's own reactor cannot block on it)."""
    from twisted.internet import reactor
    from twisted.internet.threads import blockingCallFromThread, deferToThread

    gateway = make_gateway(max_connections_per_minute=10**9)

    @settings(max_examples=int(os.environ.get("RIG_FUZZ_EXAMPLES", "60")), deadline=None,
              derandomize=not os.environ.get("RIG_FUZZ_EXAMPLES"),
              suppress_health_check=[HealthCheck.too_slow])
    @given(value=VALUES)
    def check(value):
        blockingCallFromThread(reactor, lambda: defer.ensureDeferred(_exercise(gateway, value)))

    await deferToThread(check)
    assert collect_failures(log_events) == []


async def _exercise(gateway, value):
    sse = await gateway.sse()
    token, _ = await sse.welcome()
    json_headers = {"content-type": "application/json"}
    for text in payloads(value):
        body = text.encode("utf-8", "surrogatepass")
        for internal, method, path in (
                (False, "POST", "/_rig/v1/events"), (True, "POST", "/v3/messages"),
                (False, "PUT", f"/_rig/v1/connection/sse/{token}/subscriptions"),
                (True, "POST", "/v3/apis"), (True, "PUT", "/v3/apis/fuzz"),
                (True, "POST", "/v3/session-blacklist")):
            response = await gateway.request(method, path, internal=internal, data=body,
                                             headers=json_headers)
            await within(response.text())
            assert response.code < 500, (method, path, text[:200])
        query = "?subscriptions=" + quote(body, safe="")
        stream = await RawHTTPClient.open(gateway.inbound_port, "GET",
                                          "/_rig/v1/connection/sse" + query)
        stream.disconnect()
        assert stream.status < 500, text[:200]
        response = await gateway.request("GET", "/_rig/v1/connection/longpolling" + query)
        await within(response.text())
        assert response.code < 500, text[:200]
        ws = await gateway.ws(query)  # welcomed, or refused with a close frame: never hung
        first, _index = await within(defer.DeferredList(
            [ws.messages.get(), ws.closed], fireOnOneCallback=True, consumeErrors=True))
        assert isinstance(first, tuple) or first.get("type") == "rig.connection.create"
        ws.disconnect()
    sse.disconnect()
    response = await gateway.request("GET", "/_rig/health")
    assert (response.code, await within(response.text())) == (200, "OK")
