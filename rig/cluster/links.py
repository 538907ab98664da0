"""Links between cluster nodes: authenticated, length-prefixed JSON over TCP.

Every frame is a 4-byte big-endian length followed by a UTF-8 JSON object.
A connection starts with a mutual challenge-response handshake; both ends
speak at once, so it takes one round trip:

    -> {"t": "hello", "v": 1, "node": name, "addr": listen address, "nonce": 64 hex}
    <- the peer's hello
    -> {"t": "proof", "mac": hex HMAC-SHA256(cookie, [role, my nonce, your nonce, name, addr])}
    <- the peer's proof, checked with hmac.compare_digest

Fresh nonces on both sides make a recorded handshake useless, the TCP role
("client" or "server") in the MAC stops a proof from being reflected back, and
a hello that carries one of this process's own live nonces is refused.  Only
then do ``{"t": "msg", "m": {...}}`` frames pass.  The cookie authenticates
the peer; it does not protect the bytes that follow it, so use a TLS
``client_endpoint`` and an ``ssl:`` listen string when the network is hostile.

Each node keeps one outgoing connection per peer and sends only on it;
incoming connections only deliver.  Messages from one peer therefore arrive in
the order they were sent.  Delivery is at most once: frames written just
before a link broke may be lost, whereas frames queued while it was down are
sent once it is up again.
"""

import hashlib
import hmac
import json
import secrets
from collections import deque

from twisted.application.internet import backoffPolicy
from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver

from rig.listeners import server_endpoint

PROTOCOL_VERSION = 1
NONCE_BYTES = 32
HANDSHAKE_MAX_BYTES = 4096
HANDSHAKE_TIMEOUT = 5.0
MAC_LABEL = "txrig-link-v1"

_HEX = "0123456789abcdef"
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def encode_frame(message):
    """Return the JSON bytes of one frame (without the length prefix)."""
    return _dumps(message).encode("utf-8")


