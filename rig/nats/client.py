"""A NATS client that lives on the reactor: connect, stay connected, resubscribe.

Why our own: the maintained client (``nats-py``) is asyncio-only, and running
it would put a second event loop beside Twisted's on the event path; the
protocol a gateway needs (publish, queue subscriptions, request-reply, ping)
is a few hundred lines on a Twisted protocol (:mod:`rig.nats.protocol`).

The client keeps what it was asked to subscribe to and sends it again after
every reconnect, so callers subscribe once. While the server is away,
:meth:`publish` and :meth:`request` fail at once with :class:`NatsUnavailable`
(a gateway answers 503 rather than queue requests for an unknown time), and
the connection is tried again with back-off, rotating through the servers.
"""
import itertools
import os
from collections import deque
from urllib.parse import unquote, urlsplit

import attrs
from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger

from rig.nats.protocol import NatsProtocol, check_queue, check_subject
from rig.pause import Pause

DEFAULT_PORT = 4222


class NatsUnavailable(ConnectionError):
    """Not connected to a NATS server (now)."""


class NoResponders(LookupError):
    """A request's subject has no subscriber (the server said so at once)."""


class PayloadTooLarge(ValueError):
    """A message over the server's ``max_payload`` (the server would drop the connection)."""


@attrs.frozen
class NatsServer:
    host: str
    port: int = DEFAULT_PORT
    tls: bool = False
    user: str | None = attrs.field(default=None, repr=False)
    password: str | None = attrs.field(default=None, repr=False)
    token: str | None = attrs.field(default=None, repr=False)

    def __str__(self):  # for logs: never the credentials
        return f"{'tls' if self.tls else 'nats'}://{self.host}:{self.port}"


