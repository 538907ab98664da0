"""The delivery write path: coalesce per connection, flush once per reactor turn.

A lone ``transport.write`` on an idle socket registers it with the poller,
waits for the next reactor turn, sends and unregisters; that, not framing, is
the cost of a broadcast. So frames for a connection are gathered during the
current turn and flushed together by one call scheduled with ``callLater(0)``,
and a flush sends straight on the socket when the transport has nothing
buffered (anything not sent, or any non-TCP transport such as TLS, goes the
ordinary way through ``transport.write``, which keeps order and backpressure).
"""
from twisted.internet import tcp
from twisted.logger import Logger


def buffered_bytes(transport):
    """Bytes the transport holds but has not sent yet (0 if it cannot tell)."""
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except AttributeError:
        return 0


def no_delay(transport):
    """Turn Nagle off: frames are already coalesced per turn, and a held-back
    small frame would wait for the peer's delayed ACK (up to 40 ms)."""
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        try:
            set_no_delay(True)
        except OSError:
            pass


def write_now(transport, data):
    """Write *data*, straight to the socket when nothing is queued before it."""
    if (
        type(transport) is tcp.Server
        and transport.connected
        and not transport.disconnecting
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
    ):
        try:
            sent = transport.socket.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            sent = 0  # let the transport discover and report the error
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


class Outbox:
    """Collects frames per sink during a reactor turn and flushes them together.

    A sink is any object with a ``pending`` attribute (None or a list of
    bytes) and a ``flush_pending(data)`` method.
    """

    log = Logger()

    def __init__(self, reactor):
        self._reactor = reactor
        self._dirty = []
        self._call = None

    def push(self, sink, frame):
        pending = sink.pending
        if pending is None:
            sink.pending = [frame]
            self._dirty.append(sink)
            if self._call is None:
                self._call = self._reactor.callLater(0, self.flush)
        else:
            pending.append(frame)

    def flush(self):
        self._call = None
        dirty, self._dirty = self._dirty, []
        for sink in dirty:
            pending = sink.pending
            if pending is None:
                continue
            sink.pending = None
            try:
                sink.flush_pending(pending[0] if len(pending) == 1 else b"".join(pending))
            except Exception:
                self.log.failure("while flushing frames to {sink!r}", sink=sink)

    def stop(self):
        """Flush now and cancel the scheduled flush (for shutdown)."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self.flush()
