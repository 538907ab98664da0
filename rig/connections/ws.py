"""WebSocket: ``GET /_rig/v1/connection/ws`` (spec Part B 2.4), mounted in the inbound Site.

A well-formed upgrade always succeeds (:mod:`rig.connections.upgrade` checks
the opening handshake); RIG's validation runs once the socket is open, and a
refusal is a close frame (code 1000, or 1001 while the node shuts down) with
RIG's reason. The protocol object is itself the hub connection, to keep an
idle connection small.
"""
from types import FunctionType

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.util import encode_truncate
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from rig.connections.frames import WS_PING, ws_frame
from rig.connections.setup import SetupError, admit_at_once
from rig.connections.upgrade import WebSocketUpgrade
from rig.hub.closing import SHUTDOWN
from rig.hub.interface import IConnection
from rig.hub.outbox import buffered_bytes, write_now

_OPEN = WebSocketServerProtocol.STATE_OPEN  # a global: read once per frame, on the hot path
_SWITCHING = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Accept: %s\r\n\r\n")
NO_TWO_WAY = "This WebSocket endpoint cannot be used for two-way communication."
TOO_SLOW = "Too slow."
# What autobahn's own opening handshake kept, never read once the socket is open. That
# handshake no longer runs (rig.connections.upgrade answers it): only _transport_details
# (set on every connection) is still dropped; the rest stay None on the class, for any
# autobahn code that reads them.
_HANDSHAKE_LEFTOVERS = (
    "http_request_data", "http_headers", "http_response_data", "http_request_params",
    "http_request_uri", "http_request_path", "http_request_host", "http_status_line",
    "websocket_protocols", "websocket_extensions", "websocket_origin", "_wskey",
    "_transport_details",
)
# What autobahn sets on every connection that an open, idle one holds at these values.
# They are class attributes here (None for the leftovers), and an open connection drops
# its own copies: an idle connection's __dict__ shrinks from 90 entries (3.3 KB) to 17.
_IDLE_DEFAULTS = dict.fromkeys((
    *_HANDSHAKE_LEFTOVERS, "websocket_protocol_in_use", "_perMessageCompress",
    "trackedTimings", "wasNotCleanReason", "localCloseCode", "localCloseReason",
    "remoteCloseCode", "remoteCloseReason", "openHandshakeTimeoutCall",
    "closeHandshakeTimeoutCall", "autoPingTimeoutCall", "autoPingPending",
    "autoPingPendingCall", "autoPingPendingSent", "current_frame", "_query",
))
_IDLE_DEFAULTS.update(dict.fromkeys((
    "triggered", "wasMaxFramePayloadSizeExceeded", "wasMaxMessagePayloadSizeExceeded",
    "closedByMe", "failedByMe", "droppedByMe", "wasClean", "wasServerConnectionDropTimeout",
    "wasOpenHandshakeTimeout", "wasCloseHandshakeTimeout", "wasServingFlashSocketPolicyFile",
    "inside_message",
), False))
_IDLE_DEFAULTS.update(data=b"", autoPingPendingSeq=0,
                      send_state=WebSocketServerProtocol.SEND_STATE_GROUND)


class _SendQueue(list):
    """autobahn's queue for chopped or synchronous sends (which txrig never makes):
    a list, where autobahn's deque costs 760 bytes per connection before a byte is queued."""

    __slots__ = ()

    def popleft(self):
        return self.pop(0)


def _with_idle_defaults(cls):
    """Give *cls* the values an idle connection drops from its own __dict__ (``_slim``)."""
    for name, default in _IDLE_DEFAULTS.items():
        setattr(cls, name, default)
    return cls


class _NoDebugLogger(Logger):
    """autobahn logs the raw opening handshake at debug level, ``?jwt=`` and all;
    a client's token must never reach the logs, so its debug events are dropped.

    One logger serves every connection: a Logger class attribute is a descriptor that
    makes a new Logger on every ``self.log``, and autobahn reads it several times in
    each handshake."""

    def __get__(self, instance, owner=None):
        return self

    def debug(self, format=None, **kwargs):
        pass