def parse_server(text):
    """``host[:port]``, ``nats://[user:password@]host[:port]``, ``tls://...`` or
    ``nats://token@host``; ValueError (naming no credential) if not."""
    text = text.strip()
    if "://" not in text:
        text = "nats://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("nats", "tls") or not parts.hostname:
        raise ValueError(f"expected host:port, nats://host:port or tls://host:port,"
                         f" got {parts.scheme}://{parts.hostname or ''}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError(f"bad port for NATS server {parts.hostname}") from None
    if parts.path.strip("/"):
        raise ValueError(f"a NATS server address has no path ({parts.hostname})")
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    token = None
    if user is not None and password is None:
        user, token = None, user
    return NatsServer(parts.hostname, port, parts.scheme == "tls", user, password, token)


def parse_servers(value):
    """A tuple of :class:`NatsServer` from comma-separated text or a list; empty: NATS off."""
    items = value if isinstance(value, list) else str(value).split(",")
    return tuple(parse_server(str(item)) for item in items if str(item).strip())


@attrs.define
class _Subscription:
    subject: str
    queue: str | None
    handler: object  # handler(subject, reply, payload, headers)


class NatsClient(Service):
    log = Logger()

    def __init__(self, reactor, servers, *, name="txrig", connect_timeout=5.0,
                 ping_interval=20.0, max_pings_out=2, retry_policy=None, trust_root=None):
        self._reactor = reactor
        self.servers = tuple(servers)
        self._name = name
        self._connect_timeout = connect_timeout
        self._ping_interval = ping_interval
        self._max_pings_out = max_pings_out
        self._retry = retry_policy or backoffPolicy(initialDelay=0.25, maxDelay=5.0)
        self._trust_root = trust_root
        self._protocol = None
        self._server = None
        self._info = {}
        self._handshake = None  # fires with INFO, then with the first PONG
        self._phase = None  # "info", then "pong", while connecting
        self._step = None  # what the connection attempt waits for (cancelled by a stop)
        self._pongs = deque()  # a waiter (or None: a keep-alive) per PING sent
        self._pinger = None
        self._lost = None
        self._loop = None
        self._pause = Pause(reactor)
        self._subscriptions = {}
        self._sids = itertools.count(1)
        self._inbox = f"_INBOX.{os.urandom(12).hex()}"
        self._inbox_sid = None
        self._requests = {}
        self._tokens = itertools.count(1)
        self.healthy = False
        self.counts = {"connects": 0, "published": 0, "requests": 0}
        self._observers = []
        self._checked = set()  # subjects published to that passed check_subject

    def observe(self, observer):
        """Call ``observer(True)`` after every (re)connection, ``observer(False)`` after
        every loss (the backplane re-checks its subscriptions and falls back)."""
        self._observers.append(observer)

    def _tell(self, healthy):
        for observer in list(self._observers):
            try:
                observer(healthy)
            except Exception:
                self.log.failure("NATS connection observer")

    @property
    def waiting(self):
        """Requests sent and not answered yet."""
        return len(self._requests)

    @property
    def max_payload(self):
        return int(self._info.get("max_payload") or 1024 * 1024)

    # -- the service

    def startService(self):
        super().startService()
        self._loop = defer.ensureDeferred(self._run())
        self._loop.addErrback(lambda failure: self.log.failure("NATS client stopped", failure))

    def stopService(self):
        super().stopService()
        self._pause.cancel()
        if self._step is not None:
            self._step.cancel()  # _run then drops the half-made connection
        protocol, lost = self._protocol, self._lost
        if protocol is None or lost is None or lost.called:
            return defer.succeed(None)
        protocol.transport.loseConnection()  # what is written still goes out first
        call = self._reactor.callLater(self._connect_timeout, protocol.transport.abortConnection)
        waiting = defer.Deferred()

        def closed(result):
            if call.active():
                call.cancel()
            waiting.callback(None)
            return result

        lost.addBoth(closed)
        return waiting

    # -- what callers use

    def subscribe(self, subject, handler, queue=None):
        """Subscribe now (when connected) and after every reconnect; the sid."""
        check_subject(subject, wildcards=True)
        if queue is not None:
            check_queue(queue)
        sid = next(self._sids)
        self._subscriptions[sid] = _Subscription(subject, queue, handler)
        if self.healthy:
            self._protocol.subscribe(sid, subject, queue)
        return sid

    def unsubscribe(self, sid):
        if self._subscriptions.pop(sid, None) is not None and self.healthy:
            self._protocol.unsubscribe(sid)

    def flush(self):
        """A Deferred that fires once the server has processed all sent so far (PING/PONG)."""
        if not self.healthy:
            return defer.fail(NatsUnavailable("not connected to NATS"))
        waiter = defer.Deferred()
        self._ping(waiter)
        return waiter

    def publish(self, subject, payload, reply=None, headers=None):
        """Send *payload* (bytes) to *subject* (with NATS *headers*, ``{name: value}``);
        raises NatsUnavailable, PayloadTooLarge or ValueError (not a subject)."""
        if subject not in self._checked:
            check_subject(subject)
            if len(self._checked) >= 10000:
                self._checked.clear()
            self._checked.add(subject)
        if not self.healthy:
            raise NatsUnavailable("not connected to NATS")
        if len(payload) > self.max_payload:
            raise PayloadTooLarge(f"{len(payload)} bytes is over the NATS server's limit of"
                                  f" {self.max_payload}")
        self._protocol.publish(subject, payload, reply, headers)
        self.counts["published"] += 1

    def request(self, subject, payload, timeout):
        """The payload of the first reply (Deferred); TimeoutError after *timeout*
        seconds, NoResponders when nobody listens, NatsUnavailable if the connection goes."""
        if self._inbox_sid is None:
            self._inbox_sid = self.subscribe(self._inbox + ".*", self._reply_received)
        token = str(next(self._tokens))
        answered = defer.Deferred(lambda _d: self._requests.pop(token, None))
        self.publish(subject, payload, f"{self._inbox}.{token}")
        self._requests[token] = answered
        answered.addTimeout(timeout, self._reactor)
        answered.addBoth(self._forget_request, token)
        self.counts["requests"] += 1
        return answered

    def _forget_request(self, result, token):
        self._requests.pop(token, None)
        return result

    def _reply_received(self, subject, _reply, payload, headers):
        answered = self._requests.pop(subject.rpartition(".")[2], None)
        if answered is None:
            return  # timed out, or a second reply
        if headers is not None and headers[0] == "503" and not payload:
            answered.errback(NoResponders("no subscriber for the subject"))
        else:
            answered.callback(payload)

    # -- the connection loop

    async def _run(self):
        attempt = 0
        while self.running:
            server = self.servers[attempt % len(self.servers)]
            try:
                await self._connect(server)
            except Exception as error:
                self._drop()
                if not self.running:
                    return
                delay = self._retry(attempt)
                attempt += 1
                self.log.warn("NATS {server}: {error}; retrying in {delay:.1f} s",
                              server=str(server), error=str(error) or type(error).__name__,
                              delay=delay)
                if not await self._pause.sleep(delay):
                    return
                continue
            attempt = 0
            reason = await self._lost
            self._drop()
            if not self.running:
                return
            self.log.warn("NATS connection to {server} lost: {reason}; reconnecting",
                          server=str(server), reason=str(reason) or type(reason).__name__)
            if not await self._pause.sleep(self._retry(0)):
                return


    async def _connect(self, server):
        endpoint = HostnameEndpoint(self._reactor, server.host, server.port,
                                    timeout=self._connect_timeout)
        self._lost = defer.Deferred()
        self._info = {}
        self._phase = "info"
        self._handshake = defer.Deferred()
        self._protocol = await self._wait(connectProtocol(endpoint, NatsProtocol(self)))
        self._server = server
        self._info = await self._wait(self._handshake)
        tls = server.tls or bool(self._info.get("tls_required"))
        if tls:
            self._protocol.transport.startTLS(
                optionsForClientTLS(server.host, trustRoot=self._trust_root))
        options = {"verbose": False, "pedantic": False, "tls_required": tls,
                   "name": self._name, "lang": "python-twisted", "version": "0.1.0",
                   "protocol": 1, "headers": True, "no_responders": True}
        if server.user is not None:
            options.update(user=server.user, **{"pass": server.password})
        if server.token is not None:
            options["auth_token"] = server.token
        self._phase = "pong"
        self._handshake = defer.Deferred()
        self._protocol.send_connect(options)  # with a PING: its PONG says CONNECT was taken
        await self._wait(self._handshake)
        for sid, subscription in self._subscriptions.items():
            self._protocol.subscribe(sid, subscription.subject, subscription.queue)
        self.healthy = True
        self.counts["connects"] += 1
        self._pinger = self._reactor.callLater(self._ping_interval, self._keep_alive)
        self._tell(True)
        self.log.info("Connected to NATS at {server} (server {server_name} {version})",
                      server=str(server), server_name=self._info.get("server_name", "?"),
                      version=self._info.get("version", "?"))

    async def _wait(self, deferred):
        """One step of connecting, bounded by the connect timeout and cancelled by a stop."""
        deferred.addTimeout(self._connect_timeout, self._reactor)
        self._step = deferred
        try:
            return await deferred
        finally:
            self._step = None

    def _drop(self):
        """Forget the connection; fail whoever waits on it."""
        was_healthy, self.healthy = self.healthy, False
        self._phase = self._handshake = None
        if self._pinger is not None and self._pinger.active():
            self._pinger.cancel()
        self._pinger = None
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abortConnection()
        pongs, self._pongs = self._pongs, deque()
        requests, self._requests = self._requests, {}
        for waiter in itertools.chain(pongs, requests.values()):
            if waiter is not None and not waiter.called:
                waiter.errback(NatsUnavailable("the NATS connection was lost"))
        if was_healthy:
            self._tell(False)

    def _ping(self, waiter):
        self._pongs.append(waiter)
        self._protocol.send_ping()

    def _keep_alive(self):
        """Ping; a server that leaves *max_pings_out* pings unanswered is gone."""
        self._pinger = None
        if not self.healthy:
            return
        if sum(1 for waiter in self._pongs if waiter is None) >= self._max_pings_out:
            self.log.warn("NATS {server} stopped answering pings", server=str(self._server))
            self._protocol.transport.abortConnection()
            return
        self._ping(None)
        self._pinger = self._reactor.callLater(self._ping_interval, self._keep_alive)

    # -- what the protocol tells

    def nats_info(self, info):
        if self._phase == "info":
            self._phase = None
            self._handshake.callback(info)
        else:
            self._info = info  # a cluster's INFO updates (new servers, limits)

    def nats_pong(self):
        if self._phase == "pong":
            self._phase = None
            self._handshake.callback(None)
        elif self._pongs:
            waiter = self._pongs.popleft()
            if waiter is not None:
                waiter.callback(None)

    def nats_error(self, text):
        if self._phase is not None:
            self._phase = None
            self._handshake.errback(NatsUnavailable(f"the server refused: {text}"))
            return
        self.log.warn("NATS {server} says: {text}", server=str(self._server), text=text)

    def nats_message(self, sid, subject, reply, payload, headers):
        subscription = self._subscriptions.get(sid)
        if subscription is None:
            return
        try:
            subscription.handler(subject, reply, payload, headers)
        except Exception:
            self.log.failure("Handling a NATS message on {subject}", subject=subject)

    def nats_lost(self, protocol, reason):
        if protocol is not self._protocol:
            return  # one given up already
        if self._phase is not None:
            self._phase = None
            self._handshake.errback(NatsUnavailable("the server closed the connection"))
        if self._lost is not None and not self._lost.called:
            self._lost.callback(reason.value)  # the exception: a Failure would errback
