"""Several gateway nodes in one reactor form a cluster over loopback TCP (issue 5)."""
import json

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from rig.cluster.membership import SwimConfig
from rig.events import parse_structured
from rig.testing import eventually as poll
from tests.support import greeting, make_jwt, subs_query, within

FAST = SwimConfig(probe_interval=0.2, probe_timeout=0.1, push_pull_interval=1.0,
                  dead_reclaim=5.0)
COOKIE = "cluster-test-cookie"


def eventually(predicate, seconds=8.0, message="condition"):
    return poll(reactor, predicate, seconds, message)


def start_node(make_gateway, seeds=(), **overrides):
    return make_gateway(cluster_listen="tcp:0:interface=127.0.0.1", node_cookie=COOKIE,
                        cluster_seeds=tuple(seeds), swim_config=FAST,
                        jwt_secret_key="mysecret", **overrides)


async def three_nodes(make_gateway):
    first = start_node(make_gateway)
    await eventually(lambda: first.service.cluster.membership is not None)
    seed = first.service.cluster.links.address
    others = [start_node(make_gateway, seeds=[seed]) for _ in range(2)]
    nodes = [first, *others]

    def converged():
        return all(
            node.service.cluster.membership is not None
            and len([m for m in node.service.cluster.members() if m.state == "alive"]) == 3
            for node in nodes
        )

    await eventually(converged, message="three alive members everywhere")
    return nodes


@pytest_twisted.ensureDeferred
async def test_events_reach_subscribers_on_every_node_exactly_once(make_gateway):
    a, b, c = await three_nodes(make_gateway)
    on_b = await b.ws("?subscriptions=" + subs_query([{"eventType": "greeting"}]))
    on_c = await c.sse("?subscriptions=" + subs_query([{"eventType": "greeting"}]))
    await on_b.welcome()
    await on_c.welcome()

    # confirmed: a already knows where greeting subscribers are
    owners = set(a.service.interest.owners_with("greeting"))
    assert owners == {b.service.cluster.node_name, c.service.cluster.node_name}
    await a.publish(greeting("x", "from-a"))
    await c.publish(greeting("x", "from-c"))
    # exactly once each; a node's own event may overtake one relayed from a peer
    assert sorted([(await on_b.next_event())["id"] for _ in range(2)]) == ["from-a", "from-c"]
    assert sorted([(await on_c.next_event())["id"] for _ in range(2)]) == ["from-a", "from-c"]
    await a.publish(greeting("x", "marker"))
    assert (await on_b.next_event())["id"] == "marker"  # nothing was delivered twice


@pytest_twisted.ensureDeferred
async def test_blacklist_on_one_node_kills_connections_on_another(make_gateway):
    a, b, c = await three_nodes(make_gateway)
    token = make_jwt({"jti": "fraud"})
    victim = await c.ws(f"?jwt={token}")
    await victim.welcome()
    await eventually(lambda: a.service.session_map.owners_with("fraud")
                     == [c.service.cluster.node_name], message="session map replicated")
    response = await a.request("POST", "/v3/session-blacklist", internal=True,
                               json={"sessionId": "fraud", "validityInSeconds": 60})
    assert response.code == 201
    assert await victim.close_info() == (1000, "Session killed.")
    await eventually(lambda: a.service.session_map.owners_with("fraud") == [],
                     message="the killed session leaves the session map")
    await eventually(lambda: "fraud" in b.hub.auth.blacklist)
    refused = await b.sse(f"?jwt={token}")
    assert refused.status == 400


@pytest_twisted.ensureDeferred
async def test_api_definitions_replicate(make_gateway, stub_server):
    a, b, c = await three_nodes(make_gateway)
    backend = stub_server(lambda info: (200, b"from the backend"))
    definition = {"id": "shared", "name": "shared",
                  "proxy": {"target_url": "127.0.0.1", "port": backend.port.getHost().port},
                  "version_data": {"default": {"endpoints": [
                      {"id": "get", "method": "GET", "path_regex": "/shared"}]}}}
    response = await a.request("POST", "/v3/apis", internal=True, json=definition)
    assert response.code == 201
    await eventually(lambda: b.service.store.get("shared") is not None)
    response = await b.request("GET", "/shared")
    assert (response.code, await within(response.text())) == (200, "from the backend")
    response = await c.request("DELETE", "/v3/apis/shared", internal=True)
    assert response.code == 204
    await eventually(lambda: a.service.store.get("shared") is None)


@pytest_twisted.ensureDeferred
async def test_a_leaving_node_is_seen_as_left_and_its_interest_dropped(make_gateway):
    a, _b, c = await three_nodes(make_gateway)
    on_c = await c.ws("?subscriptions=" + subs_query([{"eventType": "greeting"}]))
    await on_c.welcome()
    c_name = c.service.cluster.node_name
    await eventually(lambda: c_name in a.service.interest.owners_with("greeting"))
    await c.stop()
    await eventually(lambda: a.service.cluster.membership.member(c_name).state == "left",
                     message="c seen as left")
    assert c_name not in a.service.interest.owners_with("greeting")
    await a.publish(greeting("x", "after-leave"))  # no route to a departed node: no error


