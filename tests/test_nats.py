"""NATS as event source and proxy target, against a real nats-server (issue 17)."""
import json
from functools import partial

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport

from rig.nats.client import NatsUnavailable, NoResponders, parse_server, parse_servers
from rig.nats.protocol import NatsProtocol, check_subject, frame_headers, parse_headers
from rig.settings import Settings, SettingsError
from rig.testing import eventually as poll
from tests.support import greeting, subs_query

ALL = "?subscriptions=" + subs_query([{"eventType": "greeting"}])
JOB = {"specversion": "1.0", "type": "job.requested", "source": "client", "id": "j1",
       "rig": {"target_partition": "replaced"}, "data": {"n": 1}}


def eventually(predicate, seconds=10.0, what="condition"):
    return poll(reactor, predicate, seconds, what)


def nats_api(topic, **endpoint):
    return {"id": "jobs", "name": "jobs", "proxy": {"target_url": "localhost", "port": 9},
            "version_data": {"default": {"endpoints": [
                {"id": "post-job", "method": "POST", "path_regex": "/jobs", "target": "nats",
                 "topic": topic, **endpoint},
                {"id": "job-options", "method": "OPTIONS", "path_regex": "/jobs",
                 "target": "nats", "topic": topic}]}}}


async def nats_gateway(make_gateway, nats_server, **overrides):
    gateway = make_gateway(nats_servers=parse_servers(nats_server.address), **overrides)
    await eventually(lambda: gateway.service.nats.healthy, what="gateway connected to NATS")
    return gateway


class Collected:
    """Messages a test client's subscription received."""

    def __init__(self):
        self.messages = []

    def __call__(self, subject, reply, payload, headers):
        self.messages.append((subject, reply, payload, headers))


async def subscribed(client, subject, **options):
    collected = Collected()
    client.subscribe(subject, collected, **options)
    await client.flush()
    return collected


# -- the wire, without a server


class Recorder:
    def __init__(self):
        self.seen = []

    def __getattr__(self, name):
        return lambda *args: self.seen.append((name, *args))


def connected_protocol():
    client = Recorder()
    protocol = NatsProtocol(client)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return protocol, transport, client


def test_messages_split_anywhere_are_parsed_whole():
    protocol, transport, client = connected_protocol()
    stream = (b'INFO {"server_id":"x","max_payload":1048576}\r\nPING\r\n'
              b"MSG rig 1 5\r\nhello\r\nMSG rig.a 2 _INBOX.x.1 0\r\n\r\n"
              b"HMSG rig 3 reply 22 27\r\nNATS/1.0\r\nce-id: 7\r\n\r\nhello\r\n"
              b"HMSG _INBOX.x.2 4 16 16\r\nNATS/1.0 503\r\n\r\n\r\n+OK\r\nPONG\r\n")
    for size in (1, 3, len(stream)):
        client.seen.clear()
        transport.clear()
        for start in range(0, len(stream), size):
            protocol.dataReceived(stream[start:start + size])
        assert client.seen == [
            ("nats_info", {"server_id": "x", "max_payload": 1048576}),
            ("nats_message", 1, "rig", None, b"hello", None),
            ("nats_message", 2, "rig.a", "_INBOX.x.1", b"", None),
            ("nats_message", 3, "rig", "reply", b"hello", (None, {"ce-id": "7"})),
            ("nats_message", 4, "_INBOX.x.2", None, b"", ("503", {})),
            ("nats_pong",)]
        assert transport.value() == b"PONG\r\n"
        assert transport.connected


@pytest.mark.parametrize("garbage", [
    b"MSG rig 1 x\r\n", b"MSG rig\r\n", b"HMSG rig 1 9 3\r\n", b"BOGUS\r\n", b"INFO [1]\r\n",
    b"MSG rig 1 2\r\nabcd\r\n", b"MSG rig 1 99999999999\r\n", b"x" * 70000])
