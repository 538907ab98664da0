"""Graceful shutdown: stop accepting, close frontends, drain requests in progress, exit 0.

The in-process tests drive ``RigService.stopService`` (what twistd calls on
SIGTERM); the last test does it for real: a ``twistd rig`` process, systemd's
notify socket played by the test, and SIGTERM.
"""
import json
import os
import re
import sys

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import deferLater
from twisted.web.client import HTTPConnectionPool, ResponseNeverReceived

from rig.settings import env_names
from rig.testing import eventually as poll
from tests.support import NotifySocket, RawHTTPClient, WSClient, within

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def slow_api(backend_port):
    return {"id": "slow", "name": "slow",
            "proxy": {"target_url": "127.0.0.1", "port": backend_port},
            "version_data": {"default": {"endpoints": [
                {"id": "slow", "method": "GET", "path_regex": "/slow"}]}}}


def answer(request, status, body):
    """Finish a request a StubServer left hanging."""
    request.setResponseCode(status)
    request.write(body)
    request.finish()


class KeepOpenClient(RawHTTPClient):
    """Never closes by itself, so ``closed`` firing means the server closed.

    ``ended_cleanly`` is set only by a complete response (the last chunk, or
    the whole Content-Length), not by the connection going away.
    """

    ended_cleanly = False

    def _complete(self):
        self.ended_cleanly = True
        if not self.complete.called:
            self.complete.callback(self)


class SplitRequestClient(RawHTTPClient):
    """Sends the request head without its final blank line until told to."""

    def connectionMade(self):
        self.transport.write(self.request_bytes[:-2])

    def send_the_rest(self):
        self.transport.write(self.request_bytes[-2:])


def until(predicate, seconds, what):
    return poll(reactor, predicate, seconds, what, interval=0.01)


async def refused(port, seconds):
    """When a new connection to *port* is first refused (closed listeners refuse)."""
    deadline = reactor.seconds() + seconds
    while reactor.seconds() < deadline:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=1)
        try:
            connected = await within(endpoint.connect(protocol.Factory.forProtocol(
                protocol.Protocol)), 2)
        except ConnectionRefusedError:
            return reactor.seconds()
        connected.transport.abortConnection()
        await deferLater(reactor, 0.02)
    raise AssertionError(f"port {port} still accepts connections after {seconds} s")


def inbound_site(gateway):
    return gateway.service.getServiceNamed("inbound").factory


def stop(gateway):
    """Stop the gateway; a Deferred of how long that took, in seconds.

    Bounded by the gateway's own drain timeout. Not ``within()``: cancelling a
    MultiService's stop fires its DeferredList with results, hiding the timeout.
    """
    started = reactor.seconds()
    return gateway.service.stopService().addCallback(lambda _: reactor.seconds() - started)


# -- in process ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_drain_lets_a_proxied_request_finish(make_gateway, stub_server):
    backend = stub_server(lambda info: None)
    gateway = make_gateway(shutdown_drain_timeout=5.0,
                           proxy_config=(slow_api(backend.port.getHost().port),))
    port = gateway.inbound_port
    asking = gateway.request("GET", "/slow")
    await until(lambda: backend.hanging, 5, "request at the backend")
    stopping = stop(gateway)
    await refused(port, 2)
    assert not stopping.called  # the proxied request is still in flight
    answer(backend.hanging[0], 200, b"worth the wait")
    response = await asking
    assert response.code == 200
    assert await within(response.text()) == "worth the wait"
    assert await stopping < 2


@pytest_twisted.ensureDeferred
async def test_drain_timeout_closes_what_is_left(make_gateway, stub_server):
    backend = stub_server(lambda info: None)  # never answers
    gateway = make_gateway(shutdown_drain_timeout=0.5,
                           proxy_config=(slow_api(backend.port.getHost().port),))
    asking = gateway.request("GET", "/slow")
    await until(lambda: backend.hanging, 5, "request at the backend")
    assert 0.5 <= await stop(gateway) < 2.0
    with pytest.raises(ResponseNeverReceived):
        await asking


@pytest_twisted.ensureDeferred
async def test_idle_keep_alive_connection_closes_at_once(make_gateway):
    gateway = make_gateway(shutdown_drain_timeout=5.0)
    client = await KeepOpenClient.open(gateway.inbound_port, "GET", "/_rig/health")
    await within(client.complete)
    assert client.ended_cleanly and client.status == 200
    assert await stop(gateway) < 1
    await within(client.closed, 1)


@pytest_twisted.ensureDeferred
async def test_sse_stream_ends_then_the_server_closes_its_connection(make_gateway):
    gateway = make_gateway(shutdown_drain_timeout=5.0)
    client = await KeepOpenClient.open(gateway.inbound_port, "GET", "/_rig/v1/connection/sse")
    await client.welcome()
    stopping = stop(gateway)
    await within(client.closed, 2)
    assert client.ended_cleanly  # the last chunk came before the close
    assert await stopping < 2


async def stop_during_request(gateway, request_bytes):
    """Send the request line of *request_bytes*, begin the stop, then send the rest.

    Returns the client and the Deferred of the stop (its duration)."""
    client = SplitRequestClient(request_bytes)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", gateway.inbound_port)
    await within(endpoint.connect(protocol.Factory.forProtocol(lambda: client)))
    site = inbound_site(gateway)
    await until(lambda: any(channel.requests for channel in site._channels), 2,
                "request line at the server")
    stopping = stop(gateway)
    client.send_the_rest()
    return client, stopping


