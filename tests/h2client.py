"""A real HTTP/2 client for end-to-end tests: the h2 library on a Twisted TLS connection.

One connection carries many requests, each on its own stream; a test may hold
back the flow-control window (``auto_ack=False``) to play a client that reads
nothing.
"""
import json

import h2.config
import h2.connection
import h2.events
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.ssl import Certificate, optionsForClientTLS

from tests.support import SSEReader, within


class H2Response(SSEReader):
    """One stream's response: status and headers, then the body (parsed as SSE too)."""

    def __init__(self, stream_id):
        super().__init__()
        self.stream_id = stream_id
        self.status = None
        self.headers = {}  # name -> the last value
        self.header_list = []  # (name, value) as they came
        self.head = defer.Deferred()
        self.ended = defer.Deferred()  # fires with self once the stream is over
        self.reset_code = None  # the server's RST_STREAM error code, if it reset the stream

    def all(self, name):
        """Every value of header *name* (Set-Cookie comes once per cookie)."""
        return [value for header, value in self.header_list if header == name]

    def text(self):
        return self.body.decode("utf-8")

    def json(self):
        return json.loads(self.body)

    def _end(self):
        if not self.head.called:
            self.head.callback(self)
        if not self.ended.called:
            self.ended.callback(self)


class H2Client(protocol.Protocol):
    """An HTTP/2 connection, client side."""

    def __init__(self, authority, auto_ack=True):
        self.authority = authority.encode()
        self.auto_ack = auto_ack
        self.withheld = set()  # streams whose window stays shut (the connection's opens)
        self._unsent = {}  # stream id -> request body bytes waiting for the window
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.responses = {}
        self.goaway = None  # the ConnectionTerminated event, once the server sent GOAWAY
        self.closed = defer.Deferred()
        self.settled = defer.Deferred()  # the server's SETTINGS arrived

    @classmethod
    async def connect(cls, port, cert_pem, protocols=(b"h2",), **kwargs):
        options = optionsForClientTLS("127.0.0.1", trustRoot=Certificate.loadPEM(cert_pem),
                                      acceptableProtocols=list(protocols))
        client = cls(f"127.0.0.1:{port}", **kwargs)
        endpoint = wrapClientTLS(options, TCP4ClientEndpoint(reactor, "127.0.0.1", port))
        await within(endpoint.connect(protocol.Factory.forProtocol(lambda: client)))
        await within(client.settled)
        return client

    @property
    def negotiated(self):
        return self.transport.negotiatedProtocol

    def connectionMade(self):
        self.conn.initiate_connection()
        self._flush()

    def request(self, method, path, headers=(), body=None):
        """Send a request on a new stream; returns its :class:`H2Response` at once."""
        stream_id = self.conn.get_next_available_stream_id()
        response = self.responses[stream_id] = H2Response(stream_id)
        head = [(b":method", method.encode()), (b":path", path.encode()),
                (b":scheme", b"https"), (b":authority", self.authority)]
        head += [(name.encode(), value.encode()) for name, value in headers]
        if body is not None:
            head.append((b"content-length", b"%d" % len(body)))
        self.conn.send_headers(stream_id, head, end_stream=body is None)
        if body is not None:
            self._unsent[stream_id] = body
            self._send_body(stream_id)
        self._flush()
        return response

    def _send_body(self, stream_id):
        """As much of a request body as the server's flow-control windows allow."""
        body = self._unsent.pop(stream_id)
        while body:
            room = min(self.conn.local_flow_control_window(stream_id),
                       self.conn.max_outbound_frame_size)
            if room <= 0:
                self._unsent[stream_id] = body
                return
            piece, body = body[:room], body[room:]
            self.conn.send_data(stream_id, piece, end_stream=not body)

    async def fetch(self, method, path, headers=(), body=None):
        """A request, awaited until its stream is over."""
        return await within(self.request(method, path, headers, body).ended)

    async def stream(self, method, path, headers=()):
        """A request, awaited until its response head."""
        return await within(self.request(method, path, headers).head)

    def acknowledge(self, response):
        """Open the stream's and the connection's windows for what it received."""
        received = len(response.body)
        self.conn.acknowledge_received_data(received, response.stream_id)
        self._flush()

    def dataReceived(self, data):
        for event in self.conn.receive_data(data):
            response = self.responses.get(getattr(event, "stream_id", None))
            if isinstance(event, h2.events.RemoteSettingsChanged):
                if not self.settled.called:
                    self.settled.callback(self)
            elif isinstance(event, h2.events.ResponseReceived):
                response.header_list = [(name.decode(), value.decode())
                                        for name, value in event.headers]
                response.headers = dict(response.header_list)
                response.status = int(response.headers.pop(":status"))
                response.head.callback(response)
            elif isinstance(event, h2.events.DataReceived):
                response._body(event.data)
                if event.stream_id in self.withheld:
                    self.conn.increment_flow_control_window(event.flow_controlled_length)
                elif self.auto_ack:
                    self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                        event.stream_id)
            elif isinstance(event, h2.events.WindowUpdated):
                for stream_id in list(self._unsent):
                    self._send_body(stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                response._end()
            elif isinstance(event, h2.events.StreamReset):
                response.reset_code = event.error_code
                response._end()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.goaway = event
        self._flush()

    def _flush(self):
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def connectionLost(self, reason):
        for response in self.responses.values():
            response._end()
        if not self.settled.called:
            self.settled.errback(reason)
        self.closed.callback(None)

    def disconnect(self):
        if self.transport is not None and not self.closed.called:
            self.transport.abortConnection()