def test_a_server_speaking_garbage_is_disconnected(garbage):
    protocol, transport, client = connected_protocol()
    protocol.dataReceived(garbage)
    assert transport.disconnecting
    assert [name for name, *_ in client.seen] == []


def test_subjects_and_headers_cannot_inject_commands():
    protocol, transport, _client = connected_protocol()
    for bad in ("a b", "a\r\nPUB x 1", "", "a..b", ".a", "a.", "a\tb"):
        with pytest.raises(ValueError):
            check_subject(bad)
    with pytest.raises(ValueError):
        check_subject("a.*")
    assert check_subject("a.*.>", wildcards=True) == "a.*.>"
    with pytest.raises(ValueError):
        check_subject("a.>.b", wildcards=True)
    with pytest.raises(ValueError):
        protocol.subscribe(1, "rig", "a queue")
    for headers in ({"ce-id": "1\r\nPUB"}, {"a:b": "1"}, {"": "1"}):
        with pytest.raises(ValueError):
            frame_headers(headers)
    assert transport.value() == b""
    assert parse_headers(frame_headers({"ce-id": "1", "Content-Type": "a/b"})) == (
        None, {"ce-id": "1", "content-type": "a/b"})


def test_server_addresses_and_credentials():
    server = parse_server("nats://user:s%40cret@nats.internal:4223")
    assert (server.host, server.port, server.tls, server.user, server.password) == (
        "nats.internal", 4223, False, "user", "s@cret")
    assert "s@cret" not in repr(server) and "s@cret" not in str(server)
    token = parse_server("tls://t0ken@n1")
    assert (token.token, token.user, token.port, token.tls) == ("t0ken", None, 4222, True)
    assert [s.port for s in parse_servers("a:1, b:2,")] == [1, 2]
    assert parse_servers("") == ()
    for bad in ("http://a:1", "a:port", "nats://a:1/x", "nats://"):
        with pytest.raises(ValueError):
            parse_server(bad)
    settings = Settings.from_mapping({}, {"NATS_SERVERS": "nats://u:hidden@h:1"})
    assert "hidden" not in repr(settings)


def test_nats_settings_are_checked_at_start():
    api = nats_api("jobs")
    with pytest.raises(SettingsError, match="NATS_SERVERS"):
        Settings.from_mapping({}, {"PROXY_CONFIG_FILE": json.dumps([api])})
    Settings.from_mapping({}, {"PROXY_CONFIG_FILE": json.dumps([api]), "NATS_SERVERS": "h:1"})
    for endpoint, error in (({"topic": ""}, "topic must be present"),
                            ({"topic": "a b"}, "not a NATS subject"),
                            ({"topic": "jobs.*"}, "wildcards"),
                            ({"response_from": "http_async"}, "response_from")):
        api = nats_api("jobs")
        api["version_data"]["default"]["endpoints"][0].update(endpoint)
        with pytest.raises(SettingsError, match=error):
            Settings.from_mapping({}, {"PROXY_CONFIG_FILE": json.dumps([api]),
                                       "NATS_SERVERS": "h:1"})
    with pytest.raises(SettingsError, match="NATS_SOURCE_TOPICS"):
        Settings.from_mapping({}, {"NATS_SOURCE_TOPICS": "rig,bad subject"})
    with pytest.raises(SettingsError, match="NATSTOFILTER_QUEUE_GROUP"):
        Settings.from_mapping({}, {"NATSTOFILTER_QUEUE_GROUP": "a b"})
    settings = Settings.from_mapping({}, {"NATS_SOURCE_TOPICS": "rig, events.>",
                                          "PROXY_NATS_RESPONSE_TIMEOUT": "2500"})
    assert settings.nats_source_topics == ("rig", "events.>")
    assert settings.proxy_nats_response_timeout == 2.5


# -- the client against a real server


