"""The two brokers a backplane can use, behind one small interface.

``connect()`` (returns once it can publish and subscribe), ``lost`` (a
Deferred that fires when it no longer can), ``subscribe(channel)`` and
``unsubscribe(channel)`` (each a Deferred that fires once the broker has taken
it: the confirmation promise waits on it), ``publish(channel, payload)`` (a
Deferred that fires once the broker has taken the message), ``close()``.
Messages arrive at ``on_message(channel, payload)``.
"""
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.ssl import optionsForClientTLS

from rig.backplane.resp import RespProtocol
from rig.nats.client import NatsUnavailable

ACK_INTERVAL = 0.05  # publications are acknowledged together, at most this late


class RedisPubSub:
    """Redis Pub/Sub: one connection subscribes, another publishes. Sharded Pub/Sub
    (``SSUBSCRIBE``/``SPUBLISH``, Redis 7 and later) where the server has it, so that a
    Redis Cluster spreads the channels over its shards.

    The publishing connection runs with ``CLIENT REPLY OFF``: a reply per event would
    cost the publisher a read per event. Every :data:`ACK_INTERVAL` with publications,
    ``CLIENT REPLY ON`` (answered ``+OK``, after every earlier command: Redis answers in
    order) then ``OFF`` again acknowledges all of them at once."""

    name = "redis"

    def __init__(self, reactor, address, on_message, *, connect_timeout=5.0, trust_root=None):
        self._reactor = reactor
        self._trust_root = trust_root  # rediss://: the system's CAs (or SSL_CERT_FILE) if None
        self.address = address  # a RedisAddress
        self._on_message = on_message
        self._timeout = connect_timeout
        self._subscriber = self._publisher = None
        self.lost = None
        self.sharded = False
        self._batch = None  # the acknowledgement the publications since the last one await

    def __str__(self):  # for logs: never the password
        scheme = "rediss" if self.address.tls else "redis"
        return f"{scheme}://{self.address.host}:{self.address.port}"

    async def connect(self):
        self.lost = defer.Deferred()
        self._subscriber = await self._open(self._message)
        self._publisher = await self._open(None)
        info = await self._publisher.execute("INFO", "server")
        version = _redis_version(info)
        self.sharded = version >= (7, 0)
        self._publish_command = b"SPUBLISH" if self.sharded else b"PUBLISH"
        self._publisher.send(b"CLIENT", b"REPLY", b"OFF")  # answers nothing

    async def _open(self, on_message):
        address = self.address
        endpoint = HostnameEndpoint(self._reactor, address.host, address.port,
                                    timeout=self._timeout)
        if address.tls:
            endpoint = wrapClientTLS(
                optionsForClientTLS(address.host, trustRoot=self._trust_root), endpoint)
        connecting = connectProtocol(endpoint, RespProtocol(on_message, self._gone))
        connecting.addTimeout(self._timeout, self._reactor)
        protocol = await connecting
        if address.password is not None:
            try:
                await protocol.execute("AUTH", address.password)
            except Exception:
                protocol.transport.loseConnection()
                raise
        return protocol

    def _gone(self, reason):
        if self.lost is not None and not self.lost.called:
            self.lost.callback(reason.value)

    def _message(self, channel, payload):
        self._on_message(channel.decode("utf-8", "replace"), payload)

    def subscribe(self, channel):
        return self._subscriber.execute("SSUBSCRIBE" if self.sharded else "SUBSCRIBE", channel)

    def unsubscribe(self, channel):
        return self._subscriber.execute("SUNSUBSCRIBE" if self.sharded else "UNSUBSCRIBE",
                                        channel)

    def publish(self, channel, payload):
        self._publisher.send(self._publish_command, channel, payload)
        if self._batch is None:
            self._batch = defer.Deferred()
            self._reactor.callLater(ACK_INTERVAL, self._acknowledge, self._publisher,
                                    self._batch)
        return self._batch

    def _acknowledge(self, publisher, batch):
        if batch is self._batch:
            self._batch = None
        if publisher is not self._publisher or publisher.transport is None:
            batch.errback(ConnectionError("the Redis connection was lost"))
            return
        publisher.execute("CLIENT", "REPLY", "ON").chainDeferred(batch)
        publisher.send(b"CLIENT", b"REPLY", b"OFF")

    def close(self):
        for protocol in (self._subscriber, self._publisher):
            if protocol is not None and protocol.transport is not None:
                protocol.transport.loseConnection()
        self._subscriber = self._publisher = None


def _redis_version(info):
    for line in info.decode("utf-8", "replace").splitlines():
        if line.startswith("redis_version:"):
            parts = line.split(":", 1)[1].strip().split(".")
            try:
                return tuple(int(part) for part in parts[:2])
            except ValueError:
                break
    return (0, 0)


class NatsPubSub:
    """NATS subjects, on a :class:`~rig.nats.client.NatsClient` of the backplane's own
    (the client reconnects by itself; this follows its state). A subscription or a
    batch of publications is acknowledged by the server's answer to a PING."""

    name = "nats"

    def __init__(self, reactor, client, on_message):
        self._reactor = reactor
        self.client = client
        self._on_message = on_message
        self._sids = {}  # channel -> sid
        self._connected = None
        self._flush = None  # the acknowledgement of what this reactor turn published
        self.lost = None
        client.observe(self._state)

    def __str__(self):
        return ",".join(str(server) for server in self.client.servers)

    def _state(self, healthy):
        if healthy:
            if self._connected is not None and not self._connected.called:
                self._connected.callback(None)
        elif self.lost is not None and not self.lost.called:
            self.lost.callback(NatsUnavailable("the NATS connection was lost"))

    async def connect(self):
        self.lost = defer.Deferred()
        for sid in self._sids.values():  # the client sent them again: start afresh
            self.client.unsubscribe(sid)
        self._sids.clear()
        if not self.client.healthy:
            self._connected = defer.Deferred()
            await self._connected

    def _message(self, subject, _reply, payload, _headers):
        self._on_message(subject, payload)

    def subscribe(self, channel):
        if channel not in self._sids:
            self._sids[channel] = self.client.subscribe(channel, self._message)
        return self.client.flush()

    def unsubscribe(self, channel):
        sid = self._sids.pop(channel, None)
        if sid is not None:
            self.client.unsubscribe(sid)
        return defer.succeed(None)

    def publish(self, channel, payload):
        self.client.publish(channel, payload)
        if self._flush is None:  # one PING per interval acknowledges all before it
            self._flush = defer.Deferred()
            self._reactor.callLater(ACK_INTERVAL, self._send_flush, self._flush)
        return self._flush

    def _send_flush(self, waiter):
        if waiter is self._flush:
            self._flush = None
        self.client.flush().chainDeferred(waiter)

    def close(self):
        """The client is a service of its own; it closes with the gateway."""
