"""JWTs end to end: inferred subscriptions, bad tokens, checks, token lifetime (spec 3.4, 5)."""
import json

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater

from tests.support import greeting, make_jwt, subs_query, within

AUTH = {"jwt_secret_key": "mysecret"}
ALICE = {"eventType": "greeting", "oneOf": [{"name": "alice"}]}
BOB = {"eventType": "greeting", "oneOf": [{"name": "bob"}]}
CHARLIE = {"eventType": "greeting", "oneOf": [{"name": "charlie"}]}
LP = "/_rig/v1/connection/longpolling"


def put_path(token, kind="sse"):
    return f"/_rig/v1/connection/{kind}/{token}/subscriptions"


@pytest_twisted.ensureDeferred
async def test_jwt_parameter_sets_automatic_subscriptions_on_every_transport(make_gateway):
    gateway = make_gateway(**AUTH)
    token = make_jwt({"username": "alice"})
    sse = await gateway.sse(f"?jwt={token}")
    assert (await sse.welcome())[1] == [ALICE]
    ws = await gateway.ws(f"?jwt={token}&subscriptions=" + subs_query([BOB]))
    assert (await ws.welcome())[1] == [ALICE, BOB]
    response = await gateway.request("GET", f"{LP}?jwt={token}")
    assert response.code == 200
    poll = await gateway.request("GET", LP, cookies=response.cookies())
    events = (await within(poll.json()))["events"]
    assert events[1]["data"] == [ALICE]
    await gateway.publish(greeting("alice", "for-alice"))
    assert (await sse.next_event())["id"] == "for-alice"
    assert (await ws.next_event())["id"] == "for-alice"


@pytest_twisted.ensureDeferred
async def test_bad_tokens_are_refused_with_the_reason(make_gateway):
    gateway = make_gateway(**AUTH)
    cases = {
        "foobar": "Could not verify token",
        make_jwt({"username": "a"}, secret="wrong"): "Invalid signature",
        make_jwt({"username": "a"}, lifetime=-3600): "token expired",
        make_jwt({"username": "a"}, nbf=9_999_999_999): "token not yet valid",
        make_jwt({"username": "a"}, algorithm="HS512"): "Invalid signature",
        make_jwt({"username": "a", "blob": "x" * 20000}): "not a token",
    }
    for token, reason in cases.items():
        client = await gateway.sse(f"?jwt={token}")
        assert client.status == 400
        body = (await client.response_body()).decode()
        assert body.startswith("could not parse subscriptions: could not decode JWT: "), body
        assert reason in body, (reason, body)
        ws = await gateway.ws(f"?jwt={token}")
        assert await ws.close_info() == (1000, "Bad request.")
    response = await gateway.request("GET", f"{LP}?jwt=foobar")
    assert response.code == 400


@pytest_twisted.ensureDeferred
async def test_put_replaces_automatic_subscriptions_per_the_bearer_tokens(make_gateway):
    gateway = make_gateway(**AUTH)
    alice = make_jwt({"username": "alice"})
    client = await gateway.sse(f"?jwt={alice}")
    token, _ = await client.welcome()

    async def put(body, headers=None):
        response = await gateway.request("PUT", put_path(token), json=body, headers=headers)
        assert response.code == 204, await within(response.text())
        return (await client.next_event())["data"]

    assert await put({"subscriptions": [BOB]}) == [BOB]  # automatic one dropped
    bearer = {"authorization": f"Bearer {alice}"}
    assert await put({"subscriptions": []}, bearer) == [ALICE]
    assert await put({"subscriptions": [CHARLIE]}, bearer) == [ALICE, CHARLIE]
    assert await put({"subscriptions": []}) == []


