"""``WORKERS=2``: one ``twistd rig`` supervising two worker processes that share the ports."""
import json
import os
import signal

import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, reactor

from rig.hub.token import TokenCodec
from tests.support import (
    TWISTD,
    NotifySocket,
    RawHTTPClient,
    WSClient,
    get_json,
    greeting,
    listening_ports,
    subs_query,
    wait_for,
    within,
)
from tests.test_shutdown import RigProcess, child_environment

COOKIE = "workers-cookie"
GREETINGS = "?subscriptions=" + subs_query([{"eventType": "greeting"}])


def children(pid):
    """The pids of a process's children (Linux)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listing:
            return {int(child) for child in listing.read().split()}
    except FileNotFoundError:
        return set()


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def node_of(token):
    return TokenCodec.from_cookie("x", COOKIE).decode(token).node


async def connect(port, count):
    """*count* WebSockets subscribed to greetings, with the worker each one landed on."""
    clients = []
    for _ in range(count):
        client = await WSClient.open(port, "/_rig/v1/connection/ws" + GREETINGS)
        token, _ = await client.welcome()
        clients.append((client, node_of(token)))
    return clients


async def publish(pool, port, event):
    response = await within(treq.post(f"http://127.0.0.1:{port}/_rig/v1/events", pool=pool,
                                      data=json.dumps(event).encode(),
                                      headers={"content-type": "application/json"}))
    assert response.code == 202
    await within(response.text())


async def scrape(pool, port):
    response = await within(treq.get(f"http://127.0.0.1:{port}/metrics", pool=pool))
    families = text_string_to_metric_families(await within(response.text()))
    return {family.name: family for family in families}


def total(families, name, **labels):
    """The sum over workers of a sample, and the workers it was reported by."""
    samples = [sample for sample in families[name].samples
               if all(sample.labels.get(key) == value for key, value in labels.items())]
    return sum(sample.value for sample in samples), {s.labels["worker"] for s in samples}


class Supervised:
    """A ``twistd rig`` with ``WORKERS=2`` on free ports, systemd's notify socket
    played by the test; every process it started is killed afterwards."""

    def __init__(self, tmp_path, **extra_env):
        self.inbound = self.api = None  # known once ready(): the ports are picked at start
        self.notify = NotifySocket()
        self._notify_port = reactor.listenUNIXDatagram(str(tmp_path / "notify"), self.notify)
        self.rig = RigProcess()
        env = child_environment(
            WORKERS="2", INBOUND_PORT="tcp:0:interface=127.0.0.1",
            API_HTTP_PORT="tcp:0:interface=127.0.0.1", NODE_COOKIE=COOKIE,
            NOTIFY_SOCKET=str(tmp_path / "notify"), LOG_FMT="json", LOG_LEVEL="info",
            MAX_CONNECTIONS_PER_MINUTE="100000", SHUTDOWN_DRAIN_TIMEOUT="5", **extra_env)
        self.process = reactor.spawnProcess(
            self.rig, TWISTD, [TWISTD, "--nodaemon", "--pidfile=", "rig"], env=env,
            path=str(tmp_path))
        self.seen = set()  # every worker pid, to be sure none outlives the test

    async def ready(self):
        """The supervisor's READY=1 (every worker is ready); the shared ports from it."""
        ready = await self.notify.ready(30)
        ports = listening_ports(ready["STATUS"])
        self.inbound, self.api = ports["inbound"], ports["internal"]
        return ready

    def workers(self):
        now = children(self.process.pid)
        self.seen |= now
        return now

    async def close(self):
        if not self.rig.ended.called:
            self.process.signalProcess("KILL")
            await within(self.rig.ended, 10)
        for pid in self.seen:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        await defer.maybeDeferred(self._notify_port.stopListening)


@pytest_twisted.async_yield_fixture
async def supervised(tmp_path):
    started = Supervised(tmp_path)
    yield started
    await started.close()