@pytest_twisted.ensureDeferred
async def test_client_publishes_subscribes_and_requests(nats_server):
    client = await nats_server.client()
    try:
        seen = await subscribed(client, "greetings.*")
        client.publish("greetings.en", b"hello", headers={"ce-id": "1"})
        client.publish("other", b"not for us")
        await client.flush()
        await eventually(lambda: seen.messages, what="message")
        assert seen.messages == [("greetings.en", None, b"hello", (None, {"ce-id": "1"}))]

        def answer(subject, reply, payload, _headers):
            client.publish(reply, payload.upper())

        client.subscribe("echo", answer)
        await client.flush()
        assert await client.request("echo", b"ping", 5.0) == b"PING"
        with pytest.raises(NoResponders):
            await client.request("nobody.home", b"?", 5.0)
        client.subscribe("silent", Collected())
        await client.flush()
        with pytest.raises(defer.TimeoutError):
            await client.request("silent", b"?", 0.3)
    finally:
        await client.stopService()
    with pytest.raises(NatsUnavailable):
        client.publish("x", b"")


# -- the gateway's source


@pytest_twisted.ensureDeferred
async def test_events_from_nats_reach_subscribers_in_every_mode(make_gateway, nats_server):
    gateway = await nats_gateway(make_gateway, nats_server)
    client = await gateway.ws(ALL)
    await client.welcome()
    publisher = await nats_server.client()
    try:
        await gateway.service.nats.flush()  # the source's subscription is in place
        for version, event_id in (("1.0", "v1"), ("0.2", "v02"), ("0.3", "v03")):
            publisher.publish("rig", json.dumps(greeting("n", event_id, version)).encode())
        publisher.publish("rig", b'{"name":"b"}', headers={
            "ce-specversion": "1.0", "ce-type": "greeting", "ce-source": "s", "ce-id": "binary",
            "content-type": "application/json"})
        assert [(await client.next_event())["id"] for _ in range(3)] == ["v1", "v02", "v03"]
        event = await client.next_event()
        assert (event["id"], event["data"]) == ("binary", {"name": "b"})
        assert gateway.service.nats_source.counts["consumed"] == 4
        assert gateway.hub.stats.received["nats"] == 4
    finally:
        await publisher.stopService()


@pytest_twisted.ensureDeferred
async def test_bad_payloads_are_logged_counted_and_dropped(make_gateway, nats_server,
                                                          log_events):
    gateway = await nats_gateway(make_gateway, nats_server, prometheus_metrics_enabled=True)
    client = await gateway.ws(ALL)
    await client.welcome()
    publisher = await nats_server.client()
    try:
        await gateway.service.nats.flush()
        for bad in (b"{not json", b"[1, 2]", b'{"specversion":"9.9"}', b"\xff\xfe",
                    b"[" * 100_000, b'{"specversion":"1.0","id":1e999999}'):
            publisher.publish("rig", bad)
        publisher.publish("rig", json.dumps(greeting("n", "after")).encode())
        assert (await client.next_event())["id"] == "after"
    finally:
        await publisher.stopService()
    assert gateway.service.nats_source.counts == {"consumed": 1, "invalid": 6}
    warnings = [event for event in log_events
                if "Skipping a NATS message" in event.get("log_format", "")]
    assert len(warnings) == 6
    metrics = await (await gateway.request("GET", "/metrics", internal=True)).text()
    assert 'rig_consumed_events_failed_total{source="nats",topic="rig"} 6.0' in metrics
    assert 'rig_consumed_events_total{source="nats",topic="rig"} 7.0' in metrics
    assert 'rig_events_received_total{source="nats"} 1.0' in metrics