def split_address(address):
    """Split "host:port" (host may be a bracketed IPv6 literal) into (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"not a host:port address: {address!r}")
    return host.strip("[]"), int(port)


def join_address(host, port):
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def handshake_mac(cookie, *, role, sender_nonce, receiver_nonce, node, address):
    """HMAC-SHA256 proving knowledge of the cookie, bound to both nonces and the sender."""
    data = _dumps([MAC_LABEL, role, sender_nonce, receiver_nonce, node, address])
    return hmac.new(cookie.encode("utf-8"), data.encode("utf-8"), hashlib.sha256).hexdigest()


class LinkProtocol(Int32StringReceiver):
    """One connection between two nodes, in either direction."""

    log = Logger()

    def __init__(self, links, peer=None):
        self.links = links
        self.peer = peer  # the _Peer this outgoing connection serves; None if incoming
        self.role = "client" if peer is not None else "server"
        self.MAX_LENGTH = HANDSHAKE_MAX_BYTES
        self.nonce = secrets.token_hex(NONCE_BYTES)
        self.state = "hello"  # -> "proof" -> "open"; "closed" once we give up on it
        self.remote_node = None
        self.remote_address = None  # the peer's listen address, once it said hello
        self.remote_nonce = None
        self.lost = defer.Deferred()
        self._timeout = None

    # -- connection life --------------------------------------------------------------

    def connectionMade(self):
        self.links._connection_made(self)
        self._timeout = self.links.reactor.callLater(
            self.links.handshake_timeout, self._handshake_timed_out)
        self._send({"t": "hello", "v": PROTOCOL_VERSION, "node": self.links.node_name,
                    "addr": self.links.address, "nonce": self.nonce})

    def connectionLost(self, reason):
        was_open = self.state == "open"
        self.state = "closed"
        self._cancel_timeout()
        self.links._connection_lost(self, was_open)
        lost, self.lost = self.lost, None
        lost.callback(None)

    @property
    def is_open(self):
        return self.state == "open"

    def describe(self):
        """The transport's remote host:port, for log lines."""
        try:
            peer = self.transport.getPeer()
            return join_address(peer.host, peer.port)
        except Exception:
            return repr(self.transport)

    def close(self, abort=False):
        if self.state == "closed" or self.transport is None:
            return
        self.state = "closed"
        self._cancel_timeout()
        if abort:
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def _refuse(self, reason, **kw):
        """Log and drop the connection; ``reason`` is a constant format string."""
        self.log.warn("Closing cluster link with {peer}: " + reason, peer=self.describe(), **kw)
        self.close(abort=True)

    def _handshake_timed_out(self):
        self._timeout = None
        self._refuse("no handshake within {timeout}s", timeout=self.links.handshake_timeout)

    def _cancel_timeout(self):
        if self._timeout is not None:
            if self._timeout.active():
                self._timeout.cancel()
            self._timeout = None

    # -- frames -----------------------------------------------------------------------

    def _send(self, frame):
        self.sendString(encode_frame(frame))

    def send_encoded(self, data):
        """Send an already encoded message frame."""
        self.sendString(data)

    def lengthLimitExceeded(self, length):
        self._refuse("frame of {length} bytes exceeds the limit of {limit}",
                     length=length, limit=self.MAX_LENGTH)

    def stringReceived(self, string):
        if self.state == "closed":
            return
        try:
            frame = json.loads(string)
        except (ValueError, RecursionError):
            self._refuse("undecodable frame")
            return
        if not isinstance(frame, dict):
            self._refuse("frame is not a JSON object")
            return
        kind = frame.get("t")
        if self.state == "open" and kind == "msg":
            self._message(frame.get("m"))
        elif self.state == "hello" and kind == "hello":
            self._hello(frame)
        elif self.state == "proof" and kind == "proof":
            self._proof(frame)
        else:
            self._refuse("unexpected frame {kind!r} in state {state}",
                         kind=str(kind)[:40], state=self.state)

    def _hello(self, frame):
        node, address, nonce = frame.get("node"), frame.get("addr"), frame.get("nonce")
        if frame.get("v") != PROTOCOL_VERSION:
            self._refuse("unsupported protocol version {version!r}",
                         version=str(frame.get("v"))[:40])
            return
        if not (isinstance(node, str) and isinstance(address, str) and isinstance(nonce, str)
                and len(nonce) == 2 * NONCE_BYTES and not nonce.strip(_HEX)):
            self._refuse("malformed hello")
            return
        if self.links._is_own_nonce(nonce):
            self._refuse("hello carries one of our own nonces (reflection)")
            return
        self.remote_node, self.remote_address, self.remote_nonce = node, address, nonce
        self.state = "proof"
        mac = handshake_mac(self.links.cookie, role=self.role, sender_nonce=self.nonce,
                            receiver_nonce=nonce, node=self.links.node_name,
                            address=self.links.address)
        self._send({"t": "proof", "mac": mac})

    def _proof(self, frame):
        mac = frame.get("mac")
        their_role = "server" if self.role == "client" else "client"
        expected = handshake_mac(self.links.cookie, role=their_role,
                                 sender_nonce=self.remote_nonce, receiver_nonce=self.nonce,
                                 node=self.remote_node, address=self.remote_address)
        if not (isinstance(mac, str) and hmac.compare_digest(mac.encode("ascii", "replace"),
                                                             expected.encode("ascii"))):
            self.log.warn(
                "Refused cluster link with {peer} (claims node {node} at {address}):"
                " wrong cookie", peer=self.describe(), node=self.remote_node,
                address=self.remote_address)
            self.close(abort=True)
            return
        self._cancel_timeout()
        self.state = "open"
        self.MAX_LENGTH = self.links.max_message_bytes
        self.log.info("Cluster link {role} {node} is up",
                      role="to" if self.peer is not None else "from",
                      node=self.remote_node, address=self.remote_address)
        self.links._authenticated(self)

    def _message(self, message):
        if not isinstance(message, dict):
            self._refuse("message is not a JSON object")
            return
        try:
            self.links.on_message(self.remote_address, message)
        except Exception:
            self.log.failure("on_message failed for a message from {address}",
                             address=self.remote_address)


