"""Three real ``twistd rig`` processes on loopback form a cluster (issue 5, end to end)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests.support import RawHTTPClient, WSClient, greeting, make_jwt, subs_query, within

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")
COOKIE = "process-cluster-cookie"


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


class Node:
    def __init__(self, name, ports, seeds, workdir):
        self.name = name
        self.inbound, self.api, self.cluster = ports
        self.seeds = seeds
        self.workdir = workdir
        self.process = None

    @property
    def cluster_address(self):
        return f"127.0.0.1:{self.cluster}"

    def start(self):
        env = dict(os.environ,
                   INBOUND_PORT=f"tcp:{self.inbound}:interface=127.0.0.1",
                   API_HTTP_PORT=f"tcp:{self.api}:interface=127.0.0.1",
                   CLUSTER_PORT=f"tcp:{self.cluster}:interface=127.0.0.1",
                   CLUSTER_SEEDS=",".join(self.seeds), NODE_HOST="127.0.0.1",
                   NODE_COOKIE=COOKIE, JWT_SECRET_KEY="mysecret",
                   MAX_CONNECTIONS_PER_MINUTE="100000", LOG_LEVEL="warn")
        log = open(os.path.join(self.workdir, f"{self.name}.log"), "ab")
        self.process = subprocess.Popen(
            [TWISTD, "--nodaemon", "--pidfile=", "rig"], cwd=self.workdir, env=env,
            stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def url(self, path, internal=False):
        return f"http://127.0.0.1:{self.api if internal else self.inbound}{path}"


async def get_json(pool, url):
    response = await within(treq.get(url, pool=pool))
    return json.loads(await within(response.text()))


async def wait_for(predicate, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if await predicate():
                return time.monotonic()
        except Exception:  # not up yet
            pass
        await deferLater(reactor, 0.1)
    raise AssertionError(f"{what} not reached within {seconds} s")


@pytest_twisted.ensureDeferred
async def test_three_processes(tmp_path, stub_server):  # noqa: PLR0915 (one scenario: processes are slow to start)
    from twisted.web.client import HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=False)
    ports = free_ports(9)
    a = Node("a", ports[0:3], [], str(tmp_path))
    b = Node("b", ports[3:6], [f"127.0.0.1:{ports[2]}"], str(tmp_path))
    c = Node("c", ports[6:9], [f"127.0.0.1:{ports[2]}"], str(tmp_path))
    nodes = [a, b, c]
    clients = []
    try:
        for node in nodes:
            node.start()

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
        b.start()
        await wait_for(lambda: all_alive(a), 30, "b alive again on a")

        async def b_converged():
            response = await within(treq.get(b.url("/v3/session-blacklist/fraud", internal=True),
                                             pool=pool))
            await within(response.text())
            apis = await get_json(pool, b.url("/v3/apis", internal=True))
            return response.code == 200 and [api["id"] for api in apis] == ["shared"]

        await wait_for(b_converged, 15, "b converged")
    finally:
        for client in clients:
            client.disconnect()
        for node in nodes:
            node.kill()
        await pool.closeCachedConnections()
