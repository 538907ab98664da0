"""Frames, built once per event per transport kind and shared by every receiver."""
import re

from autobahn.websocket.protocol import PreparedMessage

_NEWLINES = re.compile(rb"\r\n|\r|\n")
HEARTBEAT = b": heartbeat\n\n"
WS_PING = b"\x89\x00"


def ws_frame(event, position):
    """An unmasked WebSocket text frame holding the event JSON."""
    return PreparedMessage(event.json, False, False, True).payloadHybi


def sse_message(event, position):
    """``id:`` (the history position), ``event:`` and one ``data:`` line per line
    of the JSON (spec 2.3)."""
    name = event.type.encode("utf-8").replace(b"\n", b" ").replace(b"\r", b" ")
    head = b"event: " + name + b"\n" if position is None else b"id: %s\nevent: %s\n" % (
        position, name)
    data = event.json
    if b"\n" in data or b"\r" in data:
        lines = _NEWLINES.split(data)
        body = b"".join(b"data: " + line + b"\n" for line in lines)
    else:
        body = b"data: " + data + b"\n"
    return head + body + b"\n"


def chunk(data):
    """HTTP/1.1 chunked transfer framing for *data*."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse_chunked_frame(event, position):
    return chunk(sse_message(event, position))


def sse_plain_frame(event, position):
    return sse_message(event, position)


def longpoll_frame(event, position):
    return event.json