@pytest_twisted.ensureDeferred
async def test_subscription_check_jwt_validation(make_gateway):
    gateway = make_gateway(subscription_check="jwt_validation", **AUTH)
    valid = make_jwt({"username": "alice"})
    denied = await gateway.sse("?subscriptions=" + subs_query([BOB]))
    assert denied.status == 400
    assert await denied.response_body() == b"Subscription denied (not authorized)."
    ws = await gateway.ws("?subscriptions=" + subs_query([BOB]))
    assert await ws.close_info() == (1000, "Bad request.")
    plain = await gateway.sse()  # nothing to authorize without subscriptions
    token, _ = await plain.welcome()
    response = await gateway.request("PUT", put_path(token), json={"subscriptions": [BOB]})
    assert (response.code, await within(response.text())) == (403, "Subscription denied.")
    response = await gateway.request("PUT", put_path(token), json={"subscriptions": [BOB]},
                                     headers={"authorization": valid})  # no scheme counts here
    assert response.code == 204
    allowed = await gateway.sse(f"?jwt={valid}&subscriptions=" + subs_query([BOB]))
    assert (await allowed.welcome())[1] == [ALICE, BOB]


@pytest_twisted.ensureDeferred
async def test_external_subscription_check(make_gateway, stub_server):
    verdicts = {"bob": 200, "eve": 403, "mallory": 500}

    def answer(info):
        body = json.loads(info["body"])
        name = body["subscriptions"][0]["oneOf"][0]["name"]
        if name == "slow":
            return None
        return verdicts[name], b""

    checker = stub_server(answer)
    gateway = make_gateway(subscription_check=checker.url, auth_check_timeout=0.5, **AUTH)

    def sub(name):
        subscription = {"eventType": "greeting", "oneOf": [{"name": name}]}
        return "?subscriptions=" + subs_query([subscription])

    allowed = await gateway.sse(sub("bob"))
    assert allowed.status == 200
    seen = checker.requests[-1]
    assert seen["method"] == "POST"
    assert seen["headers"]["content-type"] == "application/json; charset=utf-8"
    for name in ("eve", "mallory", "slow"):
        denied = await gateway.sse(sub(name))
        assert denied.status == 400, name
    jwt_token = make_jwt({"username": "z"})
    await gateway.sse(f"?jwt={jwt_token}&" + sub("bob")[1:])
    assert checker.requests[-1]["headers"]["authorization"] == f"Bearer {jwt_token}"
    closed = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
    unreachable = f"http://127.0.0.1:{closed.getHost().port}/check"
    await closed.stopListening()
    gateway = make_gateway(subscription_check=unreachable, **AUTH)
    denied = await gateway.sse(sub("bob"))
    assert denied.status == 400  # an unreachable checker denies


@pytest_twisted.ensureDeferred
async def test_submission_check(make_gateway, stub_server):
    gateway = make_gateway(submission_check="jwt_validation", **AUTH)
    event = greeting("a", "sub-1")
    response = await gateway.request("POST", "/_rig/v1/events", json=event)
    assert (response.code, await within(response.text())) == (403, "Submission denied.")
    headers = {"authorization": f"Bearer {make_jwt({})}"}
    response = await gateway.request("POST", "/_rig/v1/events", json=event, headers=headers)
    assert response.code == 202
    response = await gateway.request("POST", "/v3/messages", internal=True, json=event)
    assert response.code == 202  # the internal port is not checked

    checker = stub_server(lambda info: (204 if b'"allowed"' in info["body"] else 401, b""))
    gateway = make_gateway(submission_check=checker.url, **AUTH)
    response = await gateway.request("POST", "/_rig/v1/events", json=greeting("x", "allowed"))
    assert response.code == 202
    assert json.loads(checker.requests[-1]["body"]) == greeting("x", "allowed")
    response = await gateway.request("POST", "/_rig/v1/events", json=greeting("x", "nope"))
    assert response.code == 403