@pytest_twisted.ensureDeferred
async def test_a_node_with_the_wrong_cookie_never_joins(make_gateway, log_events):
    first = start_node(make_gateway)
    await eventually(lambda: first.service.cluster.membership is not None)
    intruder = make_gateway(cluster_listen="tcp:0:interface=127.0.0.1", node_cookie="wrong",
                            cluster_seeds=(first.service.cluster.links.address,),
                            swim_config=FAST)
    await eventually(lambda: any("wrong cookie" in event.get("log_format", "")
                                 for event in log_events), message="the link refused")
    assert [m.state for m in first.service.cluster.members()] == ["alive"]
    assert len(intruder.service.cluster.members()) == 1


@pytest_twisted.ensureDeferred
async def test_subscriptions_put_reaches_the_owning_node_from_any_node(make_gateway):
    a, b, c = await three_nodes(make_gateway)
    client = await c.sse()
    token, _ = await client.welcome()
    for node in (a, b):
        response = await node.request(
            "PUT", f"/_rig/v1/connection/sse/{token}/subscriptions",
            json={"subscriptions": [{"eventType": "greeting"}]})
        assert response.code == 204, await within(response.text())
        assert (await client.next_event())["data"] == [{"eventType": "greeting", "oneOf": []}]
    response = await a.request("PUT", f"/_rig/v1/connection/sse/{token}/subscriptions",
                               json={"subscriptions": [{"eventType": 7}]})
    assert response.code == 400
    assert "could not parse given subscriptions" in await within(response.text())
    client.disconnect()
    await within(client.closed)
    response = await a.request("PUT", f"/_rig/v1/connection/sse/{token}/subscriptions",
                               json={"subscriptions": []})
    assert (response.code, await within(response.text())) == (
        410, "Connection no longer exists.")
    await c.stop()
    response = await a.request("PUT", f"/_rig/v1/connection/sse/{token}/subscriptions",
                               json={"subscriptions": []})
    assert response.code == 410  # the node is gone: like a closed connection, at once


@pytest_twisted.ensureDeferred
async def test_async_response_posted_to_another_node_reaches_the_waiting_request(
        make_gateway, stub_server):
    backend = stub_server(lambda info: (202, b""))
    definition = {"id": "orders", "name": "orders",
                  "proxy": {"target_url": "127.0.0.1", "port": backend.port.getHost().port},
                  "version_data": {"default": {"endpoints": [
                      {"id": "o", "method": "POST", "path_regex": "/orders",
                       "response_from": "http_async"}]}}}
    a, b, _c = await three_nodes(make_gateway)
    response = await a.request("POST", "/v3/apis", internal=True, json=definition)
    assert response.code == 201
    waiting = a.request("POST", "/orders", data=b"{}")
    await eventually(lambda: bool(backend.requests))
    correlation = backend.last_query()["correlation"]
    response = await b.request(
        "POST", "/v3/responses", internal=True, data=b"done",
        headers={"rig-correlation": correlation, "rig-response-code": "200",
                 "content-type": "text/plain"})
    assert response.code == 202
    answer = await waiting
    assert (answer.code, await within(answer.text())) == (200, "done")


@pytest_twisted.ensureDeferred
async def test_long_polls_may_land_on_any_node(make_gateway):
    a, b, c = await three_nodes(make_gateway)
    lp = "/_rig/v1/connection/longpolling"
    created = await c.request("GET", lp + "?subscriptions=" + subs_query(
        [{"eventType": "greeting"}]))
    assert created.code == 200
    cookies = created.cookies()
    first = await a.request("GET", lp, cookies=cookies)  # served by c, through a
    body = await within(first.json())
    assert [event["type"] for event in body["events"]] == [
        "rig.connection.create", "rig.subscriptions_set"]
    cookies = first.cookies()
    c_name = c.service.cluster.node_name
    await eventually(lambda: c_name in a.service.interest.owners_with("greeting"))
    parked = b.request("GET", lp, cookies=cookies)
    (session,) = c.hub.connections.values()
    await eventually(lambda: session._parked is not None, message="the poll parked on c")
    await a.publish(greeting("x", "lp-cluster"))
    answer = await parked
    assert [event["id"] for event in (await within(answer.json()))["events"]] == ["lp-cluster"]
    await c.stop()
    fresh = await a.request("GET", lp, cookies=answer.cookies())
    assert await within(fresh.json()) == "ok"  # the owner is gone: a new session starts


