"""An SSE connect served from its request head alone, without a twisted.web request.

A reconnect storm is SSE connects: ``GET /_rig/v1/connection/sse`` with a query
and a few plain headers, in one read. twisted.web's request (made, parsed,
processed, routed, and torn down when the client leaves) was over a third of
such a connect's Python. When the head is plain (``rig.twistedcompat.plain_head``:
nothing twisted.web would judge differently) and the connect is admitted at once,
the lane answers it here and the channel carries the stream; anything else (an
error to answer, a subscription check to wait for, a header twisted.web has not
seen, HTTP/1.0, POST, HEAD, ``Connection: close``, a body) goes the ordinary way, to
``serve_sse``, which answers it as before. Both ways send the same bytes
(``tests/test_sse_lane.py`` compares them).
"""
import re

from rig.connections.setup import SetupError, admit_unchecked
from rig.connections.sse import SSEConnection, last_event_id
from rig.hub.outbox import write_now
from rig.tracing.context import trace_context
from rig.twistedcompat import plain_head

# the target's bytes as twisted.web accepts them (33 to 176), the query only
_SSE_CONNECT = re.compile(rb"GET /_rig/v1/connection/sse(?:\?([\x21-\xb0]*))? HTTP/1\.1")


class LaneRequest:
    """What an SSEConnection needs of its request: the channel, chunked framing, and
    ``finish()`` (the stream ends: the last chunk, then the channel serves on)."""

    __slots__ = ("channel",)
    chunked = True

    def __init__(self, channel):
        self.channel = channel

    def finish(self):
        channel = self.channel
        if channel.transport is not None:
            write_now(channel.transport, b"0\r\n\r\n")
        channel.end_lane_stream()


class SSELane:
    """``lane(channel, data)``: True when it served the connect in *data* (a whole
    head), False when it did nothing and the ordinary path must."""

    prefix = b"GET /_rig/v1/connection/sse"  # what a head must start with to be asked

    def __init__(self, hub, headers):
        self.hub = hub
        self._headers = b"".join(b"%s: %s\r\n" % pair for pair in headers)

    def __call__(self, channel, data):
        head = plain_head(channel, data, _SSE_CONNECT)
        if head is None:
            return False
        match, headers = head
        query = match.group(1)
        args = channel.site.query_args(query) if query else {}
        trace = trace_context(headers.get(b"Traceparent"), headers.get(b"Tracestate"))
        hub = self.hub
        try:
            admission = admit_unchecked(
                hub, args, trace=trace, last_event_id=last_event_id(headers.get(b"Last-Event-Id")))
        except SetupError:
            return False  # the ordinary path answers it (nothing was counted)
        if admission is None:
            return False  # a subscription check answers first: the ordinary path waits
        response_head = (
            b"HTTP/1.1 200 OK\r\nDate: %s\r\n%sTransfer-Encoding: chunked\r\n\r\n"
            % (channel.site.date_header(), self._headers))
        connection = SSEConnection(hub, LaneRequest(channel), hub.new_local_id(),
                                   head=response_head)
        channel.open_lane_stream(connection)
        if admission.join(hub, connection) is not None:
            connection.heartbeat()  # the cluster is yet to confirm: the head goes out now
        return True
