"""The WebSocket opening handshake, on the request twisted.web has already parsed.

autobahn's ``WebSocketResource`` wrote the request head out again and fed it to
the protocol, which parsed it and its query string a second time, checked it,
and answered through two layers of Deferreds and eagerly formatted debug lines:
a fifth of a WebSocket's set-up. Here the checks RFC 6455 asks of a server run
on twisted.web's request (a refusal is an ordinary HTTP answer, and the
connection closes after it), the ``101`` goes out at once, and the autobahn
protocol takes the socket already open (``RigWebSocketProtocol.open_upgraded``).
The subprotocol and extension offers are declined, as before: none is spoken.
"""
import base64
import hashlib
import re

from twisted.protocols.policies import ProtocolWrapper
from twisted.web.server import NOT_DONE_YET

from rig.httputil import TEXT, respond
from rig.tracing.context import request_trace_context

_KEY = re.compile(rb"[A-Za-z0-9+/]{22}==")  # 16 bytes in base64 (as autobahn checked it)
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3
VERSION = b"13"


def accept_value(key):
    """``Sec-WebSocket-Accept`` for the client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def refusal(request):
    """``(status, reason, headers)`` when *request* (an ``Upgrade: websocket`` GET)
    cannot open a WebSocket, else None."""
    if request.method != b"GET":  # the router serves HEAD as GET
        return 405, "A WebSocket opens with GET.", ((b"allow", b"GET"),)
    if request.clientproto != b"HTTP/1.1":
        return 505, "WebSocket needs HTTP/1.1.", ()
    headers = request.requestHeaders
    if len(headers.getRawHeaders(b"host", ())) != 1:
        return 400, "One Host header is required.", ()
    tokens = b",".join(headers.getRawHeaders(b"connection", ())).lower().split(b",")
    if b"upgrade" not in (token.strip() for token in tokens):
        return 400, 'The Connection header must include "Upgrade".', ()
    versions = headers.getRawHeaders(b"sec-websocket-version", ())
    if len(versions) != 1 or versions[0].strip() != VERSION:
        return 400, "WebSocket version 13 is the one supported.", (
            (b"sec-websocket-version", VERSION),)
    keys = headers.getRawHeaders(b"sec-websocket-key", ())
    if len(keys) != 1 or _KEY.fullmatch(keys[0].strip()) is None:
        return 400, "One Sec-WebSocket-Key of 16 bytes in base64 is required.", ()
    return None


class WebSocketUpgrade:
    """Opens a WebSocket of *factory*'s protocol on a request's connection."""

    def __init__(self, factory):
        self._factory = factory

    def render(self, request):
        refused = refusal(request)
        if refused is not None:
            status, reason, headers = refused
            request.channel.close_when_done()  # the client expects no HTTP after this
            return respond(request, status, reason, TEXT, headers=headers)
        channel = request.channel
        transport = channel.transport
        protocol = self._factory.buildProtocol(transport.getPeer())
        channel.transport = None
        channel.let_go(transport)
        if isinstance(transport, ProtocolWrapper):  # TLS: the protocol under the TLS layer
            transport.wrappedProtocol = protocol
        else:
            transport.protocol = protocol
        protocol.makeConnection(transport)
        transport.resumeProducing()  # twisted.web paused reading while it handled the head
        key = request.requestHeaders.getRawHeaders(b"sec-websocket-key")[0].strip()
        protocol.open_upgraded(accept_value(key), request.args, request_trace_context(request))
        return NOT_DONE_YET
