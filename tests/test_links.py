"""Cluster links: framing and handshake on fakes, then real loopback TCP between nodes."""
import struct

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, formatEvent
from twisted.web.http import HTTPChannel

from rig.cluster.links import ClusterLinks, LinkProtocol, _Peer, encode_frame
from rig.testing import eventually as poll

TIMEOUT = 5
COOKIE = "secret-cookie"


def frame(data):
    return struct.pack("!I", len(data)) + data


class Inbox:
    """on_message target that can be awaited until it holds enough messages."""

    def __init__(self):
        self.messages = []
        self._waiting = []

    def __call__(self, address, message):
        self.messages.append((address, message))
        for count, d in list(self._waiting):
            if len(self.messages) >= count:
                self._waiting.remove((count, d))
                d.callback(self.messages)

    def wait_for(self, count):
        if len(self.messages) >= count:
            return defer.succeed(self.messages)
        d = defer.Deferred()
        self._waiting.append((count, d))
        return d.addTimeout(TIMEOUT, reactor)

    def bodies(self):
        return [message for _address, message in self.messages]


def warnings(events, text):
    return [formatEvent(e) for e in events
            if e.get("log_level") == LogLevel.warn and text in formatEvent(e)]


# -- framing and handshake on StringTransport ----------------------------------------------


def fake_links(name, cookie=COOKIE, **kw):
    inbox = Inbox()
    links = ClusterLinks(Clock(), node_name=name, cookie=cookie, listen="tcp:0",
                         on_message=inbox, advertise=f"{name}.example:7946", **kw)
    links.inbox = inbox
    return links


def connect_fake(links, outgoing_to=None):
    peer = _Peer(outgoing_to, 10) if outgoing_to else None
    protocol = LinkProtocol(links, peer)
    protocol.makeConnection(StringTransport())
    return protocol


def pump(*protocols):
    """Deliver written bytes between a pair of fake connections until quiet."""
    a, b = protocols
    while a.transport.value() or b.transport.value():
        for src, dst in ((a, b), (b, a)):
            data = src.transport.value()
            src.transport.clear()
            if data and not dst.transport.disconnecting:
                dst.dataReceived(data)


def test_handshake_then_messages_both_ways():
    alpha, beta = fake_links("alpha"), fake_links("beta")
    client = connect_fake(alpha, outgoing_to="beta.example:7946")
    server = connect_fake(beta)
    pump(client, server)
    assert client.is_open and server.is_open
    assert server.remote_node == "alpha" and server.remote_address == "alpha.example:7946"
    client.send_encoded(encode_frame({"t": "msg", "m": {"n": 1}}))
    client.send_encoded(encode_frame({"t": "msg", "m": {"n": 2}}))
    server.send_encoded(encode_frame({"t": "msg", "m": {"back": True}}))
    pump(client, server)
    assert beta.inbox.messages == [("alpha.example:7946", {"n": 1}),
                                   ("alpha.example:7946", {"n": 2})]
    assert alpha.inbox.messages == [("beta.example:7946", {"back": True})]
    # the handshake timeouts were cancelled
    assert alpha.reactor.getDelayedCalls() == [] and beta.reactor.getDelayedCalls() == []


def test_frames_are_compact_json_with_big_endian_length():
    alpha = fake_links("alpha")
    protocol = connect_fake(alpha)
    written = protocol.transport.value()
    (length,) = struct.unpack("!I", written[:4])
    assert length == len(written) - 4
    assert written[4:].startswith(b'{"t":"hello","v":1,"node":"alpha"')


def test_wrong_cookie_is_refused_and_logged(log_events):
    alpha, beta = fake_links("alpha"), fake_links("beta", cookie="other")
    client = connect_fake(alpha, outgoing_to="beta.example:7946")
    server = connect_fake(beta)
    pump(client, server)
    assert not client.is_open and not server.is_open
    assert client.transport.disconnecting and server.transport.disconnecting
    refused = warnings(log_events, "wrong cookie")
    assert any("192.168.1.1:54321" in line and "alpha.example:7946" in line for line in refused)


def test_replayed_handshake_is_refused():
    alpha, beta = fake_links("alpha"), fake_links("beta")
    client = connect_fake(alpha, outgoing_to="beta.example:7946")
    server = connect_fake(beta)
    recording = client.transport.value()  # hello
    client.transport.clear()
    client.dataReceived(server.transport.value())
    recording += client.transport.value()  # proof
    server.dataReceived(recording)
    assert server.is_open  # the genuine session works
    recording += frame(encode_frame({"t": "msg", "m": {"evil": True}}))
    fresh = connect_fake(beta)  # a new connection has a new nonce
    fresh.dataReceived(recording)
    assert not fresh.is_open and fresh.transport.disconnecting
    assert beta.inbox.messages == []


def test_own_hello_reflected_back_is_refused():
    alpha = fake_links("alpha")
    server = connect_fake(alpha)
    server.dataReceived(server.transport.value())
    assert server.transport.disconnecting and server.state == "closed"


