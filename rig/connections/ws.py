"""WebSocket: ``GET /_rig/v1/connection/ws`` (spec Part B 2.4), mounted in the inbound Site.

The upgrade always succeeds; validation runs once the socket is open, and a
refusal is a close frame (code 1000, or 1001 while the node shuts down) with
RIG's reason. The protocol object is itself the hub connection, to keep an
idle connection small.
"""
from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.util import encode_truncate
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from zope.interface import implementer

from rig.connections.frames import WS_PING, ws_frame
from rig.connections.setup import SetupError, admit
from rig.hub.closing import SHUTDOWN
from rig.hub.interface import IConnection
from rig.hub.outbox import buffered_bytes, no_delay, write_now

_OPEN = WebSocketServerProtocol.STATE_OPEN  # a global: read once per frame, on the hot path
NO_TWO_WAY = "This WebSocket endpoint cannot be used for two-way communication."
TOO_SLOW = "Too slow."
_HANDSHAKE_LEFTOVERS = (
    "http_request_data", "http_headers", "http_response_data", "http_request_params",
    "http_request_uri", "http_request_path", "http_request_host", "http_status_line",
    "websocket_protocols", "websocket_extensions",
)


class _NoDebugLogger(Logger):
    """autobahn logs the raw opening handshake at debug level, ``?jwt=`` and all;
    a client's token must never reach the logs, so its debug events are dropped."""

    def debug(self, format=None, **kwargs):
        pass


@implementer(IConnection)
class RigWebSocketProtocol(WebSocketServerProtocol):
    kind = "ws"
    framer = staticmethod(ws_frame)
    log = _NoDebugLogger()

    local_id = None
    token = None
    coalesce = True
    _send_limit = None  # SEND_QUEUE_LIMIT, read once when the connection goes live
    _awaiting_pong = False
    _query = None

    def __repr__(self):
        return f"<WebSocketConnection {self.local_id}>"

    # -- autobahn callbacks ---------------------------------------------

    def onConnect(self, request):
        self._query = request.params

    def onOpen(self):
        query, self._query = self._query, None
        self._forget_handshake()
        ensureDeferred(self._admit(query)).addErrback(self._admit_failed)

    def _admit_failed(self, failure):
        """Never leave a half-made connection open: log, and close it (1011)."""
        self.log.failure("admitting a WebSocket", failure)
        if self.local_id is not None:
            self.factory.hub.unregister(self)
        if self.state == self.STATE_OPEN:
            self.sendCloseFrame(code=1011, reasonUtf8=b"Internal error.", isReply=False)
        self.dropConnection(abort=False)

    async def _admit(self, query):
        hub = self.factory.hub
        try:
            admission = await admit(hub, query)
        except SetupError as error:
            # not sendClose: it refuses 1001, the code for "this node is going away"
            self.sendCloseFrame(code=error.close_code, isReply=False,
                                reasonUtf8=encode_truncate(error.close_reason, 123))
            return
        if self.state != self.STATE_OPEN:
            return  # the client left while we were checking
        self.local_id = hub.new_local_id()
        self.token = hub.token_for(self.local_id)
        self._send_limit = hub.send_queue_limit
        no_delay(self.transport)
        admission.join(hub, self)

    def _forget_handshake(self):
        """Drop what autobahn keeps of the HTTP handshake: idle connections stay small."""
        for name in _HANDSHAKE_LEFTOVERS:
            if name in self.__dict__:
                setattr(self, name, None)

    def onMessageBegin(self, isBinary):
        if self.state == self.STATE_OPEN:
            self.sendClose(1000, NO_TWO_WAY)
        super().onMessageBegin(isBinary)

    def onMessage(self, payload, isBinary):
        pass

    def onPong(self, payload):
        self._awaiting_pong = False

    def onClose(self, wasClean, code, reason):
        if self.local_id is not None:
            self.factory.hub.unregister(self)

    # -- hub connection --------------------------------------------------

    def deliver(self, frame):
        if self.state == self.STATE_OPEN:
            self.factory.hub.outbox.push(self, frame)

    def send_rig_event(self, event):
        self.deliver(ws_frame(event, None))

    def heartbeat(self):
        """Ping; a peer that did not answer the previous ping is gone."""
        if self._awaiting_pong:
            self.log.info("WebSocket {local_id} did not answer a ping", local_id=self.local_id)
            self.factory.hub.unregister(self)
            self.dropConnection(abort=True)
            return
        self._awaiting_pong = True
        self.deliver(WS_PING)

    def write_frame(self, data):
        transport = self.transport
        if transport is None or self.state != _OPEN:
            return
        if not write_now(transport, data, self._send_limit):
            self._too_slow()

    def _too_slow(self):
        hub = self.factory.hub
        hub.slow_client(self, buffered_bytes(self.transport), hub.send_queue_limit,
                        "closed 1008 " + TOO_SLOW)
        hub.unregister(self)
        self.sendCloseFrame(code=1008, reasonUtf8=TOO_SLOW.encode(), isReply=False)

    def onPing(self, payload):
        """Answer, unless the client's unread pongs (a ping flood) are over the limit."""
        transport = self.transport
        if transport is not None and buffered_bytes(transport) > self.factory.hub.send_queue_limit:
            if self.state == self.STATE_OPEN:
                self._too_slow()
            return
        super().onPing(payload)

    def close(self, reason=SHUTDOWN):
        """Send the close frame; the Deferred returned fires once the connection is gone."""
        hub = self.factory.hub
        hub.unregister(self)
        hub.outbox.flush()  # what was queued for this connection goes out before the close
        if self.state == self.STATE_OPEN:
            self.sendCloseFrame(
                code=reason.ws_code, reasonUtf8=(reason.ws_reason or "").encode(), isReply=False
            )
        return _fired_with(self.is_closed)


class RigWebSocketFactory(WebSocketServerFactory):
    protocol = RigWebSocketProtocol

    def __init__(self, hub):
        super().__init__()
        self.hub = hub
        self.setProtocolOptions(
            autoPingInterval=0,  # the hub pings every connection from one timer
            maxFramePayloadSize=65536,
            maxMessagePayloadSize=65536,
            perMessageCompressionAccept=lambda offers: None,
        )


def _fired_with(source):
    """A new Deferred firing (with None) when *source* does; *source*'s result is untouched."""
    fired = Deferred()

    def fire(result):
        fired.callback(None)
        return result

    source.addBoth(fire)
    return fired


def websocket_resource(hub):
    factory = RigWebSocketFactory(hub)
    factory.startFactory()
    return WebSocketResource(factory)
