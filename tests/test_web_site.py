"""RigSite and RigChannel serving requests, as the listeners build them."""
import sys
from io import BytesIO

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.server import NOT_DONE_YET

from rig.web.http import RigSite, Router


def _open(site):
    channel = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    transport = StringTransport()
    channel.makeConnection(transport)
    return channel, transport


def _serve(site, data):
    channel, transport = _open(site)
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


def _site(seen, clock=None, **options):
    def echo(request):
        if request.path == b"/slow":
            seen.append(request)
            return NOT_DONE_YET
        content = request.content
        seen.append("memory" if isinstance(content, BytesIO) else
                    "file" if content.fileno() >= 0 else "?")
        return b"%d" % len(request.content.read())

    return RigSite(Router([(r"/echo", {b"GET": echo, b"POST": echo})], echo),
                   reactor=clock or Clock(), **options)


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


GET = b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n"


def test_the_idle_timeout_counts_from_the_end_of_the_last_response_with_one_timer():
    """A keep-alive connection closes after ``idle_timeout`` without a request in
    progress; a request longer than that is not cut; and requests neither make nor
    cancel a timer each (one timer per connection, moved later)."""
    clock = Clock()
    seen = []
    channel, transport = _open(_site(seen, clock, idle_timeout=10, header_timeout=0))
    (sweep,) = clock.getDelayedCalls()  # the site's, for connections not heard from yet
    channel.dataReceived(GET)
    timer = channel._idle_timer  # from its first request on, the connection's own
    assert set(clock.getDelayedCalls()) == {sweep, timer}
    for _ in range(20):
        clock.advance(9)
        channel.dataReceived(GET)
    assert clock.getDelayedCalls() == [timer] and timer.active()  # the sweep found nobody
    assert transport.value().count(b"200 OK") == 21 and not transport.disconnecting

    channel.dataReceived(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
    clock.advance(25)  # longer than the idle timeout, with the request in progress
    assert not transport.disconnecting
    slow = seen[-1]
    slow.write(b"done")
    slow.finish()
    clock.advance(9.5)
    assert not transport.disconnecting  # idle for 9.5 s since that response
    clock.advance(0.5)
    assert transport.disconnecting


def test_a_closed_channel_leaves_no_timer():
    clock = Clock()
    site = _site([], clock, idle_timeout=10, header_timeout=0)
    channel, _transport = _open(site)
    channel.dataReceived(GET)
    channel.connectionLost(None)
    silent, _ = _open(site)
    silent.connectionLost(None)  # never spoke
    assert len(clock.getDelayedCalls()) == 1  # the site's: it fires once, finds nobody
    clock.advance(10)
    assert clock.getDelayedCalls() == [] and site._silent == {}
    _open(site)
    site.stopFactory()  # no longer listening: the silent channels' timer goes too
    assert clock.getDelayedCalls() == []


def test_connections_that_never_speak_are_timed_out_in_turn_by_one_timer():
    clock = Clock()
    site = _site([], clock, idle_timeout=10, header_timeout=0)
    opened = []
    for _ in range(3):
        opened.append(_open(site))
        clock.advance(2)  # opened at 0, 2 and 4 s
    talker, talker_transport = _open(site)  # at 6 s, then a piece of a head at 7 s
    clock.advance(1)
    talker.dataReceived(GET[:10])
    assert talker._idle_timer is not None  # its own timer, from its last byte
    assert len(clock.getDelayedCalls()) == 2  # that, and one for the three silent ones
    closed = {}  # second -> which are closed
    while clock.seconds() < 17:
        clock.advance(1)
        closed[clock.seconds()] = [transport.disconnecting for _channel, transport in opened
                                   ] + [talker_transport.disconnecting]
    assert closed[9] == [False] * 4
    assert closed[10] == [True, False, False, False]
    assert closed[12] == [True, True, False, False]
    assert closed[14] == closed[16] == [True, True, True, False]
    assert closed[17] == [True, True, True, True]  # 10 s after its byte
    assert site._silent == {}


def test_a_connect_whose_first_read_opens_a_stream_makes_no_timer():
    clock = Clock()
    seen = []
    site = _site(seen, clock, idle_timeout=10, header_timeout=5)
    channel, transport = _open(site)
    channel.dataReceived(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
    assert channel._idle_timer is None and channel._head_timer is None
    clock.advance(100)
    assert not transport.disconnecting and clock.getDelayedCalls() == []
    seen[-1].finish()  # the stream ends: now idle, and timed
    assert channel._idle_timer is not None
    clock.advance(10)
    assert transport.disconnecting


def test_the_clients_address_is_asked_of_the_transport_once_per_connection():
    seen = []
    channel, transport = _open(_site(seen))
    asked = []
    peer = transport.getPeer()
    transport.getPeer = lambda: asked.append(1) or peer
    clients = []
    channel.requestFactory = _recording(channel.requestFactory, clients)
    for _ in range(3):
        channel.dataReceived(GET)
    assert [client.port for client in clients] == [peer.port] * 3
    assert len(asked) == 1


def _recording(factory, clients):
    def make(*args, **kwargs):
        request = factory(*args, **kwargs)
        clients.append(request.getClientAddress())
        return request
    return make


def test_a_head_that_arrives_whole_is_not_timed_and_a_trickled_one_gets_408():
    clock = Clock()
    site = _site([], clock, idle_timeout=60, header_timeout=5)
    channel, transport = _open(site)
    channel.dataReceived(GET)
    assert channel._head_timer is None  # no head timer was made
    idle_timers = len(clock.getDelayedCalls())  # the site's and the connection's
    assert transport.value().count(b"200 OK") == 1
    channel.dataReceived(GET[:10])  # the next head comes in pieces
    assert len(clock.getDelayedCalls()) == idle_timers + 1
    for _ in range(4):
        clock.advance(1)
        channel.dataReceived(b"a")  # every byte restarts the idle timer, not this one
    assert not transport.disconnecting
    clock.advance(1)
    assert b"HTTP/1.1 408 Request Timeout" in transport.value()
    assert transport.disconnecting


QUERIES = [b"", b"a=1", b"a=1&a=2&b=", b"a;b=2", b"x=%5B%7B%22e%22%7D%5D&y=a+b%2Bc", b"=v&k",
           b"%ff=%00&&", b"jwt=eyJ.x.y&subscriptions=%5B%5D&lastEventId=abc.3"]


def test_a_query_is_parsed_as_twisted_web_parses_it_and_each_request_gets_its_own_copy():
    from twisted.web.http import parse_qs

    seen = []

    def record(request):
        seen.append((request.method, request.uri, request.path, request.clientproto,
                     request.args))
        return b"ok"

    site = RigSite(Router([(r"/q", {b"GET": record})], record), reactor=Clock())
    for query in QUERIES:
        for _ in range(2):  # parsed, then from the memo
            target = b"/q?" + query
            answer, _raised = _serve(site, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target)
            assert answer.startswith(b"HTTP/1.1 200 OK")
            assert seen[-1] == (b"GET", target, b"/q", b"HTTP/1.1", parse_qs(query, 1))
        seen[-1][4].setdefault(b"added", []).append(b"1")  # a handler changing its own
        for values in seen[-1][4].values():
            values.append(b"changed")
        assert site.query_args(query) == parse_qs(query, 1)
    _serve(site, b"GET /q HTTP/1.1\r\nHost: x\r\n\r\n")
    assert seen[-1][1:3] == (b"/q", b"/q") and seen[-1][4] == {}


def test_the_query_memo_is_bounded_in_entries_and_in_query_length():
    site = RigSite(Router([], lambda request: b""), reactor=Clock())
    for n in range(site._MEMO_ENTRIES + 10):
        site.query_args(b"n=%d" % n)
    long_query = b"a=" + b"x" * site._MEMO_QUERY_BYTES
    assert site.query_args(long_query) == {b"a": [b"x" * site._MEMO_QUERY_BYTES]}
    assert len(site._query_memo) == site._MEMO_ENTRIES
    assert b"n=0" not in site._query_memo and long_query not in site._query_memo


_SHARED_SITE = RigSite(Router([], lambda request: b""), reactor=Clock())  # memos across
_QUERY_PIECES = st.sampled_from([b"a", b"=", b"&", b";", b"+", b"%", b"%2", b"%20", b"%zz",
                                 b"%C3%A9", b"\xc3\xa9", b"jwt", b"subscriptions", b"x.y-z"])


@settings(max_examples=1000, deadline=None)
@given(st.lists(_QUERY_PIECES | st.binary(max_size=4), max_size=12).map(b"".join))
def test_a_query_parsed_through_the_memos_is_what_parse_qs_makes(query):
    from twisted.web.http import parse_qs

    for _ in range(2):  # then from the memos
        assert _SHARED_SITE.query_args(query) == parse_qs(query, 1)
        assert _SHARED_SITE._parse_query(query) == parse_qs(query, 1)