class _Peer:
    """Outgoing side of one peer: its queue, its connection, its reconnect timer."""

    def __init__(self, address, queue_limit):
        self.address = address
        self.queue = deque(maxlen=queue_limit)
        self.protocol = None  # the current outgoing connection, open or not
        self.connecting = None  # Deferred of the TCP connect in progress
        self.retry = None  # DelayedCall of the next attempt
        self.failures = 0
        self.dropping = False  # a "queue full" warning was logged for this outage
        self.gone = False


class ClusterLinks:
    """Listens for peers and keeps outgoing links to them."""

    log = Logger()

    def __init__(self, reactor, *, node_name, cookie, listen, on_message, on_link_down=None,
                 client_endpoint=None, max_message_bytes=16 * 1024 * 1024, queue_limit=10000,
                 advertise=None, handshake_timeout=HANDSHAKE_TIMEOUT, retry_policy=None):
        if not cookie:
            raise ValueError("the cluster cookie must not be empty")
        self.reactor = reactor
        self.node_name = node_name
        self.cookie = cookie
        self.listen = listen
        self.on_message = on_message
        self.on_link_down = on_link_down
        self.client_endpoint = client_endpoint or self._tcp_endpoint
        self.max_message_bytes = max_message_bytes
        self.queue_limit = queue_limit
        self.handshake_timeout = handshake_timeout
        self.retry_policy = retry_policy or backoffPolicy(initialDelay=0.5, maxDelay=30.0)
        self.address = advertise
        self._advertise = advertise
        self._port = None
        self._peers = {}
        self._protocols = set()
        self._stopping = False

    # -- lifecycle --------------------------------------------------------------------

    def start(self):
        """Listen; fires with the listening port, after which ``address`` is set."""
        self._stopping = False
        factory = Factory.forProtocol(lambda: LinkProtocol(self))
        d = server_endpoint(self.reactor, self.listen).listen(factory)

        def listening(port):
            self._port = port
            if self._advertise is None:
                host = port.getHost()
                self.address = join_address(host.host, host.port)
            self.log.info("Cluster links listening on {address} as {node}",
                          address=self.address, node=self.node_name)
            return port

        return d.addCallback(listening)

    def stop(self):
        """Stop listening, close every link and cancel reconnects."""
        self._stopping = True
        waits = []
        if self._port is not None:
            port, self._port = self._port, None
            waits.append(defer.maybeDeferred(port.stopListening))
        for peer in list(self._peers.values()):
            self._drop(peer)
        self._peers.clear()
        for protocol in list(self._protocols):
            if protocol.lost is not None:
                waits.append(protocol.lost)
            protocol.close()
        return defer.gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)

    # -- sending ----------------------------------------------------------------------

    def send(self, address, message):
        """Queue ``message`` for the peer listening at ``address``; never raises."""
        self.send_many((address,), message)

    def send_many(self, addresses, message):
        """Queue ``message`` for each peer in *addresses*, encoded once; never raises."""
        if not addresses:
            return
        if self._stopping:
            self.log.warn("Cluster links are stopped; dropped a message for {address}",
                          address=", ".join(addresses))
            return
        try:
            data = self._encode(message)
        except (TypeError, ValueError) as error:
            self.log.error("Dropped a cluster message for {address}: {error}",
                           address=", ".join(addresses), error=error)
            return
        if len(data) > self.max_message_bytes:
            self.log.error("Dropped a cluster message of {size} bytes for {address}:"
                           " the limit is {limit}", size=len(data), address=", ".join(addresses),
                           limit=self.max_message_bytes)
            return
        for address in addresses:
            try:
                self._send(address, data)
            except (TypeError, ValueError) as error:
                self.log.error("Dropped a cluster message for {address}: {error}",
                               address=address, error=error)
            except Exception:
                self.log.failure("Could not send a cluster message to {address}",
                                 address=address)

    @staticmethod
    def _encode(message):
        if not isinstance(message, dict):
            raise TypeError(f"a cluster message must be a dict, not {type(message).__name__}")
        return encode_frame({"t": "msg", "m": message})

    def _send(self, address, data):
        peer = self._peers.get(address)
        if peer is None:
            split_address(address)  # refuse nonsense before it becomes a peer
            peer = self._peers[address] = _Peer(address, self.queue_limit)
        if peer.protocol is not None and peer.protocol.is_open:
            peer.protocol.send_encoded(data)
            return
        if len(peer.queue) == peer.queue.maxlen and not peer.dropping:
            peer.dropping = True
            self.log.warn("Cluster link to {address} is down and its queue of {limit} is full;"
                          " dropping the oldest messages", address=address,
                          limit=self.queue_limit)
        peer.queue.append(data)
        if peer.protocol is None and peer.connecting is None and peer.retry is None:
            self._connect(peer)

    def forget(self, address):
        """Drop the link and queue of a peer that left the cluster."""
        peer = self._peers.pop(address, None)
        if peer is not None:
            self._drop(peer)

    def peers(self):
        """Addresses with an outgoing link, up or not."""
        return list(self._peers)

    def is_up(self, address):
        peer = self._peers.get(address)
        return bool(peer and peer.protocol is not None and peer.protocol.is_open)

    # -- outgoing connections -----------------------------------------------------------

    def _tcp_endpoint(self, address):
        host, port = split_address(address)
        return HostnameEndpoint(self.reactor, host, port, timeout=10)

    def _connect(self, peer):
        peer.retry = None
        if peer.gone or self._stopping:
            return
        protocol = LinkProtocol(self, peer)
        peer.protocol = protocol
        try:
            d = connectProtocol(self.client_endpoint(peer.address), protocol)
        except Exception:
            self.log.failure("Could not connect to {address}", address=peer.address)
            peer.protocol = None
            self._schedule_retry(peer)
            return
        peer.connecting = d

        def connected(_):
            peer.connecting = None

        def failed(failure):
            peer.connecting = None
            if peer.protocol is protocol:
                peer.protocol = None
            if peer.gone or self._stopping:
                return
            self.log.debug("Cluster link to {address} failed: {reason}",
                           address=peer.address, reason=failure.getErrorMessage())
            self._schedule_retry(peer)

        d.addCallbacks(connected, failed)
        d.addErrback(lambda f: self.log.failure("Cluster connect bookkeeping failed", f))

    def _schedule_retry(self, peer):
        if peer.gone or self._stopping or peer.retry is not None:
            return
        peer.failures += 1
        delay = self.retry_policy(peer.failures)
        peer.retry = self.reactor.callLater(delay, self._connect, peer)

    def _drop(self, peer):
        peer.gone = True
        peer.queue.clear()
        if peer.retry is not None and peer.retry.active():
            peer.retry.cancel()
        peer.retry = None
        if peer.connecting is not None:
            connecting, peer.connecting = peer.connecting, None
            connecting.cancel()
        if peer.protocol is not None:
            protocol, peer.protocol = peer.protocol, None
            protocol.close()

    # -- callbacks from LinkProtocol --------------------------------------------------

    def _connection_made(self, protocol):
        self._protocols.add(protocol)
        if self._stopping:
            protocol.close(abort=True)

    def _is_own_nonce(self, nonce):
        return any(hmac.compare_digest(p.nonce, nonce) for p in self._protocols)

    def _authenticated(self, protocol):
        peer = protocol.peer
        if peer is None or peer.protocol is not protocol:
            return
        peer.failures = 0
        peer.dropping = False
        while peer.queue and protocol.is_open:
            protocol.send_encoded(peer.queue.popleft())

    def _connection_lost(self, protocol, was_open):
        self._protocols.discard(protocol)
        peer = protocol.peer
        if peer is None or peer.protocol is not protocol:
            return
        peer.protocol = None
        if peer.gone or self._stopping:
            return
        if was_open:
            self.log.info("Cluster link to {address} went down", address=peer.address)
            if self.on_link_down is not None:
                try:
                    self.on_link_down(peer.address)
                except Exception:
                    self.log.failure("on_link_down failed for {address}", address=peer.address)
        self._schedule_retry(peer)
