"""The delivery write path: coalesce per connection, flush once per reactor turn.

A lone ``transport.write`` on an idle socket registers it with the poller,
waits for the next reactor turn, sends and unregisters; that, not framing, is
the cost of a broadcast. So frames for a connection are gathered during the
current turn and flushed together by one call scheduled with ``callLater(0)``,
and a flush sends straight on the socket when the transport has nothing
buffered (anything not sent, or any non-TCP transport such as TLS, goes the
ordinary way through ``transport.write``, which keeps order and backpressure).
An HTTP/2 stream is written with ``write_stream``, never on the socket: its
connection frames, flow-controls and sends what every stream writes.
"""
from twisted.logger import Logger

from rig.twistedcompat import queued_bytes as buffered_bytes
from rig.twistedcompat import write_now, write_stream

__all__ = ["Outbox", "buffered_bytes", "no_delay", "write_now", "write_stream"]


def no_delay(transport):
    """Turn Nagle off: frames are already coalesced per turn, and a held-back
    small frame would wait for the peer's delayed ACK (up to 40 ms)."""
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        try:
            set_no_delay(True)
        except OSError:
            pass


class Outbox:
    """Collects frames during a reactor turn and writes them in one flush.

    A broadcast is one frame for many sinks: when it is the only thing queued
    in the turn (the common, paced case) each sink gets it with no copying;
    when several are queued (a burst), each sink gets its frames joined into
    one write. A sink has ``write_frame(data)`` and ``coalesce`` (False for
    sinks that must see frames one by one, such as long-poll buffers).
    """

    log = Logger()

    def __init__(self, reactor):
        self._reactor = reactor
        self._items = []
        self._call = None

    def push(self, sink, frame):
        self.broadcast(frame, (sink,))

    def broadcast(self, frame, sinks):
        self._items.append((frame, sinks))
        if self._call is None:
            self._call = self._reactor.callLater(0, self.flush)

    def flush(self):
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        items, self._items = self._items, []
        if len(items) == 1:
            frame, sinks = items[0]
            for sink in sinks:
                try:
                    sink.write_frame(frame)
                except Exception:
                    self.log.failure("while writing to {sink!r}", sink=sink)
            return
        pending = {}
        for frame, sinks in items:
            for sink in sinks:
                frames = pending.get(sink)
                if frames is None:
                    pending[sink] = [frame]
                else:
                    frames.append(frame)
        for sink, frames in pending.items():
            try:
                if len(frames) == 1:
                    sink.write_frame(frames[0])
                elif sink.coalesce:
                    sink.write_frame(b"".join(frames))
                else:
                    for frame in frames:
                        sink.write_frame(frame)
            except Exception:
                self.log.failure("while writing to {sink!r}", sink=sink)

    def stop(self):
        """Flush now (for shutdown); nothing stays scheduled."""
        self.flush()
