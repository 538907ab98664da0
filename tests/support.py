"""Real clients for end-to-end tests: raw HTTP/SSE, autobahn WebSocket, treq."""
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import quote

import attrs
import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater
from twisted.web.client import HTTPConnectionPool

from rig.service import RigService
from rig.settings import Settings
from rig.subscriptions.extractors import parse_extractors
from rig.testing import eventually

TIMEOUT = 5.0

GREETING_EXTRACTORS = {
    "greeting": {
        "name": {
            "stable_field_index": 1,
            "event": {"json_pointer": "/data/name"},
            "jwt": {"json_pointer": "/username"},
        }
    },
    "person.create": {
        "name": {"stable_field_index": 0, "event": {"json_pointer": "/data/name"}},
        "age": {"stable_field_index": 1, "event": {"json_pointer": "/data/age"}},
    },
}


def within(deferred, seconds=TIMEOUT):
    """Bound every wait, so a broken gateway fails the test instead of hanging it."""
    return deferred.addTimeout(seconds, reactor)


def subs_query(subscriptions):
    return quote(json.dumps(subscriptions), safe="")


def greeting(name, event_id="1", version="1.0", **extra):
    event = {"specversion": version, "type": "greeting", "source": "test", "id": event_id,
             "data": {"name": name}}
    event.update(extra)
    return event


@attrs.define
class Gateway:
    """A gateway started on ephemeral loopback ports, with clients that it cleans up."""

    service: RigService
    pool: HTTPConnectionPool
    clients: list = attrs.Factory(list)

    @classmethod
    def start(cls, **overrides):
        swim_config = overrides.pop("swim_config", None)
        cluster_options = overrides.pop("cluster_options", None)
        settings = Settings(
            inbound_listen="tcp:0:interface=127.0.0.1",
            api_listen="tcp:0:interface=127.0.0.1",
            extractors=parse_extractors(overrides.pop("extractors", GREETING_EXTRACTORS)),
            **overrides,
        )
        service = RigService.build(settings, reactor, swim_config=swim_config,
                                   cluster_options=cluster_options)
        service.startService()
        return cls(service, HTTPConnectionPool(reactor, persistent=False))

    @property
    def hub(self):
        return self.service.hub

    @property
    def inbound_port(self):
        return self.service.address("inbound").port

    def url(self, path, internal=False):
        port = self.service.address("internal" if internal else "inbound").port
        return f"http://127.0.0.1:{port}{path}"

    def request(self, method, path, internal=False, **kwargs):
        return within(treq.request(method, self.url(path, internal), pool=self.pool, **kwargs))

    async def publish(self, event, **kwargs):
        headers = kwargs.pop("headers", {"content-type": "application/json"})
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        response = await self.request("POST", "/_rig/v1/events", data=body, headers=headers,
                                      **kwargs)
        text = await within(response.text())
        assert response.code == 202, (response.code, text)
        return response

    async def sse(self, query="", version="1.1", headers=()):
        client = await RawHTTPClient.open(self.inbound_port, "GET",
                                          f"/_rig/v1/connection/sse{query}", version, headers)
        self.clients.append(client)
        return client

    async def ws(self, query=""):
        client = await WSClient.open(self.inbound_port, f"/_rig/v1/connection/ws{query}")
        self.clients.append(client)
        return client

    async def stop(self):
        for client in self.clients:
            client.disconnect()
        if self.service.running:  # a test may have stopped it already
            await self.service.stopService()
        await self.pool.closeCachedConnections()


async def two_node_cluster(start, cookie):
    """Two gateways, ``await start(**overrides)`` each, in one cluster with fast SWIM
    timers; returns them once both are alive to each other."""
    from rig.cluster.membership import SwimConfig

    fast = SwimConfig(probe_interval=0.2, probe_timeout=0.1, push_pull_interval=1.0)
    common = {"node_cookie": cookie, "swim_config": fast,
              "cluster_listen": "tcp:0:interface=127.0.0.1"}
    a = await start(**common)
    b = await start(cluster_seeds=(a.service.cluster.links.address,), **common)

    async def clustered():
        return len([m for m in a.service.cluster.members() if m.state == "alive"]) == 2

    await eventually(reactor, clustered, 10.0, "two-node cluster")
    return a, b


