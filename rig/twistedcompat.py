"""Every use of a Twisted private attribute, in one place (each has a test).

A Twisted upgrade that changes one of these fails its test here instead of
breaking the gateway somewhere else.
"""
import errno
import re
import signal

import h2.connection
import priority
from twisted.internet import tcp
from twisted.internet.defer import Deferred
from twisted.internet.epollreactor import EPollReactor
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.web._http2 import _END_STREAM_SENTINEL, H2Stream
from twisted.web._http2 import H2Connection as _TwistedH2Connection
from twisted.web.http import _parseRequestLine
from twisted.web.http_headers import _nameEncoder
from twisted.web.iweb import INonQueuedRequestFactory

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


# -- an HTTP/1.1 request head that arrived whole in one read --------------------------

def receive_whole_head(channel, data):
    """Take in a request head that is all of *data* (it ends with its blank line and
    nothing follows), as ``HTTPChannel`` would line by line, and return True; return
    False, having done nothing, when the line-by-line path must take it.

    ``LineReceiver`` splits the buffer once per line and ``HTTPChannel.lineReceived``
    dispatches each line through its state machine: for a head of four lines that was
    about a tenth of a proxied request's Python. Every line still goes through the same
    checks (the request line's parse, ``headerReceived`` for each header: name, value,
    body framing, the header count); only what the line-by-line path would do
    differently falls back to it: a continuation line, an empty first line (the CRLF
    some clients send after a body), a paused or closing channel, data after the head.
    """
    if not _ready_for_a_head(channel, data):
        return False
    lines = data[:-4].split(b"\r\n")
    first = lines[0]
    if not first or len(lines) > channel.maxHeaders + 1:
        return False
    for line in lines:
        if line[:1] in _FOLDED:
            return False
    channel.resetTimeout()
    channel._busyReceiving = True
    try:
        factory = channel.requestFactory
        if INonQueuedRequestFactory.providedBy(factory):
            request = factory(channel)
        else:
            request = factory(channel, len(channel.requests))
        channel.requests.append(request)
        channel._HTTPChannel__first_line = 0
        try:
            command, path, version = _request_line(first)
        except ValueError:
            channel._respondToBadRequestAndDisconnect()
            return True
        channel._command, channel._path, channel._version = command, path, version
        channel.head_path = path
        if not _take_headers(channel, request.requestHeaders._rawHeaders, lines):
            return True
        channel.allHeadersReceived()
        if channel.length == 0:
            channel.allContentReceived()
        else:
            channel.setRawMode()
    finally:
        channel._busyReceiving = False
    if channel._buffer:  # fed back in while the request was handled: as LineReceiver does
        LineReceiver.dataReceived(channel, b"")
    return True


_FOLDED = (b" ", b"\t")


def _ready_for_a_head(channel, data):
    """Whether *channel* waits for a request head, with nothing buffered, and *data*
    is within its limits: else the line-by-line path decides."""
    return not (len(data) > channel.MAX_LENGTH or len(data) > channel.totalHeadersSize
                or channel.paused or not channel.line_mode or channel._buffer
                or channel._busyReceiving or not channel.persistent
                or channel._HTTPChannel__first_line != 1 or channel.requests)


# Headers a plain head may not carry: the body's framing (a GET has none), and an
# Expect to answer (twisted.web's); a Connection header may not ask to close.
_NOT_PLAIN = frozenset((b"Content-Length", b"Transfer-Encoding", b"Expect"))


def reading(channel):
    """The producer that pauses and resumes the reading of *channel*'s connection, as
    twisted.web holds a pipelined request: the transport, or (under TLS, which is
    none) a stand-in that does nothing."""
    return channel._networkProducer


def plain_head(channel, data, request_line):
    """The request of a whole head (*data*, as for :func:`receive_whole_head`) that
    twisted.web would take without a second thought, for a handler that answers it
    without a twisted.web request: ``(match, headers)``, where *match* is
    *request_line*'s full match of the request line and *headers* maps each header's
    canonical name to its value. None, having done nothing, for anything else.

    Only what twisted.web accepts is plain: a request line *request_line* matches
    (its own pattern is at most as wide as ``_parseRequestLine``'s), headers whose
    names twisted.web has seen and checked before, each once, with values free of
    NUL, CR and LF, no more of them than ``maxHeaders``, none of ``_NOT_PLAIN``, and
    no ``Connection: close`` (``checkPersistence``'s reading: its answer would close).
    """
    if not _ready_for_a_head(channel, data):
        return None
    lines = data[:-4].split(b"\r\n")
    if len(lines) > channel.maxHeaders + 1:
        return None
    match = request_line.fullmatch(lines[0])
    if match is None:
        return None
    canonical_names = _CANONICAL_NAMES
    headers = {}
    for index in range(1, len(lines)):
        name, colon, value = lines[index].partition(b":")
        canonical = canonical_names.get(name) if colon else None
        if canonical is None or canonical in _NOT_PLAIN or canonical in headers:
            return None  # no colon, a name not seen before (or folded, or with spaces)...
        value = value.strip(b" \t")
        if b"\r" in value or b"\n" in value or b"\x00" in value:
            return None
        headers[canonical] = value
    connection = headers.get(b"Connection")
    if connection is not None and b"close" in [t.lower() for t in connection.split(b" ")]:
        return None
    channel.resetTimeout()
    return match, headers


# What twisted.web's _parseRequestLine accepts, as one match: a token, a target of
# printable bytes (33 to 176), HTTP/1.0 or 1.1. It checks the target byte by byte in
# Python (3 us for an SSE connect's URL); a line this does not match goes to it.
_PLAIN_REQUEST_LINE = re.compile(
    rb"([A-Za-z0-9!#$%&'*+\-.^_`|~]+) ([\x21-\xb0]+) (HTTP/1\.[01])")


def _request_line(line):
    """``(method, target, version)`` as ``_parseRequestLine`` gives it (ValueError
    when it refuses the line)."""
    match = _PLAIN_REQUEST_LINE.fullmatch(line)
    if match is None:
        return _parseRequestLine(line)
    return match.groups()


_FRAMING = frozenset((b"Content-Length", b"Transfer-Encoding"))
_CANONICAL_NAMES = _nameEncoder._canonicalHeaderCache


def _take_headers(channel, raw_headers, lines):
    """Each header line of *lines* (after the request line) into *raw_headers*, with
    ``headerReceived``'s checks; False when one failed (the 400 is on its way). A
    name twisted.web has seen and checked before is looked up in its cache of
    canonical names, a value without NUL, CR or LF kept as it is (stripped); any
    other line, and the body's framing headers, go through ``headerReceived``."""
    header = channel.headerReceived
    canonical_names = _CANONICAL_NAMES
    for index in range(1, len(lines)):
        line = lines[index]
        name, colon, value = line.partition(b":")
        canonical = canonical_names.get(name) if colon else None
        if canonical is None or canonical in _FRAMING:
            if not header(line):
                return False
            continue
        value = value.strip(b" \t")
        if b"\r" in value or b"\n" in value or b"\x00" in value:
            if not header(line):
                return False
            continue
        values = raw_headers.get(canonical)
        if values is None:
            raw_headers[canonical] = [value]
        else:
            values.append(value)
    return True