@pytest_twisted.ensureDeferred
async def test_two_clustered_nodes_share_the_queue_group_and_deliver_each_event_once(
        make_gateway, nats_server):
    from tests.support import two_node_cluster

    a, b = await two_node_cluster(partial(nats_gateway, make_gateway, nats_server),
                                  "nats-cluster")
    on_a, on_b = await a.ws(ALL), await b.ws(ALL)
    await on_a.welcome()
    await on_b.welcome()

    async def both_in_the_group():
        return await nats_server.subscribers("rig", "rig-nats-to-filter") == 2

    await eventually(both_in_the_group, what="both nodes in the queue group")
    publisher = await nats_server.client()
    try:
        for number in range(40):
            publisher.publish("rig", json.dumps(greeting("n", f"e{number}")).encode())
    finally:
        await publisher.stopService()
    expected = sorted(f"e{number}" for number in range(40))
    assert sorted([(await on_a.next_event())["id"] for _ in expected]) == expected
    assert sorted([(await on_b.next_event())["id"] for _ in expected]) == expected
    consumed = [a.service.nats_source.counts["consumed"], b.service.nats_source.counts["consumed"]]
    assert sum(consumed) == 40 and all(consumed), consumed  # once per group, shared by both
    await deferLater(reactor, 0.2)
    assert not on_a.messages.pending and not on_b.messages.pending  # nothing twice


# -- the proxy's nats target


@pytest_twisted.ensureDeferred
async def test_proxy_nats_target_publishes_the_request_as_a_cloudevent(make_gateway, nats_server):
    gateway = await nats_gateway(make_gateway, nats_server, proxy_config=(nats_api("jobs"),),
                                 cors="https://app.example")
    listener = await nats_server.client()
    try:
        seen = await subscribed(listener, "jobs")
        response = await gateway.request("POST", "/jobs?x=1", json=JOB)
        assert (response.code, await response.text()) == (202, "Accepted.")
        assert response.headers.getRawHeaders("access-control-allow-origin") == [
            "https://app.example"]
        await eventually(lambda: seen.messages, what="published")
        (subject, reply, payload, _headers), = seen.messages
        event = json.loads(payload)
        assert (subject, reply, event["id"], event["data"]) == ("jobs", None, "j1", {"n": 1})
        assert event["rig"]["method"] == "POST" and event["rig"]["query"] == "x=1"
        assert "correlation" not in event["rig"] and "target_partition" not in event["rig"]
        options = await gateway.request("OPTIONS", "/jobs")
        assert options.code == 204
        assert options.headers.getRawHeaders("access-control-allow-methods") == ["*"]
        for body in (b"not json", b'{"no": "specversion"}', b"[" * 10_000):
            refused = await gateway.request("POST", "/jobs", data=body,
                                            headers={"content-type": "application/json"})
            assert refused.code == 400, body[:20]
            assert (await refused.text()).startswith("Bad request:")
        big = dict(JOB, data="x" * 1_100_000)  # over nats-server's 1 MB max_payload
        too_large = await gateway.request("POST", "/jobs", json=big)
        assert too_large.code == 413
        await listener.flush()
        assert len(seen.messages) == 1 and gateway.service.nats.healthy  # still connected
    finally:
        await listener.stopService()


@pytest_twisted.ensureDeferred
async def test_proxy_nats_request_reply_answers_times_out_or_finds_nobody(make_gateway,
                                                                          nats_server):
    gateway = await nats_gateway(
        make_gateway, nats_server, proxy_config=(nats_api("jobs", response_from="nats"),),
        proxy_nats_response_timeout=0.5, prometheus_metrics_enabled=True)
    nobody = await gateway.request("POST", "/jobs", json=JOB)
    assert nobody.code == 503
    assert "jobs" in await nobody.text()
    worker = await nats_server.client()
    try:
        def answer(_subject, reply, payload, _headers):
            job = json.loads(payload)
            worker.publish(reply, json.dumps({"done": job["id"],
                                              "path": job["rig"]["path"]}).encode())

        sid = worker.subscribe("jobs", answer, queue="workers")
        await worker.flush()
        answered = await gateway.request("POST", "/jobs", json=JOB)
        assert answered.code == 200
        assert answered.headers.getRawHeaders("content-type")[0].startswith("application/json")
        assert json.loads(await answered.text()) == {"done": "j1", "path": "/jobs"}
        worker.unsubscribe(sid)
        worker.subscribe("jobs", Collected())  # listens, never answers
        await worker.flush()
        late = await gateway.request("POST", "/jobs", json=JOB)
        assert (late.code, await late.text()) == (504, "Timed out while waiting for the response.")
    finally:
        await worker.stopService()
    metrics = await (await gateway.request("GET", "/metrics", internal=True)).text()
    for status, count in (("unreachable", 1), ("ok", 1), ("response_timeout", 1)):
        assert (f'rig_proxy_requests_total{{method="POST",path="/jobs",response_from="nats",'
                f'status="{status}",target="nats"}} {count}.0') in metrics, status


