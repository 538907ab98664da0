"""Hostile input (issue 13): a clear 4xx or a clean close, never a 500, a hang or a traceback."""
import gc
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


def test_refused_json_leaves_no_garbage_for_the_collector():
    """Refusing a document makes no reference cycle (an exception held by a frame of its
    own traceback): a flood of malformed subscriptions would otherwise feed the collector."""
    gc.collect()
    gc.disable()
    try:
        for text in (DEEP, "[1e999]", "NaN", b"\xff", "1" * 5000, "{", "can't"):
            with pytest.raises(JSONInputError):
                loads(text)
        assert gc.collect() == 0
    finally:
        gc.enable()


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


def api_to(target, port, use_env=False, api_id="a"):
    return {"id": api_id, "name": api_id,
            "proxy": {"target_url": target, "port": port, "use_env": use_env},
            "version_data": {"default": {"endpoints": [
                {"id": "e", "method": "GET", "path_regex": f"/{api_id}"}]}}}


async def post_api(gateway, api):
    response = await gateway.request("POST", "/v3/apis", internal=True, json=api)
    return response.code, await within(response.json())


@pytest_twisted.ensureDeferred
async def test_use_env_reads_only_allowed_variables_and_never_logs_their_value(
        make_gateway, stub_server, log_events):
    from rig.service import RigService
    from rig.settings import Settings
    from tests.support import Gateway

    backend = stub_server(lambda info: (200, b"via the variable"))
    environ = {"BACKEND_HOST": "127.0.0.1", "JWT_SECRET_KEY": "s3cret-value",
               "OTHER_HOST": "127.0.0.1", "DEAD_HOST": "127.0.0.1"}
    settings = Settings(inbound_listen="tcp:0:interface=127.0.0.1",
                        api_listen="tcp:0:interface=127.0.0.1", jwt_secret_key="s3cret-value",
                        proxy_use_env_allowed=("BACKEND_HOST", "DEAD_*", "JWT_*"))
    from twisted.internet import reactor
    from twisted.web.client import HTTPConnectionPool

    service = RigService.build(settings, reactor, environ=environ)
    service.startService()
    gateway = Gateway(service, HTTPConnectionPool(reactor, persistent=False))
    try:
        port = backend.port.getHost().port
        code, body = await post_api(gateway, api_to("JWT_SECRET_KEY", port, True, "secret"))
        assert code == 400 and "PROXY_USE_ENV_ALLOWED does not allow" in json.dumps(body)
        code, body = await post_api(gateway, api_to("OTHER_HOST", port, True, "other"))
        assert code == 400 and "'OTHER_HOST'" in json.dumps(body)
        assert (await post_api(gateway, api_to("BACKEND_HOST", port, True, "ok")))[0] == 201
        response = await gateway.request("GET", "/ok")
        assert (response.code, await within(response.text())) == (200, "via the variable")
        from tests.support import refusing_port

        with refusing_port() as dead:
            assert (await post_api(gateway, api_to("DEAD_HOST", dead, True, "dead")))[0] == 201
            response = await gateway.request("GET", "/dead")
        assert response.code == 502
        await within(response.text())
        lines = [e for e in log_events if "Proxy to" in e.get("log_format", "")]
        assert lines and lines[-1]["url"] == f"http://$DEAD_HOST:{dead}/dead"
        text = json.dumps([{k: str(v) for k, v in e.items()} for e in log_events])
        assert "s3cret-value" not in text
    finally:
        await gateway.stop()


def test_a_use_env_api_at_load_names_the_variable_in_one_line():
    from rig.settings import Settings, SettingsError

    api = api_to("NODE_COOKIE", 80, True, "leak")
    with pytest.raises(SettingsError) as info:
        Settings.from_mapping({}, {"PROXY_CONFIG_FILE": json.dumps([api]),
                                   "PROXY_USE_ENV_ALLOWED": "NODE_*", "NODE_COOKIE": "c"})
    assert str(info.value) == (
        "PROXY_CONFIG_FILE: API 'leak': proxy.target_url names the environment variable"
        " 'NODE_COOKIE', which PROXY_USE_ENV_ALLOWED does not allow")
    with pytest.raises(SettingsError, match="own internal listener"):
        Settings.from_mapping({}, {"PROXY_CONFIG_FILE": json.dumps([api_to("localhost", 4010)])})