@implementer(IConnection)
@_with_idle_defaults
class RigWebSocketProtocol(WebSocketServerProtocol):
    kind = "ws"
    framer = staticmethod(ws_frame)
    log = _NoDebugLogger("rig.connections.ws.RigWebSocketProtocol")

    local_id = None
    token = None
    coalesce = True
    websocket_version = 13  # the only one rig.connections.upgrade accepts
    _send_limit = None  # SEND_QUEUE_LIMIT, read once when the connection goes live
    _awaiting_pong = False
    _query = None

    def __repr__(self):
        return f"<WebSocketConnection {self.local_id}>"

    def sendData(self, data, sync=False, chopsize=None):
        """autobahn's own writes (close frames; deliveries never come here) go straight
        to the socket when nothing waits before them: a buffered write cost every
        connection two poller calls and a reactor turn, and autobahn formats a debug
        line for each. The 101 answer goes first if it has not gone out yet."""
        if "_head" in self.__dict__:
            data = self._take_head() + data
        if sync or chopsize or self.send_queue:
            super().sendData(data, sync, chopsize)
        else:
            write_now(self.transport, data)

    def open_upgraded(self, accept, query, trace):
        """Answer the opening handshake that :mod:`rig.connections.upgrade` checked, and
        open: what autobahn's own handshake ends with. *query* (the request's arguments)
        and *trace* (its trace context, for an external subscription check) go to the
        admission."""
        self.send_queue = _SendQueue()  # still empty: nothing is sent before the answer
        self._query = query, trace
        # the 101 goes out with the welcome frames, in one send (as an SSE response head
        # does), or on its own as soon as the welcome is not coming within this call
        self._head = _SWITCHING % accept
        self.write_frame = self._write_after_head
        self.state = _OPEN
        self._onOpen()
        self.is_open.callback(None)

    def _take_head(self):
        """The 101 answer not yet sent (taken: it goes out once)."""
        self.__dict__.pop("write_frame", None)  # an instance's own: a cycle while it lasts
        return self.__dict__.pop("_head")

    def _write_after_head(self, data):
        data = self._take_head() + data
        self.write_frame(data)  # the class's, now

    def _send_head(self):
        if "_head" in self.__dict__ and self.transport is not None:
            write_now(self.transport, self._take_head())

    # -- autobahn callbacks ---------------------------------------------

    def onOpen(self):
        handshake, self._query = self._query, None
        self._slim()
        query, trace = handshake
        try:
            admission = admit_at_once(self.factory.hub, query, trace=trace)
            if isinstance(admission, Deferred):  # a subscription check is asked
                self._send_head()  # the 101 goes out now
                admission.addCallbacks(self._admitted, self._refused_after_check) \
                    .addErrback(self._admit_failed)
            else:
                self._admitted(admission)
        except SetupError as error:
            self._refuse(error)
        except Exception:
            self._admit_failed(Failure())

    def _admit_failed(self, failure):
        """Never leave a half-made connection open: log, and close it (1011)."""
        self.log.failure("admitting a WebSocket", failure)
        if self.local_id is not None:
            self.factory.hub.unregister(self)
        if self.state == self.STATE_OPEN:
            self.sendCloseFrame(code=1011, reasonUtf8=b"Internal error.", isReply=False)
        self.dropConnection(abort=False)

    def _refuse(self, error):
        # not sendClose: it refuses 1001, the code for "this node is going away"
        self.sendCloseFrame(code=error.close_code, isReply=False,
                            reasonUtf8=encode_truncate(error.close_reason, 123))

    def _refused_after_check(self, failure):
        failure.trap(SetupError)  # anything else is _admit_failed's
        self._refuse(failure.value)

    def _admitted(self, admission):
        if self.state != self.STATE_OPEN:
            return  # the client left while we were checking
        hub = self.factory.hub
        self.local_id = hub.new_local_id()
        self.token = hub.token_for(self.local_id)
        self._send_limit = hub.send_queue_limit
        if admission.join(hub, self) is not None:  # the cluster is yet to confirm
            self._send_head()

    def _slim(self):
        """Drop the attributes an idle connection holds at their class defaults (the
        handshake's among them) and compact what is left: idle connections stay small."""
        own = self.__dict__
        for name in _HANDSHAKE_LEFTOVERS:
            own.pop(name, None)
        for name, default in _IDLE_DEFAULTS.items():
            value = own.get(name, own)
            if value is default or (value is not own and value == default
                                    and type(value) is type(default)):
                del own[name]
        self.__dict__ = dict(own)  # a dict never shrinks by deletion; a copy is compact

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

    def connectionLost(self, reason):
        """Leave no reference cycle for the garbage collector (it made every WebSocket
        survive into the older generations): autobahn fires ``is_closed`` with the
        connection itself (once fired, a Deferred fired with None serves ``close()`` as
        well), and a 101 never sent keeps ``write_frame`` bound on the instance."""
        super().connectionLost(reason)
        self.__dict__.pop("write_frame", None)
        self.__dict__.pop("_head", None)
        if self.is_closed.called:
            self.is_closed = succeed(None)

    # -- hub connection --------------------------------------------------

    def deliver(self, frame):
        if self.state == self.STATE_OPEN:
            self.factory.hub.outbox.push(self, frame)

    def send_rig_event(self, *events):
        self.deliver(b"".join([ws_frame(event, None) for event in events]))

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
            # the socket arrives open (rig.connections.upgrade answered the handshake;
            # twisted.web's head timeout bounds a slow one): a timer set and cancelled
            # for every connection would guard nothing
            openHandshakeTimeout=0,
            maxFramePayloadSize=65536,
            maxMessagePayloadSize=65536,
            perMessageCompressionAccept=_no_compression,
        )
        self.protocol = _configured(RigWebSocketProtocol, self)


def _no_compression(offers):
    return None


def _configured(protocol, factory):
    """A subclass of *protocol* holding *factory*'s options as class attributes.

    autobahn copies about 30 options from the factory onto every new connection
    (and pretty-prints them for a debug line, even when nothing logs it): a third
    of a WebSocket's set-up time in a reconnect storm, and 30 entries in every
    idle connection's __dict__. With the options on the class there is nothing
    to copy.
    """
    options = {name: getattr(factory, name) for name in protocol.CONFIG_ATTRS}
    for name, value in options.items():
        if isinstance(value, FunctionType):  # a callback option must not become a method
            options[name] = staticmethod(value)
    return type(protocol.__name__, (protocol,), {**options, "CONFIG_ATTRS": ()})


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
    return WebSocketUpgrade(factory)