@pytest_twisted.ensureDeferred
async def test_two_workers_share_the_ports_and_behave_as_one_gateway(processes, supervised):  # noqa: PLR0915 (one timeline: processes are slow to start)
    ready = await supervised.ready()  # once both workers are ready
    inbound, api, notify, rig = (supervised.inbound, supervised.api, supervised.notify,
                                 supervised.rig)
    supervisor = supervised.process
    pool = processes.pool
    assert (ready["READY"], ready["MAINPID"]) == ("1", str(supervisor.pid))
    assert ready["STATUS"].startswith("Ready: 2 workers")
    workers = supervised.workers()
    assert len(workers) == 2

    # connections land on both workers; events published through the port reach all
    clients = await connect(inbound, 24)
    processes.clients.extend(client for client, _ in clients)
    assert len({node for _, node in clients}) == 2
    for number in range(6):
        await publish(pool, inbound, greeting("x", f"e{number}"))
    for client, _ in clients:
        got = sorted([(await client.next_event())["id"] for _ in range(6)])
        assert got == [f"e{number}" for number in range(6)]

    # any worker lists both; one scrape counts every connection, worker by worker
    view = await get_json(pool, f"http://127.0.0.1:{api}/v3/cluster")
    assert [m["state"] for m in view["members"]] == ["alive", "alive"]
    families = await scrape(pool, api)
    assert total(families, "rig_connections", transport="ws") == (24, {"0", "1"})
    assert total(families, "rig_worker_up") == (2, {"0", "1"})
    # so does the dashboard, whichever worker answers
    dashboard = (await get_json(pool, f"http://127.0.0.1:{api}/dashboard/data"))
    assert dashboard["workers"] == {"answered": 2, "of": 2}
    assert dashboard["current"]["connections"]["ws"] == 24
    assert dashboard["current"]["received"]["http"] == 6
    assert dashboard["current"]["deliveries"] == 24 * 6

    # a token minted by one worker works through whichever worker the PUT lands on
    sse = processes.client(await RawHTTPClient.open(inbound, "GET",
                                                    "/_rig/v1/connection/sse"))
    sse_token, _ = await sse.welcome()
    for _ in range(6):
        response = await within(treq.put(
            f"http://127.0.0.1:{inbound}/_rig/v1/connection/sse/{sse_token}/subscriptions",
            pool=pool, json={"subscriptions": [{"eventType": "news"}]}))
        assert response.code == 204, await within(response.text())
        await within(response.text())
        assert (await sse.next_event())["type"] == "rig.subscriptions_set"
    lp = f"http://127.0.0.1:{inbound}/_rig/v1/connection/longpolling"
    created = await within(treq.get(lp + GREETINGS, pool=pool))
    assert json.loads(await within(created.text())) == "ok"
    cookies, polled_ids = created.cookies(), []
    for number in range(4):  # polls land on either worker; the owner answers
        await publish(pool, inbound, greeting("x", f"lp{number}"))
        polled = await within(treq.get(lp, pool=pool, cookies=cookies))
        body = json.loads(await within(polled.text()))
        polled_ids += [event["id"] for event in body["events"] if event["type"] == "greeting"]
        cookies = polled.cookies()
    assert polled_ids == ["lp0", "lp1", "lp2", "lp3"]

    # kill -9 one worker: the other keeps serving, the dead one is back within 2 s
    victim = max(workers)
    view = await get_json(pool, f"http://127.0.0.1:{api}/v3/cluster")
    boots = {member["boot"] for member in view["members"]}
    survivors = [(c, n) for c, n in clients if c.protocol.transport is not None]
    os.kill(victim, signal.SIGKILL)
    killed_at = reactor.seconds()

    async def replaced():
        now = children(supervisor.pid)
        return len(now) == 2 and victim not in now

    await wait_for(replaced, 5, "a new worker")
    supervised.workers()
    restarted_after = reactor.seconds() - killed_at
    assert restarted_after < 2.5

    async def both_ready():  # as seen by whichever worker answers: a new life is alive
        view = await get_json(pool, f"http://127.0.0.1:{api}/v3/cluster")
        alive_boots = {m["boot"] for m in view["members"] if m["state"] == "alive"}
        return len(alive_boots) == 2 and alive_boots - boots

    await wait_for(both_ready, 15, "the restarted worker back in the cluster")
    back_after = reactor.seconds() - killed_at
    await publish(pool, inbound, greeting("x", "after-kill"))
    open_ones = [client for client, _ in survivors if not client.closed.called]
    assert 0 < len(open_ones) < len(survivors)  # the killed worker's connections closed
    for client in open_ones:
        ids = [(await client.next_event())["id"] for _ in range(5)]  # lp0-lp3 first
        assert ids == ["lp0", "lp1", "lp2", "lp3", "after-kill"]
    more = await connect(inbound, 16)
    processes.clients.extend(client for client, _ in more)
    assert len({node for _, node in more}) == 2  # the new worker takes connections again

    # SIGTERM: every worker drains (WebSockets get 1001) and the supervisor exits 0
    supervisor.signalProcess("TERM")
    stopping = await notify.next(5)
    assert stopping["STOPPING"] == "1"
    assert await within(more[0][0].closed, 10) == (1001, "Going away.")
    ended = await within(rig.ended, 20)
    assert (ended.exitCode, ended.signal) == (0, None), rig.text()
    assert not any(alive(pid) for pid in supervised.seen)
    logged = [json.loads(line) for line in rig.text().splitlines()]  # JSON, every line
    assert {event.get("worker") for event in logged} >= {0, 1}
    assert [event for event in logged if "traceback" in event] == []
    print(f"killed worker restarted after {restarted_after:.2f} s, alive in the cluster"
          f" after {back_after:.2f} s")