@pytest_twisted.ensureDeferred
async def test_cluster_view_lists_members(make_gateway):
    a, _b, _c = await three_nodes(make_gateway)
    response = await a.request("GET", "/v3/cluster", internal=True)
    view = await within(response.json())
    assert view["node"] == a.service.cluster.node_name
    assert sorted(m["state"] for m in view["members"]) == ["alive"] * 3
    assert [m["self"] for m in view["members"]].count(True) == 1
    assert all({"address", "incarnation", "last_seen_seconds_ago"} <= set(m)
               for m in view["members"])
    assert view["messages"]["received"] > 0


@pytest_twisted.ensureDeferred
async def test_dns_discovery_resolves_without_blocking_and_joins_what_it_finds(make_gateway):
    a = start_node(make_gateway)
    b = start_node(make_gateway, discovery_type="dns", dns_name="localhost")
    await eventually(lambda: a.service.cluster.membership and b.service.cluster.membership)
    node = b.service.cluster
    found = await within(node._discover())  # resolves localhost in the resolver's threads
    assert "127.0.0.1" in found
    a_port = a.service.cluster.links.address.rpartition(":")[2]
    node._join_discovered(["127.0.0.1"], a_port)
    await eventually(lambda: len([m for m in node.members() if m.state == "alive"]) == 2)


@pytest_twisted.ensureDeferred
async def test_anti_entropy_sends_only_what_differs_and_repairs_lost_deltas(make_gateway):
    a, b, _c = await three_nodes(make_gateway)
    node_a, node_b = a.service.cluster, b.service.cluster
    # a blacklist entry and an API definition that b never heard of (their deltas were lost)
    a.hub.auth.blacklist._expiry["lost-delta"] = reactor.seconds() + 60
    in_sync = node_b.what_differs(node_a.digest())
    assert "blacklist" in in_sync and "apis" not in in_sync
    node_b.send(node_a.links.address, {"type": "rig.digest", **node_b.digest()})
    await eventually(lambda: "lost-delta" in b.hub.auth.blacklist, message="repaired on b")
    assert node_b.what_differs(node_a.digest()) == {"type": "rig.state"}