@pytest_twisted.ensureDeferred
async def test_expiring_token_closes_connections_unless_refreshed(make_gateway):
    gateway = make_gateway(jwt_leeway=0.01, **AUTH)
    short = make_jwt({"username": "alice", "jti": "s1"}, lifetime=2.0)  # room for slow CI
    ws = await gateway.ws(f"?jwt={short}")
    sse = await gateway.sse(f"?jwt={short}")
    kept = await gateway.sse(f"?jwt={short}")
    await ws.welcome()
    await sse.welcome()
    token, _ = await kept.welcome()
    longer = make_jwt({"username": "alice", "jti": "s1"}, lifetime=60)
    response = await gateway.request("PUT", put_path(token), json={"subscriptions": []},
                                     headers={"authorization": f"Bearer {longer}"})
    assert response.code == 204
    assert await ws.close_info() == (1008, "Token expired.")
    killed = await sse.next_message()
    assert killed["event"] == "rig.session_killed"
    await within(sse.closed)
    await deferLater(reactor, 0.3)
    assert len(gateway.hub.connections) == 1
    await gateway.publish(greeting("alice", "still-here"))
    events = [await kept.next_event(), await kept.next_event()]
    assert events[-1]["id"] == "still-here"


@pytest_twisted.ensureDeferred
async def test_huge_tokens_are_refused_cleanly(make_gateway):
    gateway = make_gateway(**AUTH)
    huge = make_jwt({"username": "alice", "blob": "x" * 14000})
    client = await gateway.sse(f"?jwt={huge}")
    assert client.status == 400
    assert b"not a token: longer than 16384 bytes" in await client.response_body()
    fits = make_jwt({"username": "alice", "blob": "x" * 9000})  # ~12 KB: accepted
    client = await gateway.sse(f"?jwt={fits}")
    assert client.status == 200


@pytest_twisted.ensureDeferred
async def test_jwks_keys_are_fetched_and_refreshed_on_unknown_kid(make_gateway, stub_server):
    import jwt as pyjwt
    from cryptography.hazmat.primitives.asymmetric import ec

    keys = {"k1": ec.generate_private_key(ec.SECP256R1())}
    published = []

    def answer(info):
        if info["path"] == "/broken":
            return 500, b"oops"
        jwks = []
        for kid in published:
            jwk = json.loads(pyjwt.algorithms.ECAlgorithm.to_jwk(keys[kid].public_key()))
            jwk.update(kid=kid, alg="ES256")
            jwks.append(jwk)
        return 200, json.dumps({"keys": jwks}).encode()

    server = stub_server(answer)
    published.append("k1")
    gateway = make_gateway(jwt_jwks_url=server.url, jwt_alg="ES256")
    jwks = gateway.hub.auth.jwks
    jwks._min_interval = 0.0
    await within(jwks.refresh())

    def token(kid):
        return pyjwt.encode({"exp": 9_999_999_999, "username": "alice"}, keys[kid],
                            algorithm="ES256", headers={"kid": kid})

    client = await gateway.sse(f"?jwt={token('k1')}")
    assert client.status == 200
    keys["k2"] = ec.generate_private_key(ec.SECP256R1())
    published.append("k2")
    refused = await gateway.sse(f"?jwt={token('k2')}")  # unknown kid: refused, refetch starts
    assert refused.status == 400
    assert b"unknown key id" in await refused.response_body()
    for _ in range(50):
        if jwks.key("k2") is not None:
            break
        await deferLater(reactor, 0.02)
    client = await gateway.sse(f"?jwt={token('k2')}")
    assert client.status == 200
    forged = pyjwt.encode({"exp": 9_999_999_999}, "secret", algorithm="HS256",
                          headers={"kid": "k1"})
    refused = await gateway.sse(f"?jwt={forged}")
    assert refused.status == 400


@pytest_twisted.ensureDeferred
async def test_jwks_endpoint_down_refuses_tokens_but_serves_everything_else(make_gateway):
    gateway = make_gateway(jwt_jwks_url="http://127.0.0.1:9/jwks.json", jwt_alg="RS256")
    refused = await gateway.sse("?jwt=" + make_jwt({}))
    assert refused.status == 400
    plain = await gateway.sse()
    assert plain.status == 200
