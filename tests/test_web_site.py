"""RigSite and RigChannel serving requests, as the listeners build them."""
import sys
from io import BytesIO

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from rig.web.http import RigSite, Router


def _serve(site, data):
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    transport = StringTransport()
    channel.makeConnection(transport)
    raised = []

    def trace(frame, event, arg):
        if event == "exception":
            raised.append((arg[0].__name__, frame.f_code.co_name))
        return trace

    sys.settrace(trace)
    try:
        channel.dataReceived(data)
    finally:
        sys.settrace(None)
    return transport.value(), raised


def _site(seen):
    def echo(request):
        content = request.content
        seen.append("memory" if isinstance(content, BytesIO) else
                    "file" if content.fileno() >= 0 else "?")
        return b"%d" % len(request.content.read())

    return RigSite(Router([(r"/echo", {b"GET": echo, b"POST": echo})], echo), reactor=Clock())


def test_serving_a_request_raises_no_exception_on_the_way():
    """Nothing on the request path raises and catches an exception (each costs a
    traceback object): twisted.web asked the site for ``getContentFile`` and caught
    the AttributeError, once per request, before RigSite had one."""
    seen = []
    answer, raised = _serve(_site(seen), b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n"
                                         b"POST /echo HTTP/1.1\r\nHost: a\r\n"
                                         b"Content-Length: 5\r\n\r\nhello")
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"\r\n\r\n5")
    assert answer.count(b"HTTP/1.1 200 OK") == 2
    assert raised == []


def test_a_request_body_is_buffered_in_memory_up_to_100_kb_then_on_disk():
    seen = []
    site = _site(seen)
    _serve(site, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
    big = 150_000
    answer, _ = _serve(site, b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%s"
                       % (big, b"x" * big))
    assert answer.endswith(b"\r\n\r\n%d" % big)
    assert seen == ["memory", "file"]