@pytest_twisted.ensureDeferred
async def test_nats_targets_are_refused_when_nats_is_off(make_gateway):
    gateway = make_gateway(api_auth_tokens=("operator-token-1234",))
    auth = {"authorization": "Bearer operator-token-1234"}
    refused = await gateway.request("POST", "/v3/apis", internal=True, json=nats_api("jobs"),
                                    headers=auth)
    assert refused.code == 400
    assert "NATS_SERVERS" in await refused.text()
    api = nats_api("jobs bad")
    refused = await gateway.request("POST", "/v3/apis", internal=True, json=api, headers=auth)
    assert refused.code == 400


# -- NATS going away


@pytest_twisted.ensureDeferred
async def test_nats_down_at_start_then_restarted_never_stops_the_gateway(make_gateway, tmp_path):
    from tests.support import NatsServer

    server = NatsServer(str(tmp_path))  # a port is chosen, nothing listens yet
    gateway = make_gateway(nats_servers=parse_servers(server.address),
                           proxy_config=(nats_api("jobs"),))
    client = await gateway.ws(ALL)
    await client.welcome()
    health = json.loads(await (await gateway.request("GET", "/v3/health", internal=True)).text())
    assert health == {"status": "degraded", "checks": {"nats": "unavailable"}}
    assert (await gateway.request("POST", "/jobs", json=JOB)).code == 503
    try:
        for round_ in range(2):  # started late, then killed and started again
            await server.start()
            await eventually(lambda: gateway.service.nats.healthy, what="reconnected")
            health = json.loads(await (await gateway.request(
                "GET", "/v3/health", internal=True)).text())
            assert health == {"status": "ok", "checks": {"nats": "ok"}}
            await gateway.service.nats.flush()  # resubscribed
            publisher = await server.client()
            publisher.publish("rig", json.dumps(greeting("n", f"round{round_}")).encode())
            await publisher.stopService()
            assert (await client.next_event())["id"] == f"round{round_}"
            assert (await gateway.request("POST", "/jobs", json=JOB)).code == 202
            server.stop()
            await eventually(lambda: not gateway.service.nats.healthy, what="noticed")
    finally:
        server.stop()


@pytest_twisted.ensureDeferred
async def test_credentials_are_sent_and_never_logged(make_gateway, tmp_path, log_events):
    from tests.support import NatsServer

    server = NatsServer(str(tmp_path), ["--user", "rig", "--pass", "s3cret-pass"])
    await server.start()
    try:
        wrong = make_gateway(nats_servers=parse_servers(f"nats://rig:wrong-pass@{server.address}"))
        await eventually(lambda: any("refused" in str(event.get("error", ""))
                                     for event in log_events), what="refusal logged")
        assert not wrong.service.nats.healthy
        right = make_gateway(nats_servers=parse_servers(
            f"nats://rig:s3cret-pass@{server.address}"))
        await eventually(lambda: right.service.nats.healthy, what="authenticated")
    finally:
        server.stop()
    text = json.dumps([{key: str(value) for key, value in event.items()}
                       for event in log_events])
    assert "s3cret-pass" not in text and "wrong-pass" not in text