@pytest_twisted.ensureDeferred
async def test_an_sse_client_recovers_whichever_worker_it_comes_back_to(processes, supervised):
    await supervised.ready()
    port, pool = supervised.inbound, processes.pool
    stream = "/_rig/v1/connection/sse" + GREETINGS
    client = await RawHTTPClient.open(port, "GET", stream)
    await client.next_message()
    last = (await client.next_message())["id"]  # the position after the welcome
    workers_seen, sent = set(), []
    for number in range(12):  # each reconnect lands on a random worker
        client.disconnect()
        await within(client.closed)
        missed = [f"away-{number}-{index}" for index in range(3)]
        for event_id in missed:
            await publish(pool, port, greeting("x", event_id))
        sent += missed
        client = processes.client(await RawHTTPClient.open(
            port, "GET", stream, headers=[("Last-Event-ID", last)]))
        created = await client.next_message()
        workers_seen.add(node_of(created["data"]["data"]["connection_token"]))
        assert created["data"]["data"]["recovered"] is True, (number, created)
        await client.next_message()  # rig.subscriptions_set
        replayed = [await client.next_message() for _ in missed]
        assert [message["data"]["id"] for message in replayed] == missed
        last = replayed[-1]["id"]
    assert len(workers_seen) == 2  # it came back to both workers, and recovered on each


@pytest_twisted.ensureDeferred
async def test_workers_carry_events_between_them_over_a_nats_backplane(
        processes, nats_server, tmp_path):
    """``WORKERS=2`` with ``CLUSTER_BACKPLANE``: the workers' loopback cluster uses the
    broker for events; clients on both workers get each event once."""
    started = Supervised(tmp_path, CLUSTER_BACKPLANE=f"nats://{nats_server.address}")
    try:
        await started.ready()
        pool = processes.pool

        async def both_on_the_broker():
            return await nats_server.subscribers("rig.events.greeting") == 2

        clients = []
        while len({worker for _, worker in clients}) < 2 and len(clients) < 40:
            more = await connect(started.inbound, 4)  # the kernel spreads them
            processes.clients.extend(client for client, _ in more)
            clients += more
        assert len({worker for _, worker in clients}) == 2
        await wait_for(both_on_the_broker, 20, "both workers subscribed on the broker")
        for number in range(6):
            await publish(pool, started.inbound, greeting("n", f"w{number}"))
        expected = [f"w{number}" for number in range(6)]
        for client, _ in clients:
            assert sorted([(await client.next_event())["id"] for _ in expected]) == expected
        families = await scrape(pool, started.api)
        published, workers = total(families, "rig_backplane_messages", outcome="published")
        assert published == 6 and len(workers) == 2
    finally:
        await started.close()