class WelcomeMixin:
    async def welcome(self):
        """Read the two welcome events; return (connection token, subscriptions set)."""
        created = await self.next_event()
        assert created["type"] == "rig.connection.create"
        subscriptions = await self.next_event()
        assert subscriptions["type"] == "rig.subscriptions_set"
        return created["data"]["connection_token"], subscriptions["data"]


class SSEReader(WelcomeMixin):
    """A response body as it arrives (``body``), parsed as SSE: ``messages`` yields one
    dict per message (``comment``, ``id``, ``event``, ``data``) in arrival order."""

    def __init__(self):
        self.body = b""
        self.messages = defer.DeferredQueue()
        self._sse_buffer = b""

    def _body(self, data):
        self.body += data
        self._sse_buffer += data
        while b"\n\n" in self._sse_buffer:
            block, self._sse_buffer = self._sse_buffer.split(b"\n\n", 1)
            message = {}
            for line in block.decode("utf-8").split("\n"):
                name, _, value = line.partition(": ")
                if name == "data":
                    message["data"] = message.get("data", "") + value
                else:
                    message[name or "comment"] = value
            if "data" in message:
                message["data"] = json.loads(message["data"])
            self.messages.put(message)

    async def next_message(self, skip_comments=True):
        while True:
            message = await within(self.messages.get())
            if not (skip_comments and "comment" in message):
                return message

    async def next_event(self):
        """The next CloudEvent on the stream (heartbeats skipped)."""
        return (await self.next_message())["data"]


class RawHTTPClient(SSEReader, protocol.Protocol):
    """Sends one request and exposes the response head and (de-chunked) body as it arrives.

    The body is parsed as SSE (see :class:`SSEReader`).
    """

    def __init__(self, request_bytes):
        super().__init__()
        self.request_bytes = request_bytes
        self.head = defer.Deferred()
        self.status = None
        self.headers = {}
        self.raw_body = b""
        self.closed = defer.Deferred()
        self.complete = defer.Deferred()
        self._buffer = b""
        self._chunked = False
        self._head_done = False

    @classmethod
    async def open(cls, port, method, path, version="1.1", headers=()):
        lines = [f"{method} {path} HTTP/{version}", f"Host: 127.0.0.1:{port}"]
        lines += [f"{name}: {value}" for name, value in headers]
        request_bytes = ("\r\n".join(lines) + "\r\n\r\n").encode()
        client = cls(request_bytes)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        await within(endpoint.connect(protocol.Factory.forProtocol(lambda: client)))
        await within(client.head)
        return client

    def connectionMade(self):
        self.transport.write(self.request_bytes)

    def dataReceived(self, data):
        self._buffer += data
        if not self._head_done:
            if b"\r\n\r\n" not in self._buffer:
                return
            head, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            self.status = int(status_line.split()[1])
            for line in header_lines:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
            self._chunked = self.headers.get("transfer-encoding") == "chunked"
            self._head_done = True
            self.head.callback(self)
        self._consume()

    def _consume(self):
        if not self._chunked:
            self._body(self._buffer)
            self._buffer = b""
            length = self.headers.get("content-length")
            if length is not None and len(self.body) >= int(length):
                self._complete()
            return
        while True:
            size_line, sep, rest = self._buffer.partition(b"\r\n")
            if not sep:
                return
            size = int(size_line, 16)
            if len(rest) < size + 2:
                return
            self._body(rest[:size])
            self._buffer = rest[size + 2:]
            if size == 0:
                self._complete()
                return

    def _complete(self):
        if not self.complete.called:
            self.complete.callback(self)
        self.transport.loseConnection()

    def response_body(self):
        """The whole body of a finished (non-streaming) response."""
        return within(self.complete).addCallback(lambda _: self.body)

    def connectionLost(self, reason):
        if not self.head.called:
            self.head.errback(reason)
        if not self.complete.called:
            self.complete.callback(self)
        self.closed.callback(None)

    def disconnect(self):
        if self.transport is not None:
            self.transport.loseConnection()


