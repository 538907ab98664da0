"""Frames, built once per event per transport kind and shared by every receiver."""
import re

from autobahn.websocket.protocol import PreparedMessage

_NEWLINES = re.compile(rb"\r\n|\r|\n")
HEARTBEAT = b": heartbeat\n\n"
WS_PING = b"\x89\x00"


def ws_frame(event, seq):
    """An unmasked WebSocket text frame holding the event JSON."""
    return PreparedMessage(event.json, False, False, True).payloadHybi


def sse_message(event, seq):
    """``id:``, ``event:`` and one ``data:`` line per line of the JSON (spec 2.3)."""
    name = event.type.encode("utf-8").replace(b"\n", b" ").replace(b"\r", b" ")
    head = b"event: " + name + b"\n" if seq is None else b"id: %d\nevent: %s\n" % (seq, name)
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


def sse_chunked_frame(event, seq):
    return chunk(sse_message(event, seq))


def sse_plain_frame(event, seq):
    return sse_message(event, seq)


def longpoll_frame(event, seq):
    return event.json