@pytest_twisted.ensureDeferred
async def test_two_gateway_processes_consume_each_message_once_for_the_cluster(
        processes, nats_server, tmp_path):
    """Real ``twistd rig`` processes configured by RIG's variables: a subscriber on each
    node gets every message once, whichever node the queue group handed it to."""
    from tests.support import WSClient, get_json, wait_for

    env = {"NATS_SERVERS": nats_server.address, "NATS_SOURCE_TOPICS": "events.>",
           "NATSTOFILTER_QUEUE_GROUP": "gateways"}
    a = await processes.node("a", str(tmp_path), "nats-cookie", **env).start(processes.pool)
    b = await processes.node("b", str(tmp_path), "nats-cookie", seeds=[a.cluster_address],
                             **env).start(processes.pool)

    async def interest_on_both():
        for node in (a, b):
            view = await get_json(processes.pool, node.url("/v3/cluster", internal=True))
            owners = [o for o, types in view["interest"].items() if "greeting" in types]
            if sorted(owners) != sorted([a.cluster_address, b.cluster_address]):
                return False
        return True

    clients = [processes.client(await WSClient.open(node.inbound, "/_rig/v1/connection/ws" + ALL))
               for node in (a, b)]
    for client in clients:
        await client.welcome()
    await wait_for(interest_on_both, 20, "interest replicated")

    async def nats_ready():
        for node in (a, b):
            health = await get_json(processes.pool, node.url("/v3/health", internal=True))
            if health["checks"].get("nats") != "ok":
                return False
        return True

    await wait_for(nats_ready, 20, "both nodes on NATS")

    async def both_in_the_group():
        return await nats_server.subscribers("events.>", "gateways") == 2

    await wait_for(both_in_the_group, 20, "both nodes in the queue group")
    publisher = await nats_server.client()
    try:
        for number in range(30):
            publisher.publish(f"events.n{number % 3}",
                              json.dumps(greeting("n", f"e{number}")).encode())
    finally:
        await publisher.stopService()
    expected = sorted(f"e{number}" for number in range(30))
    for client in clients:
        assert sorted([(await client.next_event())["id"] for _ in expected]) == expected
    consumed = []
    for node in (a, b):
        metrics = await get_json_text(processes.pool, node.url("/metrics", internal=True))
        consumed.append(sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                            if line.startswith('rig_consumed_events_total{source="nats"')))
    assert sum(consumed) == 30 and all(consumed), consumed


async def get_json_text(pool, url):
    import treq

    from tests.support import within

    response = await within(treq.get(url, pool=pool))
    return await within(response.text())


@pytest_twisted.ensureDeferred
async def test_a_clustered_node_joins_the_queue_group_only_once_it_knows_its_peers(
        make_gateway, nats_server, dead_port):
    gateway = await nats_gateway(
        make_gateway, nats_server, node_cookie="nats-cluster",
        cluster_listen="tcp:0:interface=127.0.0.1", cluster_seeds=(f"127.0.0.1:{dead_port}",),
        cluster_options={"join_timeout": 1.0})
    await gateway.service.nats.flush()
    assert not gateway.service.cluster.synced
    assert await nats_server.subscribers("rig", "rig-nats-to-filter") == 0

    async def in_the_group():
        return await nats_server.subscribers("rig", "rig-nats-to-filter") == 1

    await eventually(in_the_group, what="subscribed once synced")
    assert gateway.service.cluster.synced


