"""Server-Sent Events: ``GET /_rig/v1/connection/sse`` (spec Part B 2.3)."""
from functools import partial

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from rig.connections.frames import HEARTBEAT, chunk, sse_chunked_frame, sse_plain_frame
from rig.connections.setup import SetupError, admit_at_once
from rig.events import rig_event
from rig.httputil import client_gone, respond
from rig.hub.closing import SHUTDOWN
from rig.hub.interface import IConnection
from rig.hub.outbox import buffered_bytes, write_now, write_stream
from rig.tracing.context import request_trace_context
from rig.twistedcompat import is_h2_stream


@implementer(IConnection)
class SSEConnection:
    """One event stream; frames go straight to the HTTP channel's transport, or over
    HTTP/2 to the request's stream (its connection is shared, and flow-controlled)."""

    kind = "sse"
    log = Logger()
    __slots__ = (
        "__weakref__",
        "_head",
        "_heartbeat",
        "_send_limit",
        "framer",
        "http2",
        "hub",
        "local_id",
        "request",
        "token",
        "transport",
    )

    def __init__(self, hub, request, local_id, head=b""):
        self.hub = hub
        self.request = request
        channel = request.channel
        self.http2 = is_h2_stream(channel)
        self.transport = channel if self.http2 else channel.transport
        self._head = head  # the response head, sent with the first frame
        self.local_id = local_id
        self.token = hub.token_for(local_id)
        self._send_limit = hub.send_queue_limit
        if request.chunked:
            self.framer, self._heartbeat = sse_chunked_frame, chunk(HEARTBEAT)
        else:
            self.framer, self._heartbeat = sse_plain_frame, HEARTBEAT

    def __repr__(self):
        return f"<SSEConnection {self.local_id}>"

    def deliver(self, frame):
        if self.transport is not None:
            self.hub.outbox.push(self, frame)

    def send_rig_event(self, *events):
        """RIG's own events carry the current position, so that a client that
        saw nothing else since still resumes from where it was.

        The welcome, the stream's first bytes, goes out at once with the response
        head: nothing can be queued for a stream before them, so they need not wait
        for the outbox's flush at the end of the reactor's turn."""
        position, framer = self.hub.history.position_id(), self.framer
        frames = b"".join([framer(event, position) for event in events])
        if self._head:
            self.write_frame(frames)
        else:
            self.deliver(frames)

    def heartbeat(self):
        self.deliver(self._heartbeat)

    coalesce = True

    def write_frame(self, data):
        transport = self.transport
        if self._head:
            data, self._head = self._head + data, b""
        if transport is None:
            return
        if self.http2:
            if write_stream(transport, data, self._send_limit):
                return
        elif write_now(transport, data, self._send_limit):
            return
        self.hub.slow_client(self, buffered_bytes(transport), self.hub.send_queue_limit,
                             "stream ended")
        self.hub.unregister(self)
        self.transport = None
        transport.abortConnection()

    def close(self, reason=SHUTDOWN):
        """End the stream (after a last RIG event, if the reason has one)."""
        self.hub.outbox.flush()  # what was queued for this stream goes out first
        transport, self.transport = self.transport, None
        self.hub.unregister(self)
        if transport is None:
            return
        last = b""
        if reason.sse_event is not None:
            last = self.framer(rig_event(reason.sse_event, None, now=self.hub.reactor.seconds()),
                               self.hub.history.position_id())
        last, self._head = self._head + last, b""
        if last:
            (write_stream if self.http2 else write_now)(transport, last)
        self.request.finish()

    def _lost(self):
        """The client left (the stream had not ended)."""
        self.transport = None
        self.hub.unregister(self)


def last_event_id(value):
    """The ``Last-Event-ID`` header's *value* (bytes, or None when absent) as text, as a
    reconnecting EventSource means it (None if absent or blank)."""
    return value.decode("utf-8", "replace").strip() or None if value else None


def sse_headers(cors):
    """The response headers of every stream (``CORS`` allowing *cors*): made once, by
    twisted.web's ``Headers``, which checks names and values as ``setHeader`` would."""
    headers = Headers()
    headers.setRawHeaders(b"content-type", [b"text/event-stream; charset=utf-8"])
    headers.setRawHeaders(b"cache-control", [b"no-cache"])
    headers.setRawHeaders(b"access-control-allow-origin", [cors])
    return tuple((name, value) for name, values in headers.getAllRawHeaders()
                 for value in values)


def serve_sse(hub, headers, request):
    """Validate, answer 200 with the stream *headers* (:func:`sse_headers`), and
    register the connection (at once, unless an external subscription check has to
    answer first). HEAD gets the head a GET would get, and no stream."""
    try:
        admission = admit_at_once(hub, request.args,
                                  last_event_id=last_event_id(request.getHeader(b"last-event-id")),
                                  trace=request_trace_context(request))
    except SetupError as error:
        return _refused(request, error)
    if isinstance(admission, Deferred):
        return admission.addCallbacks(partial(_open_stream, hub, headers, request),
                                      partial(_refused_after_check, request))
    return _open_stream(hub, headers, request, admission)


def _refused(request, error):
    return respond(request, error.status, error.message, content_type=None)


def _refused_after_check(request, failure):
    failure.trap(SetupError)  # anything else is the router's 500
    return _refused(request, failure.value)


def _open_stream(hub, headers, request, admission):
    if client_gone(request):
        return NOT_DONE_YET  # the client left while we were checking
    if request.method == b"HEAD":
        for name, value in headers:
            request.setHeader(name, value)
        return b""
    # the head goes out with the welcome (one send, not two); frames follow on the raw
    # transport
    connection = SSEConnection(hub, request, hub.new_local_id(),
                               head=request.start_stream(headers))
    request.on_gone = connection._lost  # as notifyFinish's errback, without a Deferred
    if admission.join(hub, connection) is not None:
        connection.heartbeat()  # the cluster is yet to confirm: the head goes out now
    return NOT_DONE_YET