@pytest_twisted.ensureDeferred
async def test_no_api_may_point_at_the_gateway_itself(gateway):
    internal = gateway.service.address("internal").port
    inbound = gateway.inbound_port
    for target, port, listener in (("127.0.0.1", internal, "internal"),
                                   ("localhost", internal, "internal"),
                                   ("http://[::1]", internal, "internal"),
                                   ("0.0.0.0", inbound, "inbound")):
        code, body = await post_api(gateway, api_to(target, port))
        assert code == 400, target
        assert f"own {listener} listener" in json.dumps(body)
    assert (await post_api(gateway, api_to("127.0.0.1", 9)))[0] == 201
    response = await gateway.request("PUT", "/v3/apis/a", internal=True,
                                     json=api_to("127.0.0.1", internal))
    assert response.code == 400  # an existing route cannot be re-pointed at it either
    await within(response.text())
    response = await gateway.request("GET", "/v3/apis")  # on the public port: not served
    assert response.code == 404
    await within(response.text())


def test_a_peers_internal_port_is_refused():
    from rig.proxy.targets import TargetPolicy

    policy = TargetPolicy(own_ports=lambda: {4010: "internal"}, internal_ports=lambda: {4010},
                          peer_hosts=lambda: {"10.0.0.6"}, local_names=frozenset({"gw1"}))
    assert policy.errors({"target_url": "10.0.0.6", "port": 4010}) == [
        {"target_url": "is a cluster peer's internal port (10.0.0.6:4010)"}]
    assert policy.errors({"target_url": "https://gw1", "port": 4010}) == [
        {"target_url": "is this gateway's own internal listener (port 4010)"}]
    assert policy.errors({"target_url": "10.0.0.6", "port": 8080}) == []
    assert policy.errors({"target_url": "backend", "port": 4010}) == []


class _PingFlood:
    """A WebSocket client that sends pings and never reads what comes back."""

    def __init__(self, port, pings):
        import base64
        import os

        from twisted.internet import defer, protocol

        self.pings = pings
        self.upgraded = defer.Deferred()
        self.closed = defer.Deferred()
        key = base64.b64encode(os.urandom(16)).decode()
        self.request = (f"GET /_rig/v1/connection/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
        flood = self

        class Client(protocol.Protocol):
            buffer = b""

            def connectionMade(self):
                self.transport.write(flood.request)

            def dataReceived(self, data):
                self.buffer += data
                if b"\r\n\r\n" in self.buffer and not flood.upgraded.called:
                    self.transport.pauseProducing()  # never read again
                    flood.upgraded.callback(self.buffer.split(b" ", 2)[1])
                    ping = b"\x89\xfd" + b"\x00\x00\x00\x00" + b"p" * 125  # masked, zero mask
                    self.transport.write(ping * flood.pings)

            def connectionLost(self, reason):
                flood.closed.callback(None)

        self.protocol = Client()


@pytest_twisted.ensureDeferred
async def test_a_ping_flood_is_bounded_by_the_send_queue_limit(make_gateway, log_events):
    from twisted.internet import reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    from tests.test_cluster import eventually

    limit = 65536
    gateway = make_gateway(send_queue_limit=limit)
    flood = _PingFlood(gateway.inbound_port, 60_000)  # 7.6 MB of pongs if all answered
    await within(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", gateway.inbound_port),
                                 flood.protocol))
    assert await within(flood.upgraded) == b"101"
    await eventually(lambda: gateway.hub.stats.slow_clients["ws"] == 1, 20, "dropped as too slow")
    (dropped,) = [e for e in log_events if e.get("reason") == "too slow"]
    assert dropped["queued"] <= limit + 200  # the limit and the one pong that crossed it
    flood.protocol.transport.abortConnection()
    assert gateway.hub.connections == {}


