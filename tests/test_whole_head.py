"""A request head that arrives whole in one read is taken in without the line-by-line
path (``rig.twistedcompat.receive_whole_head``): every head here must be answered
byte for byte as the line-by-line path answers it, bad ones included."""
import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.server import NOT_DONE_YET

import rig.web.http
from rig.web.http import RigSite, Router


def _site(seen):
    def record(request):
        seen.append((request.method, request.uri, request.clientproto,
                     sorted(request.requestHeaders.getAllRawHeaders()),
                     request.content.read()))
        if request.path == b"/park":
            return NOT_DONE_YET
        if request.path == b"/feed":  # more bytes arrive while this request is handled
            request.channel.dataReceived(b"GET /fed HTTP/1.1\r\nHost: y\r\n\r\n")
        return b"ok"

    return RigSite(Router([], record), reactor=Clock())


def _answer(reads, *, whole_head_path=True):
    """What a fresh channel answers to *reads* (one ``dataReceived`` each), what its
    handler saw, and whether it closed."""
    seen = []
    channel = _site(seen).buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    transport = StringTransport()
    channel.makeConnection(transport)
    original = rig.web.http.receive_whole_head
    if not whole_head_path:
        rig.web.http.receive_whole_head = lambda channel, data: False
    try:
        for data in reads:
            if transport.disconnecting:
                break
            channel.dataReceived(data)
    finally:
        rig.web.http.receive_whole_head = original
    return transport.value(), seen, transport.disconnecting


HEADS = {
    "plain GET": b"GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n",
    "no headers": b"GET / HTTP/1.1\r\n\r\n",
    "names in odd case, repeated, spaced values": (
        b"GET / HTTP/1.1\r\nhost: x\r\nACCEPT:  a/b\t\r\naccept:c\r\nX-Empty:\r\n"
        b"content-md5: q\r\nX-Latin: \xe9t\xe9\r\n\r\n"),
    "HTTP/1.0": b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
    "absolute target": b"GET http://x/a HTTP/1.1\r\nHost: x\r\n\r\n",
    "Content-Length: 0": b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    "Connection: close": b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "header without a colon": b"GET / HTTP/1.1\r\nHost\r\n\r\n",
    "space before the colon": b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    "bad name": b"GET / HTTP/1.1\r\nX\x00Y: x\r\n\r\n",
    "NUL in a value": b"GET / HTTP/1.1\r\nX-A: a\x00b\r\n\r\n",
    "bare LF in a value": b"GET / HTTP/1.1\r\nX-A: a\nb\r\n\r\n",
    "bare CR in a value": b"GET / HTTP/1.1\r\nX-A: a\rb\r\n\r\n",
    "folded header": b"GET / HTTP/1.1\r\nX-A: a\r\n  b\r\nHost: x\r\n\r\n",
    "bad request line": b"GET /\r\nHost: x\r\n\r\n",
    "bad version": b"GET / HTTP/9\r\nHost: x\r\n\r\n",
    "blank line first": b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad Content-Length": b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
    "two framings": (b"POST / HTTP/1.1\r\nContent-Length: 1\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n"),
    "501 headers": b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 501 + b"\r\n",
    "500 headers": b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 500 + b"\r\n",
    "two requests in one read": b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
    "head with its body": b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
    "a line over the limit": b"GET / HTTP/1.1\r\nX-A: " + b"a" * 40000 + b"\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_a_head_in_one_read_is_answered_as_line_by_line(name):
    head = HEADS[name]
    assert _answer([head]) == _answer([head], whole_head_path=False)


@pytest.mark.parametrize("reads", [
    [b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n", b"hel", b"lo"],
    [b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", b"5\r\nhello\r\n0\r\n\r\n"],
    [b"GET /1 HTTP/1.1\r\n\r\n", b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"],
    [b"GET /park HTTP/1.1\r\n\r\n", b"GET /2 HTTP/1.1\r\n\r\n"],  # arrives while one is open
    [b"GET /1 HTTP/1.0\r\n\r\n", b"GET /2 HTTP/1.1\r\n\r\n"],  # after a last request
    [b"GET /feed HTTP/1.1\r\n\r\n"],
])
def test_a_body_or_the_next_request_in_a_later_read_is_answered_as_line_by_line(reads):
    assert _answer(reads) == _answer(reads, whole_head_path=False)


def test_the_heads_above_are_answered_and_refused_as_expected():
    """The comparison above would pass with both paths broken alike."""
    assert _answer([HEADS["plain GET"]])[1] == [
        (b"GET", b"/a?b=c", b"HTTP/1.1", [(b"Host", [b"x"])], b"")]
    assert _answer([HEADS["names in odd case, repeated, spaced values"]])[1][0][3] == [
        (b"Accept", [b"a/b", b"c"]), (b"Content-MD5", [b"q"]), (b"Host", [b"x"]),
        (b"X-Empty", [b""]), (b"X-Latin", [b"\xe9t\xe9"])]
    for bad in ("header without a colon", "space before the colon", "bad name",
                "NUL in a value", "bare LF in a value", "bad request line", "two framings",
                "501 headers"):
        answer, seen, closed = _answer([HEADS[bad]])
        assert answer.startswith(b"HTTP/1.1 400 Bad Request") and closed and not seen, bad
    assert len(_answer([HEADS["500 headers"]])[1][0][3][0][1]) == 500
    answer, seen, _ = _answer([b"GET /feed HTTP/1.1\r\n\r\n"])
    assert [uri for _, uri, *_ in seen] == [b"/feed", b"/fed"] and answer.count(b"200 OK") == 2


def test_a_whole_head_skips_the_line_by_line_path():
    seen = []
    channel = _site(seen).buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    channel.makeConnection(StringTransport())
    lines, headers = [], []
    channel.lineReceived = lines.append
    header_received = channel.headerReceived
    channel.headerReceived = lambda line: headers.append(line) or header_received(line)
    channel.dataReceived(HEADS["plain GET"])
    channel.dataReceived(HEADS["plain GET"])  # the next one on the connection too
    assert len(seen) == 2 and lines == []
    # a header name twisted.web has checked before is taken from its cache of names
    assert headers == [] and seen[1][3] == [(b"Host", [b"x"])]
    channel.dataReceived(b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert headers == [b"Content-Length: 0"]  # the body's framing: always checked in full
    channel.dataReceived(HEADS["folded header"])
    assert lines  # the line-by-line path took this one