@pytest_twisted.ensureDeferred
async def test_request_begun_before_the_stop_is_answered_then_closed(make_gateway):
    """A request whose head was still arriving gets an answer with ``Connection: close``;
    an SSE connect then is refused (503), so the client reconnects to another node."""
    gateway = make_gateway(shutdown_drain_timeout=5.0)
    client, stopping = await stop_during_request(gateway, b"GET /_rig/v1/connection/sse"
                                                 b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    await within(client.head)
    assert client.status == 503
    assert client.headers["connection"] == "close"
    await within(client.closed, 2)
    assert await stopping < 2


@pytest_twisted.ensureDeferred
async def test_websocket_upgraded_during_the_drain_goes_away_without_holding_it_up(
        make_gateway):
    gateway = make_gateway(shutdown_drain_timeout=5.0)
    client, stopping = await stop_during_request(
        gateway,
        b"GET /_rig/v1/connection/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n")
    try:
        await within(client.head)
        assert client.status == 101
        assert await stopping < 1  # not the 5 s drain: the site let go of the connection
        await until(lambda: len(client.body) >= 4, 2, "a close frame")
        assert client.body[:1] == b"\x88"  # an unmasked close frame ...
        assert client.body[2:4] == (1001).to_bytes(2, "big")  # ... going away
    finally:
        client.disconnect()


@pytest_twisted.ensureDeferred
async def test_no_new_frontend_connections_while_closing(make_gateway):
    gateway = make_gateway()
    gateway.hub.closing = True
    ws = await gateway.ws()
    assert await ws.close_info() == (1001, "Going away.")
    sse = await gateway.sse()
    assert sse.status == 503
    response = await gateway.request("GET", "/_rig/v1/connection/longpolling")
    assert response.code == 503
    await within(response.text())
    assert not gateway.hub.connections


# -- a real twistd process ------------------------------------------------------


class RigProcess(protocol.ProcessProtocol):
    def __init__(self):
        self.output = []
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.output.append(data)

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback(reason.value)

    def text(self):
        return b"".join(self.output).decode("utf-8", "replace")


def child_environment(**settings):
    unwanted = {*env_names(), "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}
    environ = {name: value for name, value in os.environ.items() if name not in unwanted}
    environ.update(settings)
    return environ


@pytest_twisted.ensureDeferred
async def test_sigterm_drains_and_exits_zero(tmp_path, stub_server):  # noqa: PLR0915 (one timeline)
    backend = stub_server(lambda info: None)  # answered by the test, a second after SIGTERM
    apis = tmp_path / "apis.json"
    apis.write_text(json.dumps([slow_api(backend.port.getHost().port)]))
    notify = NotifySocket()
    notify_port = reactor.listenUNIXDatagram(str(tmp_path / "notify"), notify)
    rig = RigProcess()
    env = child_environment(
        INBOUND_PORT="tcp:0:interface=127.0.0.1", API_HTTP_PORT="tcp:0:interface=127.0.0.1",
        PROXY_CONFIG_FILE=str(apis), NOTIFY_SOCKET=str(tmp_path / "notify"),
        SHUTDOWN_DRAIN_TIMEOUT="10", LOG_LEVEL="info", LOG_FMT="json")
    process = reactor.spawnProcess(rig, TWISTD, [TWISTD, "--nodaemon", "--pidfile=", "rig"],
                                   env=env, path=str(tmp_path))
    pool = HTTPConnectionPool(reactor, persistent=False)
    clients = []
    try:
        ready = await notify.next(30)  # readiness comes from systemd's protocol, not polling
        assert ready["READY"] == "1"
        assert ready["MAINPID"] == str(process.pid)
        port = int(re.search(r"inbound on 127\.0\.0\.1:(\d+)", ready["STATUS"]).group(1))

        ws = await WSClient.open(port, "/_rig/v1/connection/ws")
        sse = await KeepOpenClient.open(port, "GET", "/_rig/v1/connection/sse")
        clients += [ws, sse]
        await ws.welcome()
        await sse.welcome()
        asking = treq.get(f"http://127.0.0.1:{port}/slow", pool=pool)
        await until(lambda: backend.hanging, 10, "slow request at the backend")

        process.signalProcess("TERM")
        sigterm = reactor.seconds()
        stopping = await notify.next(5)
        assert stopping["STOPPING"] == "1"
        stopping_at = reactor.seconds() - sigterm
        assert await within(ws.closed, 5) == (1001, "Going away.")
        ws_closed_at = reactor.seconds() - sigterm
        await within(sse.closed, 5)
        assert sse.ended_cleanly  # the stream's last chunk, then the server closed
        refused_at = await refused(port, 5) - sigterm
        assert not rig.ended.called  # still draining the proxied request

        await deferLater(reactor, max(0.0, sigterm + 1.0 - reactor.seconds()))
        answer(backend.hanging[0], 200, b"slow but complete")
        answered_at = reactor.seconds() - sigterm
        response = await within(asking, 10)
        assert response.code == 200
        assert await within(response.text()) == "slow but complete"

        ended = await within(rig.ended, 10)
        exited_at = reactor.seconds() - sigterm
        assert (ended.exitCode, ended.signal) == (0, None), rig.text()
        logged = [json.loads(line) for line in rig.text().splitlines()]  # JSON, every line
        assert any(event["message"].startswith("inbound: drained in") for event in logged)
        assert {event["level"] for event in logged} <= {"info", "warn", "error", "critical"}
        print(f"after SIGTERM: STOPPING=1 {stopping_at:.3f} s, WebSocket 1001 "
              f"{ws_closed_at:.3f} s, port refused {refused_at:.3f} s, backend answered "
              f"{answered_at:.3f} s, exit 0 {exited_at:.3f} s")
        assert exited_at - answered_at < 5
    finally:
        for client in clients:
            client.disconnect()
        if not rig.ended.called:
            process.signalProcess("KILL")
            await within(rig.ended, 10)
        print(rig.text())
        await defer.maybeDeferred(notify_port.stopListening)
        await pool.closeCachedConnections()