@pytest_twisted.ensureDeferred
async def test_one_event_larger_than_the_limit_reaches_a_client_that_reads(make_gateway):
    gateway = make_gateway(send_queue_limit=65536)
    client = await gateway.sse("?subscriptions=" + quote(json.dumps([{"eventType": "big"}])))
    await client.welcome()
    big = {"specversion": "1.0", "type": "big", "source": "t", "id": "big-1",
           "data": {"blob": "x" * 6_000_000}}
    await gateway.publish(big)
    received = await client.next_event()
    assert received["id"] == "big-1" and len(received["data"]["blob"]) == 6_000_000
    assert gateway.hub.stats.slow_clients["sse"] == 0


@pytest_twisted.ensureDeferred
async def test_a_catastrophic_path_regex_cannot_stall_the_reactor(gateway, stub_server):
    import time

    backend = stub_server(lambda info: (200, b"ok"))
    api = api_to("127.0.0.1", backend.port.getHost().port, api_id="evil")
    api["version_data"]["default"]["endpoints"][0]["path_regex"] = "/(a+)+$"
    assert (await post_api(gateway, api))[0] == 201
    started = time.monotonic()
    response = await gateway.request("GET", "/" + "a" * 40 + "b")  # exponential for backtracking
    assert response.code == 404
    await within(response.text())
    assert time.monotonic() - started < 0.5
    for pattern, reason in (("/(a)\\1", "invalid escape sequence"),
                            ("/(?=x)", "invalid perl operator"), ("/(", "missing )")):
        api["version_data"]["default"]["endpoints"][0]["path_regex"] = pattern
        api["id"] = api["name"] = "bad"
        code, body = await post_api(gateway, api)
        assert code == 400
        (message,) = body["bad/e"]
        assert message["path_regex"].startswith("is not a valid regular expression: ")
        assert reason in message["path_regex"]


def test_a_connection_token_in_a_logged_path_keeps_8_characters():
    from rig.httputil import redacted_path

    token = "AQ9yaWdAMTI3LjAuMC4xZ2QpAAAAAAAAAAEAbrCjP9i5Yg=="
    assert redacted_path(f"/_rig/v1/connection/sse/{token}/subscriptions".encode()) == (
        b"/_rig/v1/connection/sse/AQ9yaWdA.../subscriptions")
    assert redacted_path("/_rig/v1/connection/ws") == "/_rig/v1/connection/ws"
    assert redacted_path("/books/12") == "/books/12"


def test_a_flood_of_one_kind_of_message_is_logged_a_few_times_per_window():
    from twisted.logger import formatEvent

    from rig.logs import RepeatFilter

    written = []
    observer = RepeatFilter(written.append, window=10.0, burst=3)

    def emit(at, port, template="EMFILE recovery: Closed socket from {address}"):
        observer({"log_format": template, "address": ("127.0.0.1", port), "log_time": at,
                  "log_namespace": "twisted.internet.tcp.Port", "log_level": LogLevel.info})

    for tick in range(580):  # what the open-file limit produced in a few seconds
        emit(tick / 100, 1000 + tick)
    emit(3.0, 1, template="Something else from {address}")
    emit(12.0, 9999)
    assert [e["address"][1] for e in written] == [1000, 1001, 1002, 1, 9999]
    assert formatEvent(written[-1]).endswith(
        "(577 more like this in the 10 s before were not logged)")