class _WSProtocol(WebSocketClientProtocol):
    def onOpen(self):
        self.factory.client.opened.callback(self)

    def onMessage(self, payload, isBinary):
        self.factory.client.messages.put(json.loads(payload))

    def onPing(self, payload):
        self.factory.client.pings += 1
        super().onPing(payload)

    def onClose(self, wasClean, code, reason):
        client = self.factory.client
        if not client.opened.called:
            client.opened.callback(self)
        if not client.closed.called:
            client.closed.callback((self.remoteCloseCode, self.remoteCloseReason))


class WSClient(WelcomeMixin):
    """An autobahn WebSocket client collecting the server's messages."""

    def __init__(self):
        self.opened = defer.Deferred()
        self.closed = defer.Deferred()
        self.messages = defer.DeferredQueue()
        self.pings = 0
        self.protocol = None

    @classmethod
    async def open(cls, port, path):
        client = cls()
        factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}{path}")
        factory.protocol = _WSProtocol
        factory.client = client
        factory.setProtocolOptions(autoPingInterval=0)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        await within(endpoint.connect(factory))
        client.protocol = await within(client.opened)
        return client

    async def next_event(self):
        return await within(self.messages.get())

    async def close_info(self):
        return await within(self.closed)

    def send_text(self, text):
        self.protocol.sendMessage(text.encode())

    def disconnect(self):
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.abortConnection()


def make_jwt(claims=None, secret="mysecret", algorithm="HS256", lifetime=7200.0, **extra):
    """An HS256 token (by default) expiring *lifetime* seconds from now."""
    import time

    import jwt as pyjwt

    payload = {"exp": time.time() + lifetime}
    payload.update(claims or {})
    payload.update(extra)
    return pyjwt.encode(payload, secret, algorithm=algorithm)


class StubServer:
    """A real HTTP server on loopback answering with a function; records requests.

    ``answer(request_info)`` returns (status, body bytes), or None to never answer.
    """

    def __init__(self, answer):
        from twisted.web import http, resource, server

        stub = self
        self.open_connections = set()  # the HTTP channels of connections still open

        class _Channel(http.HTTPChannel):
            def connectionMade(self):
                super().connectionMade()
                stub.open_connections.add(self)

            def connectionLost(self, reason):
                stub.open_connections.discard(self)
                super().connectionLost(reason)

        class _Resource(resource.Resource):
            isLeaf = True

            def render(self, request):
                request.content.seek(0)
                info = {
                    "method": request.method.decode(),
                    "path": request.path.decode(),
                    "uri": request.uri.decode(),
                    "headers": {k.decode().lower(): v[0].decode()
                                for k, v in request.requestHeaders.getAllRawHeaders()},
                    "body": request.content.read(),
                }
                stub.requests.append(info)
                outcome = stub.answer(info)
                if outcome is None:
                    stub.hanging.append(request)
                    return server.NOT_DONE_YET
                status, body = outcome
                request.setResponseCode(status)
                return body

        self.answer = answer
        self.requests = []
        self.hanging = []
        self.site = server.Site(_Resource(), parsePOSTFormSubmission=False)  # bodies as sent
        self.site.protocol = _Channel
        self.port = reactor.listenTCP(0, self.site, interface="127.0.0.1")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port.getHost().port}/check"

    def last_query(self):
        from urllib.parse import parse_qsl, urlsplit

        return dict(parse_qsl(urlsplit(self.requests[-1]["uri"]).query))

    async def stop(self):
        for request in self.hanging:
            if not request.finished and request.channel is not None:
                request.channel.transport.abortConnection()
        await defer.maybeDeferred(self.port.stopListening)


