"""Consume CloudEvents from Redis streams as one member of a consumer group.

Each node reads ``REDIS_SOURCE_STREAMS`` with ``XREADGROUP`` (a blocking read
on a connection of its own, so it never blocks the reactor), hands each
event to the hub (which fans it out through the cluster), then acknowledges
it. An entry that is not a valid CloudEvent is logged, counted and
acknowledged, never retried forever. Entries left pending by a consumer that
died are claimed after ``claim_idle`` seconds. If Redis is down, the reader
retries with backoff and resumes from the group's position.
"""
import os
from urllib.parse import unquote, urlsplit

import attrs
import txredisapi
from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import deferLater
from twisted.logger import Logger

from rig.events import EventError, parse_http, parse_structured
from rig.metrics.stats import StreamStats
from rig.streams.consumed import publish_consumed
from rig.tracing.tracer import Tracing


@attrs.frozen
class RedisAddress:
    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    password: str | None = attrs.field(default=None, repr=False)
    tls: bool = False


def parse_redis_url(url):
    """``redis://[:password@]host[:port][/db]`` or ``rediss://`` (TLS); ValueError if not."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        raise ValueError(f"expected a redis:// or rediss:// URL, got {url!r}")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"the database must be a number, got {path!r}")
    return RedisAddress(parts.hostname or "127.0.0.1", port, int(path or 0),
                        unquote(parts.password) if parts.password else None,
                        parts.scheme == "rediss")


def event_from_entry(fields):
    """The CloudEvent in a stream entry: field ``event`` (structured JSON), or binary
    mode (``ce_<attribute>`` fields, ``data`` and ``content-type``)."""
    if "event" in fields:
        return parse_structured(fields["event"].encode("utf-8"))
    headers = {f"ce-{name[3:]}": value for name, value in fields.items() if name.startswith("ce_")}
    if not headers:
        raise EventError("the entry has neither an event field nor ce_* fields")
    content_type = fields.get("content-type") or fields.get("content_type")
    return parse_http(content_type or "application/json", headers,
                      fields.get("data", "").encode("utf-8"))


class RedisSource(Service):
    log = Logger()

    def __init__(self, reactor, hub, address, *, streams=("rig",), group="rig", consumer=None,
                 response_stream=None, correlations=None, block_ms=1000, batch=100,
                 claim_idle=30.0, retry_policy=None, ready=None, tracing=None):
        """*ready* returns a Deferred that fires once this node may consume (in a
        cluster: once it knows every peer's interest, so nothing it reads is
        routed without them)."""
        self._reactor = reactor
        self.hub = hub
        self.address = address
        self.response_stream = response_stream
        self.correlations = correlations
        self.streams = tuple(streams) + ((response_stream,) if response_stream else ())
        self.group = group
        self.consumer = consumer or f"rig-{os.getpid()}-{os.urandom(3).hex()}"
        self._block_ms = block_ms
        self._batch = batch
        self._claim_idle = claim_idle
        self._retry = retry_policy or backoffPolicy(initialDelay=0.5, maxDelay=10.0)
        self._ready = ready
        self._tracing = tracing if tracing is not None else Tracing(reactor)
        self._connection = None
        self._producer = None  # XADD must not wait behind the blocking XREADGROUP
        self._loop = None
        self._sleeping = None
        self.healthy = False
        self.counts = {"consumed": 0, "invalid": 0, "claimed": 0}
        self.stream_stats = {stream: StreamStats() for stream in streams}  # event streams only

    def startService(self):
        super().startService()
        self._loop = defer.ensureDeferred(self._run())
        self._loop.addErrback(lambda failure: self.log.failure("Redis source stopped", failure))

    def stopService(self):
        super().stopService()
        if self._sleeping is not None:
            self._sleeping.cancel()
        closing = []
        for name in ("_connection", "_producer"):
            connection = getattr(self, name)
            setattr(self, name, None)
            if connection is not None:
                closing.append(connection.disconnect())
        return defer.gatherResults(closing, consumeErrors=True) if closing else None

    def add(self, stream, event_json):
        """Add a structured-mode entry to *stream* (the proxy's ``redis`` target)."""
        if self._producer is None:
            return defer.fail(ConnectionError("not connected to Redis"))
        return self._producer.execute_command("XADD", stream, "*", "event", event_json)

    async def consumer_lag(self):
        """``{stream: entries the group has yet to read}`` (Redis 7 ``XINFO GROUPS``);
        a stream whose lag Redis cannot tell is left out. Asked on the producer
        connection: the consumer's is busy with a blocking read."""
        if self._producer is None:
            raise ConnectionError("not connected to Redis")
        lags = {}
        for stream in self.streams:
            groups = await self._producer.execute_command("XINFO", "GROUPS", stream)
            for flat in groups or ():
                info = dict(zip(flat[::2], flat[1::2], strict=False))
                if info.get("name") == self.group and info.get("lag") is not None:
                    lags[stream] = int(info["lag"])
        return lags

    async def _run(self):
        attempt = 0
        while self.running:
            try:
                await self._connect()
                attempt = 0
                await self._until_ready()
                await self._consume()
            except Exception as error:  # connection refused, lost, or a Redis error
                self.healthy = False
                if not self.running:
                    return
                delay = self._retry(attempt)
                attempt += 1
                self.log.warn("Redis source: {error}; retrying in {delay:.1f} s",
                              error=str(error) or type(error).__name__, delay=delay)
                self._sleeping = deferLater(self._reactor, delay, lambda: None)
                try:
                    await self._sleeping
                except defer.CancelledError:
                    return
                finally:
                    self._sleeping = None

    async def _until_ready(self):
        if self._ready is None:
            return
        self._sleeping = self._ready()
        try:
            await self._sleeping
        finally:
            self._sleeping = None

    async def _connect(self):
        for name in ("_connection", "_producer"):
            old = getattr(self, name)
            setattr(self, name, None)
            if old is not None:
                await old.disconnect()
        address = self.address

        def connect():
            return txredisapi.Connection(
                address.host, address.port, dbid=address.db, password=address.password,
                reconnect=False, convertNumbers=False, ssl_context_factory=address.tls,
                connectTimeout=5)

        self._connection = await connect()
        self._producer = await connect()
        for stream in self.streams:
            try:
                await self._connection.execute_command(
                    "XGROUP", "CREATE", stream, self.group, "$", "MKSTREAM")
            except txredisapi.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise
        self.healthy = True
        self.log.info("Consuming Redis streams {streams} as {consumer} in group {group}",
                      streams=",".join(self.streams), consumer=self.consumer, group=self.group)

    async def _consume(self):
        await self._claim_abandoned()
        last_claim = self._reactor.seconds()
        while self.running and self._connection is not None:
            reply = await self._connection.execute_command(
                "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", self._batch,
                "BLOCK", self._block_ms, "STREAMS", *self.streams, *(">" for _ in self.streams))
            for stream, entries in reply or ():
                await self._handle(stream, entries)
            if self._reactor.seconds() - last_claim > self._claim_idle / 2:
                await self._claim_abandoned()
                last_claim = self._reactor.seconds()

    def _answer(self, entry_id, fields):
        """Deliver a proxy response entry here, or to the node holding the request."""
        from rig.hub.token import InvalidToken
        from rig.proxy.gateway import AsyncAnswer

        if self.correlations is None:
            return
        try:
            correlation, status, headers, body = _answer_fields(fields)
            ref = self.correlations.codec.decode(correlation)
        except (ValueError, InvalidToken) as error:
            self.counts["invalid"] += 1
            self.log.warn("Skipping response entry {entry_id}: {error}", entry_id=entry_id,
                          error=str(error))
            return
        self.correlations.answer(ref, AsyncAnswer(status, headers, body))

    async def _claim_abandoned(self):
        """Take over entries another consumer read but never acknowledged (it died)."""
        idle_ms = int(self._claim_idle * 1000)
        for stream in self.streams:
            reply = await self._connection.execute_command(
                "XAUTOCLAIM", stream, self.group, self.consumer, idle_ms, "0-0",
                "COUNT", self._batch)
            entries = reply[1] if reply and len(reply) > 1 else []
            if entries:
                self.counts["claimed"] += len(entries)
                await self._handle(stream, entries)

    async def _handle(self, stream, entries):
        done = []
        for entry_id, flat in entries:
            if flat is None:  # deleted while pending
                done.append(entry_id)
                continue
            fields = dict(zip(flat[::2], flat[1::2], strict=False))
            if stream == self.response_stream:
                self._answer(entry_id, fields)
                done.append(entry_id)
                continue
            stats = self.stream_stats.get(stream)
            started = self._reactor.seconds()
            try:
                event = event_from_entry(fields)
            except (EventError, ValueError, TypeError) as error:
                self.counts["invalid"] += 1
                self.log.warn("Skipping stream entry {stream} {entry_id}: {error}",
                              stream=stream, entry_id=entry_id, error=str(error))
                if stats is not None:
                    stats.failed += 1
            else:
                self.counts["consumed"] += 1
                publish_consumed(self.hub, self._tracing, event, "redis", stream,
                                 **{"redis.stream.entry_id": entry_id})
            if stats is not None:
                stats.consumed += 1
                stats.duration_ms.observe((self._reactor.seconds() - started) * 1000.0)
            done.append(entry_id)
        if done:
            await self._connection.execute_command("XACK", stream, self.group, *done)


_NOT_HEADERS = frozenset(("rig-correlation", "rig-response-code", "body"))


def _answer_fields(fields):
    """(correlation, status, headers, body) of a response entry, or ValueError."""
    correlation = fields.get("rig-correlation")
    code = fields.get("rig-response-code")
    if not correlation or code is None:
        raise ValueError("missing rig-correlation or rig-response-code")
    status = int(code)
    if not 100 <= status <= 599:
        raise ValueError(f"status {status} out of range")
    headers = tuple((name.lower().encode("latin-1"), value.encode("utf-8"))
                    for name, value in fields.items() if name.lower() not in _NOT_HEADERS)
    return correlation, status, headers, fields.get("body", "").encode("utf-8")