def test_handshake_timeout_closes_silent_connection(log_events):
    alpha = fake_links("alpha", handshake_timeout=5)
    server = connect_fake(alpha)
    alpha.reactor.advance(4.9)
    assert not server.transport.disconnecting
    alpha.reactor.advance(0.2)
    assert server.transport.disconnecting
    assert warnings(log_events, "no handshake within 5s")
    assert alpha.reactor.getDelayedCalls() == []


@pytest.mark.parametrize("data", [
    frame(b"\xff\xfe not json"),
    frame(b"[1,2,3]"),
    frame(b'{"t":"msg","m":{"early":true}}'),  # a message before the handshake
    frame(b'{"t":"hello","v":1}'),
    frame(b'{"t":"hello","v":2,"node":"x","addr":"x:1","nonce":"' + b"a" * 64 + b'"}'),
    struct.pack("!I", 1 << 31) + b"x",  # oversized before authentication
])
def test_garbage_closes_the_connection_without_traceback(log_events, data):
    alpha = fake_links("alpha")
    server = connect_fake(alpha)
    server.dataReceived(data)
    assert server.transport.disconnecting and not server.is_open
    assert alpha.inbox.messages == []
    assert not [e for e in log_events if e.get("log_failure") is not None]
    assert warnings(log_events, "Closing cluster link with 192.168.1.1:54321")


def test_oversized_frame_after_handshake_closes(log_events):
    alpha, beta = fake_links("alpha"), fake_links("beta", max_message_bytes=100)
    client = connect_fake(alpha, outgoing_to="beta.example:7946")
    server = connect_fake(beta)
    pump(client, server)
    assert server.is_open
    server.dataReceived(frame(encode_frame({"t": "msg", "m": {"ok": 1}}))
                        + frame(encode_frame({"t": "msg", "m": {"x": "y" * 200}})))
    assert beta.inbox.bodies() == [{"ok": 1}]
    assert server.transport.disconnecting
    assert warnings(log_events, "exceeds the limit of 100")


def test_send_never_raises(log_events):
    alpha = fake_links("alpha", max_message_bytes=100)
    alpha.send("nonsense", {"a": 1})
    alpha.send("127.0.0.1:1", {"a": {1, 2}})  # not JSON
    alpha.send("127.0.0.1:1", ["not", "a", "dict"])
    alpha.send("127.0.0.1:1", {"big": "x" * 500})
    assert alpha.peers() == []
    assert not [e for e in log_events if e.get("log_failure") is not None]
    assert len([e for e in log_events if e.get("log_level") == LogLevel.error]) == 4


# -- real loopback TCP -------------------------------------------------------------------


@pytest_twisted.async_yield_fixture
async def make_links():
    started = []

    async def make(name, cookie=COOKIE, listen="tcp:0:interface=127.0.0.1", **kw):
        inbox = Inbox()
        kw.setdefault("retry_policy", lambda attempt: 0.05)
        links = ClusterLinks(reactor, node_name=name, cookie=cookie, listen=listen,
                             on_message=inbox, **kw)
        links.inbox = inbox
        await links.start()
        started.append(links)
        return links

    yield make
    await defer.gatherResults([links.stop() for links in started], consumeErrors=True)


@pytest_twisted.ensureDeferred
async def test_two_nodes_exchange_messages_in_order(make_links):
    a, b = await make_links("a"), await make_links("b")
    for n in range(100):
        a.send(b.address, {"n": n})
        b.send(a.address, {"m": n})
    await b.inbox.wait_for(100)
    await a.inbox.wait_for(100)
    assert b.inbox.bodies() == [{"n": n} for n in range(100)]
    assert a.inbox.bodies() == [{"m": n} for n in range(100)]
    assert {address for address, _ in b.inbox.messages} == {a.address}  # listen address
    assert {address for address, _ in a.inbox.messages} == {b.address}
    assert a.is_up(b.address) and b.is_up(a.address)


@pytest_twisted.ensureDeferred
async def test_three_nodes_all_pairs(make_links):
    nodes = [await make_links(name) for name in "xyz"]
    for sender in nodes:
        for receiver in nodes:
            if receiver is not sender:
                for n in range(5):
                    sender.send(receiver.address, {"from": sender.node_name, "n": n})
    for receiver in nodes:
        await receiver.inbox.wait_for(10)
        for sender in nodes:
            if sender is not receiver:
                got = [m["n"] for address, m in receiver.inbox.messages
                       if address == sender.address and m["from"] == sender.node_name]
                assert got == list(range(5))


@pytest_twisted.ensureDeferred
async def test_wrong_cookie_is_refused_over_tcp(make_links, log_events):
    a = await make_links("a")
    evil = await make_links("evil", cookie="guess")
    evil.send(a.address, {"take": "over"})
    a.send(evil.address, {"hello": "?"})
    await until(lambda: len(warnings(log_events, "wrong cookie")) >= 2)
    assert a.inbox.messages == [] and evil.inbox.messages == []
    refused = warnings(log_events, "wrong cookie")
    assert any("evil" in line and evil.address in line for line in refused)