@pytest_twisted.ensureDeferred
async def test_a_server_that_stops_answering_is_left_and_found_again(nats_server):
    import os
    import signal

    client = await nats_server.client(ping_interval=0.2, max_pings_out=2, connect_timeout=1.0)
    seen = await subscribed(client, "rig")
    try:
        os.kill(nats_server.process.pid, signal.SIGSTOP)  # alive, connected, silent
        try:
            await eventually(lambda: not client.healthy, what="the silent server given up")
            with pytest.raises(NatsUnavailable):
                client.publish("rig", b"x")
        finally:
            os.kill(nats_server.process.pid, signal.SIGCONT)
        await eventually(lambda: client.healthy, what="connected again")
        publisher = await nats_server.client()
        publisher.publish("rig", b"after")
        await publisher.stopService()
        await eventually(lambda: seen.messages, what="resubscribed")
        assert seen.messages[-1][2] == b"after"
    finally:
        await client.stopService()


@pytest_twisted.ensureDeferred
async def test_a_server_that_requires_tls_gets_tls(tmp_path, log_events):
    from twisted.internet.ssl import Certificate

    from rig.nats.client import NatsClient
    from tests.certs import make_certificate
    from tests.support import NatsServer

    files = make_certificate(tmp_path)
    server = NatsServer(str(tmp_path), ["--tls", "--tlscert", files.certfile,
                                        "--tlskey", files.keyfile])
    await server.start()
    trusted = NatsClient(reactor, parse_servers(server.address),
                         trust_root=Certificate.loadPEM(files.pem))
    untrusted = NatsClient(reactor, parse_servers(f"tls://{server.address}"))
    try:
        trusted.startService()
        untrusted.startService()
        seen = Collected()
        trusted.subscribe("rig", seen)
        await eventually(lambda: trusted.healthy, what="connected over TLS")
        await trusted.flush()
        trusted.publish("rig", b"private")
        await eventually(lambda: seen.messages, what="round trip over TLS")
        await eventually(lambda: any(
            event.get("server") == f"tls://{server.address}" and "retrying" in event.get(
                "log_format", "") for event in log_events), what="the untrusted attempt failed")
        assert not untrusted.healthy  # a certificate it cannot verify is refused
    finally:
        await trusted.stopService()
        await untrusted.stopService()
        server.stop()


@pytest_twisted.ensureDeferred
async def test_a_flood_of_bad_payloads_does_not_flood_the_log(make_gateway, nats_server,
                                                            log_events):
    gateway = await nats_gateway(make_gateway, nats_server)
    await gateway.service.nats.flush()
    publisher = await nats_server.client()
    try:
        for _ in range(2000):
            publisher.publish("rig", b"{not json")
        await publisher.flush()
    finally:
        await publisher.stopService()
    await eventually(lambda: gateway.service.nats_source.counts["invalid"] == 2000,
                     what="every bad message counted")
    warnings = [event for event in log_events
                if "Skipping a NATS message" in event.get("log_format", "")]
    assert [event["count"] for event in warnings] == [*range(1, 11), 1000, 2000]


@pytest_twisted.ensureDeferred
async def test_a_client_that_leaves_mid_request_is_forgotten(make_gateway, nats_server,
                                                           log_events):
    from twisted.internet.endpoints import TCP4ClientEndpoint
    from twisted.internet.protocol import Factory, Protocol

    gateway = await nats_gateway(
        make_gateway, nats_server, proxy_config=(nats_api("jobs", response_from="nats"),))
    worker = await nats_server.client()
    try:
        seen = await subscribed(worker, "jobs")  # listens, never answers
        body = json.dumps(JOB).encode()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", gateway.inbound_port)
        client = await endpoint.connect(Factory.forProtocol(Protocol))
        client.transport.write(b"POST /jobs HTTP/1.1\r\nHost: x\r\ncontent-type: application/json"
                               b"\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await eventually(lambda: seen.messages, what="the request reached NATS")
        assert gateway.service.nats.waiting == 1
        client.transport.loseConnection()  # gone before any reply
        await eventually(lambda: gateway.service.nats.waiting == 0,
                         what="the waiting request dropped")
    finally:
        await worker.stopService()
    assert not [event for event in log_events if event.get("log_failure")]
