"""Every use of a Twisted private attribute, in one place (each has a test).

A Twisted upgrade that changes one of these fails its test here instead of
breaking the gateway somewhere else.
"""
import errno
import signal

import h2.connection
import priority
from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.epollreactor import EPollReactor
from twisted.logger import Logger
from twisted.web._http2 import _END_STREAM_SENTINEL, H2Stream
from twisted.web._http2 import H2Connection as _TwistedH2Connection

_SEND_PER_TURN = 256 * 1024  # DATA bytes one turn of the send loop frames at most


def forget_sigterm(reactor):
    """Let twistd exit with status 0 after a stop that SIGTERM asked for.

    twistd re-raises the signal that stopped the reactor once it is done
    (``reactor._exitSignal``), so the exit status would read "killed by
    SIGTERM" even after a complete drain. SIGTERM is how a service manager
    asks for the stop, so a finished stop clears it (SIGINT is left alone).
    """
    if getattr(reactor, "_exitSignal", None) == signal.SIGTERM:
        reactor._exitSignal = None


# -- the reactor's dispatch of socket events ----------------------------------------

_dispatch_log = Logger(namespace="rig.reactor")


def lean_dispatch(reactor):
    """Let an epoll *reactor* call each ready socket's handler directly.

    Twisted wraps every read and write event in ``log.callWithLogger``: a copy of
    the legacy logging context (``{"system": ...}``), pushed and popped around each
    call, which only ``twisted.python.log`` messages read. That was about 4 % of the
    proxy's main thread (two reads per proxied request). The handler is the same,
    and so is what happens when it raises (``_doReadOrWrite`` logs and disconnects);
    only legacy messages logged inside it lose their ``system`` prefix. Other
    reactors are left as they are. Returns whether the dispatch was replaced.
    """
    if not isinstance(reactor, EPollReactor):
        return False
    poller = reactor._poller
    selectables = reactor._selectables
    handle = reactor._doReadOrWrite

    def doPoll(timeout):
        if timeout is None:
            timeout = -1
        try:
            ready = poller.poll(timeout, len(selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        for fd, event in ready:
            selectable = selectables.get(fd)
            if selectable is not None:
                try:
                    handle(selectable, fd, event)
                except Exception:
                    _dispatch_log.failure("Error handling {fd}", fd=fd)

    reactor.doIteration = reactor.doPoll = doPoll
    return True


# -- a TCP transport's send buffer (the write path's direct send and its limit) -----


def queued_bytes(transport):
    """Bytes a TCP transport holds but has not sent yet (a TLS one's: its socket's; an
    HTTP/2 stream's: what its connection has not sent yet; 0 if it cannot tell)."""
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except AttributeError:
        if type(transport) is H2Stream:
            return stream_queued(transport)
        return 0


_PLAIN_TCP = (tcp.Server, tcp.Client)


def write_now(transport, data, limit=None):
    """Write *data*, straight to the socket when a plain TCP transport (accepted or
    connected) has nothing queued
    before it (a lone ``transport.write`` would wait a reactor turn, see rig/hub/outbox.py).

    With a *limit*, the client is too slow when more than *limit* bytes are still queued
    from earlier writes: then nothing is written and this returns False (True otherwise).
    So the limit bounds what waits behind a write in progress, and one frame larger
    than the limit still reaches a client that reads. Inlined: it runs once per frame.
    """
    if (
        type(transport) in _PLAIN_TCP
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
        and transport.connected
        and not transport.disconnecting
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:  # EAGAIN, or an error the transport will discover and report
            sent = 0
        if sent == len(data):
            return True
        data = data[sent:]
    elif limit is not None and queued_bytes(transport) > limit:
        return False
    transport.write(data)
    return True


# -- HTTP/2: Twisted's implementation is private (twisted.web._http2) ---------------


class _CountingState(h2.connection.H2Connection):
    """h2's connection state, telling its owner what DATA it actually sends, per stream."""

    sent = None  # ``sent(stream_id, count)``, set by the owning H2Connection

    def send_data(self, stream_id, data, end_stream=False, pad_length=None):
        super().send_data(stream_id, data, end_stream=end_stream, pad_length=pad_length)
        self.sent(stream_id, len(data))


class H2Connection(_TwistedH2Connection):
    """Twisted's server-side HTTP/2 connection, telling what RIG's own needs of it.

    * ``queued[stream_id]``: bytes written to a stream and not sent yet (they wait for
      the peer's flow-control window, or their turn in the send loop), kept as a count
      so the slow-client limit costs O(1) per write (Twisted keeps only the chunks);
    * ``stream_ended()`` runs after each stream's state is gone (the drain waits for
      the last one);
    * a stream whose flow-control window is shut waits for the peer without costing
      a reactor turn each (see ``_sent``).
    """

    def __init__(self, reactor):
        super().__init__(reactor)
        self.queued = {}
        state = _CountingState(config=self.conn.config)
        state.sent = self._sent
        self.conn = state

    def _sent(self, stream_id, count):
        queued = self.queued
        if stream_id in queued:
            left = queued[stream_id] = queued[stream_id] - count
            if left > 0 and self.conn.local_flow_control_window(stream_id) <= 0:
                # Twisted keeps such a stream active: its send loop would spin (a
                # callLater(0) per reactor turn, sending nothing) until the peer opens
                # the window; blocked, it waits for the WINDOW_UPDATE instead
                self.priority.block(stream_id)

    def _sendPrioritisedData(self, *args):
        """Twisted's send loop, except that one turn frames every chunk that is ready
        (up to ``_SEND_PER_TURN`` bytes) and writes them all at once.

        Twisted's frames one chunk a reactor turn and writes it on its own (one TLS
        record), and wakes at once for each write: a fan-out to a hundred SSE streams
        of one connection took a hundred turns, under a thousand deliveries a second.
        The order of the frames, the flow-control windows, the frame size and the wait
        behind a blocked transport are Twisted's.
        """
        if not self._stillProducing:
            return
        conn, queues, sent = self.conn, self._outboundStreamQueues, 0
        while sent < _SEND_PER_TURN:
            try:
                stream = next(self.priority)
            except priority.DeadlockError:  # nothing ready: wait for a write or a window
                self._flush_frames()
                self._sendingDeferred = Deferred()
                self._sendingDeferred.addCallback(self._wake)
                return
            if self._consumerBlocked is not None:  # wait behind the transport
                self._flush_frames()
                self._consumerBlocked.addCallback(self._sendPrioritisedData)
                return
            queue = queues[stream]
            frame = queue.popleft()
            if frame is _END_STREAM_SENTINEL:
                conn.end_stream(stream)
                self._flush_frames()
                self._requestDone(stream)
                continue
            size = min(conn.max_outbound_frame_size, conn.local_flow_control_window(stream))
            if size <= 0:  # its window is shut: it waits for a WINDOW_UPDATE (see _sent)
                queue.appendleft(frame)
                self.priority.block(stream)
                continue
            if len(frame) > size:
                queue.appendleft(frame[size:])
                frame = frame[:size]
            if frame:
                conn.send_data(stream, frame)
                sent += len(frame)
            if not queue:
                self.priority.block(stream)
            if self.remainingOutboundWindow(stream) <= 0:
                self.streams[stream].flowControlBlocked()
        self.resetTimeout()
        self._flush_frames()
        self._reactor.callLater(0, self._sendPrioritisedData)

    def _wake(self, _stream_id):
        """Data came (a write, a window): frame it next turn, with whatever else this
        turn writes (a broadcast writes every stream of the connection in one turn)."""
        self._reactor.callLater(0, self._sendPrioritisedData)

    def _flush_frames(self):
        data = self.conn.data_to_send()
        if data:
            self.resetTimeout()
            self.transport.write(data)

    def _handleWindowUpdate(self, event):
        """Twisted's, then the send loop wakes if it sleeps (Twisted's does not: it never
        blocks a stream for its window, see ``_sent``)."""
        super()._handleWindowUpdate(event)
        waiting = self._sendingDeferred
        if waiting is not None:
            self._sendingDeferred = None
            waiting.callback(event.stream_id)

    def writeDataToStream(self, streamID, data):
        queued = self.queued
        queued[streamID] = queued.get(streamID, 0) + len(data)
        super().writeDataToStream(streamID, data)

    def _requestDone(self, streamID):
        self.queued.pop(streamID, None)
        super()._requestDone(streamID)
        self.stream_ended()

    def stream_ended(self):
        """A stream is over (answered, reset, or its connection lost)."""


def is_h2_stream(channel):
    """Whether a request's channel is an HTTP/2 stream (``request.channel`` of a request
    that came over HTTP/2) rather than an HTTP/1.1 channel."""
    return type(channel) is H2Stream


def stream_queued(stream):
    """Bytes written to an HTTP/2 stream that its connection has not sent yet."""
    return getattr(stream._conn, "queued", {}).get(stream.streamID, 0)


def write_stream(stream, data, limit=None):
    """:func:`write_now` for an HTTP/2 stream: through the stream, which its connection
    frames, paces by the peer's flow-control window and sends (never the socket).

    With a *limit*, the client is too slow when more than *limit* bytes still wait
    from earlier writes: then nothing is written and this returns False.
    """
    if limit is not None and stream_queued(stream) > limit:
        return False
    stream.write(data)
    return True