def deferLater(seconds):
    d = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


def until(predicate):
    return poll(reactor, predicate, TIMEOUT, interval=0.01)


@pytest_twisted.ensureDeferred
async def test_peer_restart_gets_queued_messages_after_reconnect(make_links, log_events):
    downs = []
    link_down = defer.Deferred()

    def on_link_down(address):
        downs.append(address)
        if not link_down.called:
            link_down.callback(address)

    a = await make_links("a", queue_limit=3, on_link_down=on_link_down)
    b = await make_links("b")
    a.send(b.address, {"n": 0})
    await b.inbox.wait_for(1)
    address = b.address
    port = int(address.rsplit(":", 1)[1])
    await b.stop()
    assert await link_down.addTimeout(TIMEOUT, reactor) == address
    for n in range(1, 6):
        a.send(address, {"n": n})  # 1 and 2 are dropped: the queue holds 3
    await deferLater(0.1)  # a few refused reconnect attempts
    b2 = await make_links("b2", listen=f"tcp:{port}:interface=127.0.0.1")
    assert b2.address == address
    await b2.inbox.wait_for(3)
    a.send(address, {"n": 6})
    await b2.inbox.wait_for(4)
    assert b2.inbox.bodies() == [{"n": 3}, {"n": 4}, {"n": 5}, {"n": 6}]
    assert downs == [address]
    assert len(warnings(log_events, "queue of 3 is full")) == 1


@pytest_twisted.ensureDeferred
async def test_forget_closes_the_link_without_reconnecting(make_links):
    downs = []
    a = await make_links("a", on_link_down=downs.append)
    b = await make_links("b")
    a.send(b.address, {"n": 0})
    await b.inbox.wait_for(1)
    incoming = next(iter(b._protocols))
    a.forget(b.address)
    await incoming.lost.addTimeout(TIMEOUT, reactor)
    await deferLater(0.15)  # three retry periods
    assert a.peers() == [] and not b._protocols and downs == []
    a.send(b.address, {"n": 1})  # a new link after forget works
    await b.inbox.wait_for(2)
    assert b.inbox.bodies() == [{"n": 0}, {"n": 1}]


class RawClient(Protocol):
    def __init__(self, data):
        self.data = data
        self.lost = defer.Deferred()

    def connectionMade(self):
        self.transport.write(self.data)

    def connectionLost(self, reason):
        self.lost.callback(None)


@pytest_twisted.ensureDeferred
async def test_garbage_and_oversized_frames_close_only_that_connection(make_links):
    a, b = await make_links("a"), await make_links("b", max_message_bytes=1000)
    a.send(b.address, {"n": 0})
    await b.inbox.wait_for(1)
    host, port = b.address.rsplit(":", 1)
    for data in (b"GET / HTTP/1.1\r\n\r\n", struct.pack("!I", 10**9) + b"x" * 100):
        raw = RawClient(data)
        await connectProtocol(TCP4ClientEndpoint(reactor, host, int(port)), raw)
        await raw.lost.addTimeout(TIMEOUT, reactor)
    a.send(b.address, {"n": 1})
    await b.inbox.wait_for(2)
    assert b.inbox.bodies() == [{"n": 0}, {"n": 1}]
    assert a.is_up(b.address)


def _new_timers(before):
    """The reactor's timers not in *before*, except HTTP channels': the reactor is the
    whole session's, and an HTTP connection of an earlier test that times out meanwhile
    (twisted.web's 15 s abort timer) is not the links'."""
    return {call for call in set(reactor.getDelayedCalls()) - before
            if not isinstance(getattr(call.func, "__self__", None), HTTPChannel)}


@pytest_twisted.ensureDeferred
async def test_stop_leaves_no_delayed_calls(make_links):
    before = set(reactor.getDelayedCalls())
    a = ClusterLinks(reactor, node_name="a", cookie=COOKIE, listen="tcp:0:interface=127.0.0.1",
                     on_message=Inbox(), retry_policy=lambda attempt: 30)
    await a.start()
    b = await make_links("b")
    closed = await make_links("closed")
    dead = closed.address
    await closed.stop()
    a.send(b.address, {"n": 1})
    a.send(dead, {"n": 2})  # refused, then a 30 s retry timer
    await b.inbox.wait_for(1)
    await until(lambda: a._peers[dead].retry)
    silent = RawClient(b"")  # an unauthenticated connection with a handshake timeout
    host, port = a.address.rsplit(":", 1)
    await connectProtocol(TCP4ClientEndpoint(reactor, host, int(port)), silent)
    await deferLater(0.05)
    assert set(reactor.getDelayedCalls()) - before
    await a.stop()
    await silent.lost.addTimeout(TIMEOUT, reactor)
    assert [call for call in _new_timers(before) if call.active()] == []
    a.send(b.address, {"n": 3})  # after stop: dropped, no new connection
    assert _new_timers(before) == set()
