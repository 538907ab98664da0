"""Just enough of Redis's protocol (RESP2) for Pub/Sub: commands with replies in order,
and the pushed ``message``/``smessage`` of a subscribed connection.

txredisapi's subscriber knows neither sharded Pub/Sub (``SSUBSCRIBE``, Redis 7)
nor an acknowledgement per channel when several are asked at once; both matter
here (a confirmation waits for the subscription to be in place), and the part
of RESP that Pub/Sub uses is small.
"""
import collections

from twisted.internet import defer
from twisted.internet.protocol import Protocol

from rig.hub.outbox import no_delay

MAX_BULK = 512 * 1024 * 1024
_PUSHED = (b"message", b"smessage")
_SUBSCRIBE_REPLIES = (b"subscribe", b"ssubscribe", b"unsubscribe", b"sunsubscribe")


class RedisError(Exception):
    """An error reply (``-ERR ...``)."""


def command(*parts):
    """One command in RESP (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else bytes(part)
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class _Incomplete(Exception):
    pass


def _parse(buffer, start):
    """``(value, next offset)`` of the RESP value at *start*; _Incomplete if cut short."""
    end = buffer.find(b"\r\n", start)
    if end < 0:
        raise _Incomplete
    kind, line = buffer[start:start + 1], bytes(buffer[start + 1:end])
    after = end + 2
    if kind == b"+":
        return line, after
    if kind == b"-":
        return RedisError(line.decode("utf-8", "replace")), after
    if kind == b":":
        return int(line), after
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, after
        if size > MAX_BULK:
            raise ValueError("a bulk string over 512 MB")
        if len(buffer) < after + size + 2:
            raise _Incomplete
        return bytes(buffer[after:after + size]), after + size + 2
    if kind == b"*":
        count = int(line)
        items = []
        for _ in range(max(count, 0)):
            item, after = _parse(buffer, after)
            items.append(item)
        return (items if count >= 0 else None), after
    raise ValueError(f"not RESP: {kind!r}")


class RespProtocol(Protocol):
    """Sends commands; each Deferred fires with its reply (errback for ``-ERR``).

    On a subscribed connection, *on_message(channel, payload)* gets what is
    pushed, and each (un)subscribe confirmation answers its own command (a
    command names one channel, so that every channel is acknowledged)."""

    def __init__(self, on_message=None, on_lost=None):
        self._on_message = on_message
        self._on_lost = on_lost
        self._buffer = bytearray()
        self._waiting = collections.deque()

    def connectionMade(self):
        # a lone PUBLISH must not wait for the server's delayed ACK (over TLS: the TCP below)
        no_delay(getattr(self.transport, "transport", None) or self.transport)

    def execute(self, *parts):
        waiter = defer.Deferred()
        self._waiting.append(waiter)
        self.transport.write(command(*parts))
        return waiter

    def send(self, *parts):
        """A command whose reply is not read: one sent while ``CLIENT REPLY OFF``."""
        self.transport.write(command(*parts))

    def dataReceived(self, data):
        buffer = self._buffer
        buffer += data
        start = 0
        try:
            while start < len(buffer):
                try:
                    value, start = _parse(buffer, start)
                except _Incomplete:
                    break
                self._reply(value)
        except ValueError:
            self.transport.abortConnection()
            return
        del buffer[:start]

    def _reply(self, value):
        if isinstance(value, list) and value and value[0] in _PUSHED and len(value) == 3:
            if self._on_message is not None:
                self._on_message(value[1], value[2])
            return
        if isinstance(value, list) and value and value[0] in _SUBSCRIBE_REPLIES \
                and not self._waiting:
            return  # the later confirmations of an UNSUBSCRIBE of every channel
        if not self._waiting:
            return
        waiter = self._waiting.popleft()
        if isinstance(value, RedisError):
            waiter.errback(value)
        else:
            waiter.callback(value)

    def connectionLost(self, reason):
        waiting, self._waiting = self._waiting, collections.deque()
        for waiter in waiting:
            waiter.errback(ConnectionError("the Redis connection was lost"))
        if self._on_lost is not None:
            self._on_lost(reason)
