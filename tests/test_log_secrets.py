"""Secrets never reach the logs (issue 7): keys, cookies, passwords, and the JWTs of clients.

The gateway runs with every secret setting, clients do what leaves log lines
behind (bad and good tokens, a proxied request with ``?jwt=`` to a dead
backend with the request log on, a blacklisted session, a TLS listener),
and every log event, rendered as the JSON line an operator would see, is
searched for the secrets.
"""
import json

import pytest_twisted

from rig.logs import json_line
from tests.certs import PASSWORD, make_certificate
from tests.support import make_jwt, subs_query, within
from tests.test_e2e_proxy import api, endpoint

SECRET = "jwt-signing-secret-4711"
COOKIE = "cluster-cookie-0815"


@pytest_twisted.ensureDeferred
async def test_no_secret_appears_in_any_log_line(make_gateway, tmp_path, log_events):
    cert = make_certificate(tmp_path)
    gateway = make_gateway(
        jwt_secret_key=SECRET, node_cookie=COOKIE, request_log=("console",),
        https_certfile=cert.certfile, https_keyfile=cert.encrypted_keyfile,
        https_keyfile_pass=PASSWORD,
        inbound_https_listen="tcp:0:interface=127.0.0.1",
        api_https_listen="tcp:0:interface=127.0.0.1",
        proxy_config=(api(9, endpoint("dead", "GET", "/dead")),),  # port 9: refused
    )
    good = make_jwt({"jti": "session-1", "name": "alice"}, secret=SECRET)
    forged = make_jwt({"jti": "session-2"}, secret="not-the-secret")
    expired = make_jwt({"jti": "session-3"}, secret=SECRET, lifetime=-60)
    query = "?subscriptions=" + subs_query([{"eventType": "greeting"}])

    for token in (good, forged, expired):
        client = await gateway.sse(f"{query}&jwt={token}")
        await within(client.head)
        ws = await gateway.ws(f"?jwt={token}")
        if token == good:
            await ws.next_event()
        else:
            await ws.close_info()
    response = await gateway.request("GET", f"/dead?jwt={good}",
                                     headers={"authorization": f"Bearer {good}"})
    assert response.code == 502
    await within(response.text())
    response = await gateway.request(
        "POST", "/v3/session-blacklist", internal=True,
        data=json.dumps({"sessionId": "session-1", "validityInSeconds": 60}).encode(),
        headers={"content-type": "application/json"})
    assert response.code == 201
    await within(response.text())
    refused = await gateway.sse(f"?jwt={good}")
    assert (await within(refused.head)).status == 400

    text = "".join(json_line(event) for event in log_events)
    assert "Proxy to" in text  # the dead backend was logged, and so was the request
    for secret in (SECRET, COOKIE, PASSWORD, good, forged, expired):
        assert secret not in text