@pytest_twisted.ensureDeferred
async def test_at_the_open_file_limit_the_accept_error_is_logged_rarely(tmp_path):
    """A real process with a tiny open-file limit, flooded with connections."""
    import subprocess
    import sys

    from twisted.internet import reactor
    from twisted.internet.task import deferLater

    from tests.support import TWISTD, NotifySocket, listening_ports

    notify = NotifySocket()
    notify_port = reactor.listenUNIXDatagram(str(tmp_path / "notify"), notify)
    ephemeral = "tcp:0:interface=127.0.0.1"
    env = {"INBOUND_PORT": ephemeral, "API_HTTP_PORT": ephemeral, "PATH": "/usr/bin:/bin",
           "LOG_FMT": "json", "NOTIFY_SOCKET": str(tmp_path / "notify")}

    log = open(tmp_path / "rig.log", "wb")
    process = subprocess.Popen(  # 64 open files at most: the flood below runs out
        ["/bin/sh", "-c", 'ulimit -n 64 && exec "$0" --nodaemon --pidfile= rig', TWISTD],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    import socket

    held = []
    try:
        inbound = listening_ports((await notify.ready(30))["STATUS"])["inbound"]
        held.append(socket.create_connection(("127.0.0.1", inbound), timeout=1))
        for _ in range(300):  # far beyond the limit: the backlog fills, accept fails
            try:
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", inbound))
                held.append(sock)
            except OSError:
                break
        await deferLater(reactor, 3.0)
    finally:
        for sock in held:
            sock.close()
        process.terminate()
        process.wait(timeout=10)
        await notify_port.stopListening()
    lines = [json.loads(line) for line in (tmp_path / "rig.log").read_text().splitlines()
             if line.startswith("{")]
    recovery = [line for line in lines if line["message"].startswith("EMFILE recovery")]
    assert 1 <= len(recovery) <= 10, len(recovery)  # a burst of them, then silence
    assert sys.platform.startswith("linux")


@pytest_twisted.ensureDeferred
async def test_an_error_quoting_a_lone_surrogate_is_still_a_400(gateway, log_events):
    """Found by the fuzz: a message quoting the client's "\\ud800" could not be encoded."""
    response = await gateway.request("GET", "/_rig/v1/connection/sse?subscriptions="
                                     + quote('"\\ud800"'))
    assert response.code == 400
    assert "\\ud800" in await within(response.text())
    assert failures(log_events) == []


KEY_HEADER = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"


@pytest.mark.parametrize("headers, status, method", [
    ("Sec-WebSocket-Version: 13\r\n", b"400", "GET"),  # no key
    ("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 7\r\n", b"400", "GET"),
    ("Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n", b"400", "GET"),
    (f"{KEY_HEADER}{KEY_HEADER}Sec-WebSocket-Version: 13\r\n", b"400", "GET"),  # two keys
    (f"Host: y\r\n{KEY_HEADER}Sec-WebSocket-Version: 13\r\n", b"400", "GET"),  # two hosts
    (f"{KEY_HEADER}Sec-WebSocket-Version: 13\r\n", b"405", "HEAD"),  # a valid upgrade, by HEAD
])
@pytest_twisted.ensureDeferred
async def test_a_bad_websocket_upgrade_is_answered_and_closed_at_once(gateway, headers, status,
                                                                      method):
    """The handshake completes or fails within the call that starts it (there is no
    open-handshake timer to wait for): the client gets an error and a closed socket."""
    from twisted.internet import defer, protocol, reactor
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    class Client(protocol.Protocol):
        def __init__(self):
            self.received = b""
            self.closed = defer.Deferred()

        def connectionMade(self):
            self.transport.write(
                (f"{method} /_rig/v1/connection/ws HTTP/1.1\r\nHost: x\r\n"
                 f"Upgrade: websocket\r\nConnection: Upgrade\r\n{headers}\r\n").encode())

        def dataReceived(self, data):
            self.received += data

        def connectionLost(self, reason):
            self.closed.callback(None)

    client = Client()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", gateway.inbound_port), client)
    await within(client.closed, 3)
    assert client.received.split(b" ", 2)[1] == status
    assert gateway.hub.connections == {}
