"""Three real ``twistd rig`` processes on loopback form a cluster (issue 5, end to end)."""
import json
import time

import pytest_twisted
import treq
from twisted.internet import defer

from tests.support import (
    RawHTTPClient,
    WSClient,
    get_json,
    greeting,
    make_jwt,
    subs_query,
    wait_for,
    within,
)

COOKIE = "process-cluster-cookie"


@pytest_twisted.ensureDeferred
async def test_three_processes(processes, tmp_path, stub_server):  # noqa: PLR0915 (one scenario: processes are slow to start)
    pool = processes.pool
    a = await processes.node("a", str(tmp_path), COOKIE).start(pool)
    b = processes.node("b", str(tmp_path), COOKIE, seeds=[a.cluster_address])
    c = processes.node("c", str(tmp_path), COOKIE, seeds=[a.cluster_address])
    await defer.gatherResults([defer.ensureDeferred(node.start(pool)) for node in (b, c)])
    nodes = [a, b, c]
    clients = processes.clients

    async def all_alive(node, count=3):
        view = await get_json(pool, node.url("/v3/cluster", internal=True))
        return [m["state"] for m in view["members"]].count("alive") == count

    for node in nodes:
        await wait_for(lambda node=node: all_alive(node), 30, f"3 alive members on {node.name}")

    # events published on each node reach subscribers on every node exactly once
    ws_c = await WSClient.open(c.inbound, "/_rig/v1/connection/ws?subscriptions="
                               + subs_query([{"eventType": "greeting"}]))
    sse_b = await RawHTTPClient.open(b.inbound, "GET", "/_rig/v1/connection/sse?subscriptions="
                                     + subs_query([{"eventType": "greeting"}]))
    clients += [ws_c, sse_b]
    ws_token, _ = await ws_c.welcome()
    await sse_b.welcome()

    async def interest_everywhere():
        for node in nodes:
            view = await get_json(pool, node.url("/v3/cluster", internal=True))
            owners = [o for o, types in view["interest"].items() if "greeting" in types]
            if sorted(owners) != sorted([b.cluster_address, c.cluster_address]):
                return False
        return True

    await wait_for(interest_everywhere, 10, "interest replicated")
    for node in nodes:
        body = json.dumps(greeting("x", f"from-{node.name}")).encode()
        response = await within(treq.post(node.url("/_rig/v1/events"), data=body, pool=pool,
                                          headers={"content-type": "application/json"}))
        assert response.code == 202
    expected = ["from-a", "from-b", "from-c"]  # exactly once each; order across nodes
    # is not defined (a node's own event can overtake one relayed from a peer)
    assert sorted([(await ws_c.next_event())["id"] for _ in expected]) == expected
    assert sorted([(await sse_b.next_event())["id"] for _ in expected]) == expected

    # a PUT sent to a node that does not own the connection
    response = await within(treq.put(
        a.url(f"/_rig/v1/connection/ws/{ws_token}/subscriptions"), pool=pool,
        data=json.dumps({"subscriptions": [{"eventType": "greeting"},
                                           {"eventType": "news"}]}).encode(),
        headers={"content-type": "application/json"}))
    assert response.code == 204
    assert [s["eventType"] for s in (await ws_c.next_event())["data"]] == ["greeting", "news"]

    # a long poll owned by c, polled through a
    created = await within(treq.get(c.url("/_rig/v1/connection/longpolling"), pool=pool))
    assert json.loads(await within(created.text())) == "ok"
    polled = await within(treq.get(a.url("/_rig/v1/connection/longpolling"), pool=pool,
                                   cookies=created.cookies()))
    events = json.loads(await within(polled.text()))["events"]
    assert events[0]["type"] == "rig.connection.create"

    # a blacklist on a closes the session's connection on c within 2 s
    victim = await WSClient.open(c.inbound, "/_rig/v1/connection/ws?jwt="
                                 + make_jwt({"jti": "fraud"}))
    clients.append(victim)
    await victim.welcome()
    started = time.monotonic()
    response = await within(treq.post(
        a.url("/v3/session-blacklist", internal=True), pool=pool,
        data=b'{"sessionId":"fraud","validityInSeconds":600}',
        headers={"content-type": "application/json"}))
    assert response.code == 201
    assert await within(victim.closed, 2) == (1000, "Session killed.")
    assert time.monotonic() - started < 2

    # an API defined on a is served by b
    backend = stub_server(lambda info: (200, b"backend says hi"))
    definition = {"id": "shared", "name": "shared",
                  "proxy": {"target_url": "127.0.0.1", "port": backend.port.getHost().port},
                  "version_data": {"default": {"endpoints": [
                      {"id": "get", "method": "GET", "path_regex": "/shared"}]}}}
    response = await within(treq.post(a.url("/v3/apis", internal=True), pool=pool,
                                      data=json.dumps(definition).encode(),
                                      headers={"content-type": "application/json"}))
    assert response.code == 201

    async def served_by_b():
        response = await within(treq.get(b.url("/shared"), pool=pool))
        return response.code == 200 and await within(response.text()) == "backend says hi"

    await wait_for(served_by_b, 5, "API served by b")

    # SIGKILL b: detected by the others, which keep delivering
    killed_at = time.monotonic()
    b.kill()

    async def b_gone(node):
        view = await get_json(pool, node.url("/v3/cluster", internal=True))
        states = {m["address"]: m["state"] for m in view["members"]}
        return states.get(b.cluster_address) in ("dead", None)

    detected = max([await wait_for(lambda node=node: b_gone(node), 30, "b detected")
                    for node in (a, c)])
    print(f"SIGKILLed node detected by both survivors after {detected - killed_at:.1f} s")
    body = json.dumps(greeting("x", "after-kill")).encode()
    response = await within(treq.post(a.url("/_rig/v1/events"), data=body, pool=pool,
                                      headers={"content-type": "application/json"}))
    assert response.code == 202
    assert (await ws_c.next_event())["id"] == "after-kill"

    # b restarts, rejoins and receives the current blacklist and API definitions
    await b.start(pool)  # on new ports: a restart is a new life of the node
    await wait_for(lambda: all_alive(a), 30, "b alive again on a")

    async def b_converged():
        response = await within(treq.get(b.url("/v3/session-blacklist/fraud", internal=True),
                                         pool=pool))
        await within(response.text())
        apis = await get_json(pool, b.url("/v3/apis", internal=True))
        return response.code == 200 and [api["id"] for api in apis] == ["shared"]

    await wait_for(b_converged, 15, "b converged")