class ServerProcess:
    """Runs a server binary on a free port; can be killed and restarted on the same port.

    The servers cannot pick a port themselves, so a port is chosen first; should another
    process take it in between, the first start chooses again.
    """

    executable = None  # the binary's name, which .ci/run installs

    def __init__(self, workdir):
        self.port = self._free_port()
        self.workdir = workdir
        self.process = None
        self._started = False

    @staticmethod
    def _free_port():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    def command(self, executable):
        raise NotImplementedError

    async def probe(self):
        """Returns once the server accepts connections; raises while it does not."""
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=2)
        connected = await endpoint.connect(protocol.Factory.forProtocol(protocol.Protocol))
        connected.transport.loseConnection()

    async def start(self):
        for _attempt in range(5):
            if await self._run():
                self._started = True
                return
            if self._started:
                break  # a restart keeps its port: the tests point at it
            self.port = self._free_port()
        raise AssertionError(f"{self.executable} did not start")

    async def _run(self):
        import shutil

        executable = shutil.which(self.executable)
        assert executable, f"{self.executable} is not installed (.ci/run installs it)"
        self.process = subprocess.Popen(self.command(executable), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        for _ in range(100):
            if self.process.poll() is not None:
                return False  # it could not listen there
            try:
                await self.probe()
            except Exception:
                await deferLater(reactor, 0.05)
                continue
            return True
        self.stop()
        return False

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


class RedisServer(ServerProcess):
    """A real ``redis-server`` with no persistence; *options* are extra arguments
    (``--requirepass``); with *tls* (a tests.certs.CertFiles) it speaks only TLS."""

    executable = "redis-server"

    def __init__(self, workdir, options=(), tls=None):
        super().__init__(workdir)
        self.options = list(options)
        self.tls = tls

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, executable):
        ports = ["--port", str(self.port)]
        if self.tls is not None:
            ports = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file",
                     self.tls.certfile, "--tls-key-file", self.tls.keyfile,
                     "--tls-ca-cert-file", self.tls.certfile, "--tls-auth-clients", "no"]
        return [executable, *ports, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self.workdir, *self.options]

    async def probe(self):
        if self.tls is not None or self.options:
            await super().probe()
            return
        client = await self.client()
        await client.disconnect()

    async def client(self):
        import txredisapi

        return await txredisapi.Connection("127.0.0.1", self.port, reconnect=False,
                                           convertNumbers=False, connectTimeout=2)


class NatsServer(ServerProcess):
    """A real ``nats-server`` (core NATS, no JetStream); *options* are extra arguments
    (TLS, authorization)."""

    executable = "nats-server"

    def __init__(self, workdir, options=()):
        super().__init__(workdir)
        self.options = list(options)
        self.monitor_port = self._free_port()

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def command(self, executable):
        return [executable, "-a", "127.0.0.1", "-p", str(self.port),
                "-m", str(self.monitor_port), *self.options]

    async def subscribers(self, subject, queue=None):
        """How many client subscriptions the server holds on *subject* (in *queue*),
        from its monitoring endpoint: what the server knows, not what a client believes."""
        response = await within(treq.get(
            f"http://127.0.0.1:{self.monitor_port}/subsz?subs=1&limit=100000"))
        listing = json.loads(await within(response.content()))
        return sum(1 for sub in listing.get("subscriptions_list") or ()
                   if sub.get("subject") == subject and sub.get("qgroup") == queue)

    async def probe(self):
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=2)
        connected = await endpoint.connect(protocol.Factory.forProtocol(protocol.Protocol))
        connected.transport.loseConnection()

    async def client(self, **options):
        """A started NatsClient (the gateway's own) connected to this server."""
        from rig.nats.client import NatsClient, parse_servers

        client = NatsClient(reactor, parse_servers(self.address), name="test", **options)
        client.startService()
        await eventually(reactor, lambda: client.healthy, 10.0, "test client connected")
        return client


TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