def self_signed(tmp_path):
    """A key and a certificate for 127.0.0.1 (the test's own CA, for the TLS cluster)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = tmp_path / "key.pem", tmp_path / "cert.pem"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return str(key_path), str(cert_path)


@pytest_twisted.ensureDeferred
async def test_tls_between_nodes(make_gateway, tmp_path):
    key, cert = self_signed(tmp_path)
    listen = f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}"

    def tls_node(seeds=(), ca=cert):
        return make_gateway(cluster_listen=listen, cluster_tls_ca=ca, node_cookie=COOKIE,
                            cluster_seeds=tuple(seeds), swim_config=FAST)

    a = tls_node()
    await eventually(lambda: a.service.cluster.membership is not None)
    b = tls_node([a.service.cluster.links.address])
    await eventually(lambda: len([m for m in a.service.cluster.members()
                                  if m.state == "alive"]) == 2, message="TLS cluster")
    on_b = await b.ws("?subscriptions=" + subs_query([{"eventType": "greeting"}]))
    await on_b.welcome()
    await eventually(lambda: b.service.cluster.node_name
                     in a.service.interest.owners_with("greeting"))
    await a.publish(greeting("x", "over-tls"))
    assert (await on_b.next_event())["id"] == "over-tls"
    plain = make_gateway(cluster_listen="tcp:0:interface=127.0.0.1", node_cookie=COOKIE,
                         cluster_seeds=(a.service.cluster.links.address,), swim_config=FAST)
    await deferLater(reactor, 1.0)  # a plain-TCP node cannot talk to the TLS listener
    assert len(plain.service.cluster.members()) == 1


@pytest_twisted.ensureDeferred
async def test_a_healed_partition_converges(make_gateway):
    a, b, c = await three_nodes(make_gateway)
    cut = {"on": True}
    node_a = a.service.cluster
    others = {b.service.cluster.links.address, c.service.cluster.links.address}
    real_send_many, real_received = node_a.links.send_many, node_a._received

    def send_many(addresses, message):
        real_send_many([address for address in addresses
                        if not (cut["on"] and address in others)], message)

    def received(address, message):
        if not (cut["on"] and address in others):
            real_received(address, message)

    node_a.links.send_many, node_a.links.on_message = send_many, received
    await eventually(lambda: b.service.cluster.membership.member(node_a.node_name).state
                     in ("dead", "suspect"), 15, "a cut off from b")
    # both sides change state while apart
    await a.request("POST", "/v3/session-blacklist", internal=True,
                    json={"sessionId": "during-partition", "validityInSeconds": 600})
    definition = {"id": "apart", "name": "apart",
                  "proxy": {"target_url": "127.0.0.1", "port": 9},
                  "version_data": {"default": {"endpoints": [
                      {"id": "e", "method": "GET", "path_regex": "/apart"}]}}}
    await c.request("POST", "/v3/apis", internal=True, json=definition)
    cut["on"] = False

    def converged():
        nodes = [a, b, c]
        alive = all(len([m for m in n.service.cluster.members() if m.state == "alive"]) == 3
                    for n in nodes)
        blacklisted = all("during-partition" in n.hub.auth.blacklist for n in nodes)
        apis = all(n.service.store.get("apart") is not None for n in nodes)
        return alive and blacklisted and apis

    await eventually(converged, 20, "convergence after the partition heals")


@pytest_twisted.ensureDeferred
async def test_a_reconnecting_client_recovers_events_published_on_another_node(make_gateway):
    """The node keeps its interest in a closed connection's types while the
    client may come back, so events published elsewhere meanwhile still reach
    its history; a client that comes back to another node is replayed them
    from there."""
    a, b, _ = await three_nodes(make_gateway)
    query = "?subscriptions=" + subs_query([{"eventType": "greeting"}])
    first = await b.sse(query)
    await first.next_message()
    last = (await first.next_message())["id"]

    def b_interested():
        return b.service.cluster.node_name in a.service.interest.owners_with("greeting")

    await eventually(b_interested, message="interest replicated to a")
    first.disconnect()
    await within(first.closed)
    await deferLater(reactor, 1.0)  # several interest rounds: b must still be interested
    assert b_interested()
    await a.publish(greeting("x", "while-away"))
    await eventually(lambda: b.hub.history.position_of("while-away") is not None,
                     message="the event in b's history")
    second = await b.sse(query, headers=[("Last-Event-ID", last)])
    assert (await second.next_event())["data"]["recovered"] is True
    await second.next_event()
    assert (await second.next_event())["id"] == "while-away"
    # a node the client never saw asks the one whose position it is
    elsewhere = await a.sse(query, headers=[("Last-Event-ID", last)])
    assert (await elsewhere.next_event())["data"]["recovered"] is True
    await elsewhere.next_event()
    assert (await elsewhere.next_event())["id"] == "while-away"
    await a.publish(greeting("x", "live"))  # once, not also as a replay
    assert (await elsewhere.next_event())["id"] == "live"
    assert (await second.next_event())["id"] == "live"
    # a position of a node that is gone cannot be recovered
    await b.stop()
    await eventually(lambda: a.service.cluster.member(b.service.cluster.node_name).state
                     in ("left", "dead"))
    orphan = await a.sse(query, headers=[("Last-Event-ID", last)])
    assert (await orphan.next_event())["data"]["recovered"] is False


@pytest_twisted.ensureDeferred
async def test_a_joining_node_is_ready_only_once_it_knows_every_peers_interest(make_gateway):
    a, b, _c = await three_nodes(make_gateway)
    on_b = await b.ws("?subscriptions=" + subs_query([{"eventType": "greeting"}]))
    await on_b.welcome()
    # the seed's view of b is stale (as when b joined through another seed just now):
    # the joining node must ask b itself
    a.service.interest.sets.drop(b.service.cluster.node_name)
    late = start_node(make_gateway, seeds=[a.service.cluster.links.address])
    assert not late.service.cluster.synced
    known_when_synced = []
    late.service.cluster.when_synced().addCallback(lambda _: known_when_synced.append(
        (set(late.service.interest.owners_with("greeting")),
         len(late.service.cluster.live_peers()))))
    # published before it knows anyone: held, then routed once it has synced
    late.hub.publish(parse_structured(json.dumps(greeting("x", "early")).encode()))
    await within(late.service.cluster.when_synced())
    assert known_when_synced == [({b.service.cluster.node_name}, 3)]
    assert (await on_b.next_event())["id"] == "early"
    response = await late.request("GET", "/v3/health", internal=True)
    assert (response.code, await within(response.json())) == (
        200, {"status": "ok", "checks": {"cluster": "ok"}})


@pytest_twisted.ensureDeferred
async def test_a_node_whose_seeds_do_not_answer_is_ready_after_the_join_timeout(make_gateway,
                                                                              dead_port):
    alone = start_node(make_gateway, seeds=[f"127.0.0.1:{dead_port}"],
                       cluster_options={"join_timeout": 0.5})
    response = await alone.request("GET", "/v3/health", internal=True)
    assert (response.code, await within(response.json())) == (
        503, {"status": "starting", "checks": {"cluster": "syncing"}})
    await within(alone.service.cluster.when_synced())
    response = await alone.request("GET", "/v3/health", internal=True)
    assert response.code == 200
    # alone, a new type costs nothing: nobody to wait for
    client = await alone.sse("?subscriptions=" + subs_query([{"eventType": "solo"}]))
    await client.welcome()