@contextlib.contextmanager
def refusing_port():
    """A loopback port that refuses connections for as long as the block runs: bound, so
    nothing else can take it, and not listening."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]
    finally:
        sock.close()


class NotifySocket(protocol.DatagramProtocol):
    """The test's stand-in for systemd: collects ``NAME=value`` datagrams."""

    def __init__(self):
        self.messages = defer.DeferredQueue()

    def datagramReceived(self, datagram, address):
        lines = datagram.decode("utf-8").splitlines()
        self.messages.put(dict(line.split("=", 1) for line in lines if line))

    def next(self, seconds):
        return within(self.messages.get(), seconds)

    async def ready(self, seconds=30):
        """The next READY=1 message (STOPPING and others before it are skipped)."""
        while True:
            message = await self.next(seconds)
            if message.get("READY") == "1":
                return message


def listening_ports(status):
    """``{"inbound": port, "internal": port}`` from the STATUS of a READY=1 message."""
    return {name: int(port) for name, port in re.findall(r"(\w+) on [^ ,]*:(\d+)", status)}


class Node:
    """A ``twistd rig`` process on loopback ports it picks itself (port 0, so no two
    tests can race for one): it says where when it tells systemd (played by the
    test) that it is ready, which is once it has its cluster peers' state."""

    def __init__(self, name, workdir, cookie, seeds=(), **env):
        self.name = name
        self.seeds = list(seeds)
        self.workdir = workdir
        self.cookie = cookie
        self.env = env
        self.process = None
        self.inbound = self.api = self.cluster_address = None
        self._notify = NotifySocket()
        self._notify_path = os.path.join(workdir, f"{name}.notify")
        self._notify_port = None

    async def start(self, pool=None):
        """Start (or restart) the process; returns once it is ready, its ports known."""
        if self._notify_port is None:
            self._notify_port = reactor.listenUNIXDatagram(self._notify_path, self._notify)
        ephemeral = "tcp:0:interface=127.0.0.1"
        env = dict(os.environ, INBOUND_PORT=ephemeral, API_HTTP_PORT=ephemeral,
                   CLUSTER_PORT=ephemeral, CLUSTER_SEEDS=",".join(self.seeds),
                   NODE_HOST="127.0.0.1", NODE_COOKIE=self.cookie, JWT_SECRET_KEY="mysecret",
                   MAX_CONNECTIONS_PER_MINUTE="100000", LOG_LEVEL="warn",
                   NOTIFY_SOCKET=self._notify_path)
        env.update(self.env)
        env.pop("WATCHDOG_USEC", None)
        log = open(os.path.join(self.workdir, f"{self.name}.log"), "ab")
        self.process = subprocess.Popen(
            [TWISTD, "--nodaemon", "--pidfile=", "rig"], cwd=self.workdir, env=env,
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        ports = listening_ports((await self._notify.ready())["STATUS"])
        self.inbound, self.api = ports["inbound"], ports["internal"]
        view = await get_json(pool or HTTPConnectionPool(reactor, persistent=False),
                              self.url("/v3/cluster", internal=True))
        self.cluster_address = view["node"]
        return self

    def kill(self):
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    async def close(self):
        self.kill()
        port, self._notify_port = self._notify_port, None
        if port is not None:
            await defer.maybeDeferred(port.stopListening)

    def url(self, path, internal=False):
        return f"http://127.0.0.1:{self.api if internal else self.inbound}{path}"


class Processes:
    """Gateway processes of one test, the clients connected to them and an HTTP pool:
    all killed or closed when the test ends (the ``processes`` fixture)."""

    def __init__(self):
        self.pool = HTTPConnectionPool(reactor)
        self.nodes = []
        self.clients = []

    def node(self, *args, **kwargs):
        node = Node(*args, **kwargs)
        self.nodes.append(node)
        return node

    def client(self, client):
        self.clients.append(client)
        return client

    async def close(self):
        for client in self.clients:
            client.disconnect()
        for node in self.nodes:
            await node.close()
        await self.pool.closeCachedConnections()


async def get_json(pool, url):
    response = await within(treq.get(url, pool=pool))
    return json.loads(await within(response.text()))


async def wait_for(predicate, seconds, what):
    """Poll the async *predicate* every 0.1 s; its time of success (monotonic)."""
    await eventually(reactor, predicate, seconds, what, interval=0.1)
    return time.monotonic()
