"""HTTP/2 on the HTTPS listeners (issue 17): chosen by ALPN, served by Twisted's HTTP/2.

Browsers open at most six HTTP/1.1 connections per origin, so a page open in
many tabs, each holding an SSE stream, starves itself; over HTTP/2 every
stream of an origin shares one connection. A TLS connection starts with a
:class:`rig.web.http.RigChannel` (its idle timeout covers the handshake);
when the handshake is done and ALPN chose ``h2``, :func:`take_over` hands
the connection to an :class:`H2Channel` of the same site. WebSocket stays
on HTTP/1.1: a browser opens a separate HTTP/1.1 connection for it.
"""
from rig.twistedcompat import H2Connection


class H2Channel(H2Connection):
    """One HTTP/2 connection of a :class:`rig.web.http.RigSite`.

    As a RigChannel: known to its site while open (a shutdown drains it), and closed
    after the site's idle timeout, counted only while no stream is open (a stream
    in progress is an SSE stream or a parked long poll, not idleness).
    """

    def __init__(self, site):
        super().__init__(site.reactor)
        self.site = self.factory = site
        self.requestFactory = site.requestFactory
        self.timeOut = site.timeOut
        self.callLater = site.reactor.callLater
        self._closing = False
        self._lost = False

    def connectionMade(self):
        super().connectionMade()
        self.site.channel_opened(self)

    def connectionLost(self, reason, *args, **kwargs):
        self._lost = True
        self.site.channel_closed(self)
        super().connectionLost(reason, *args, **kwargs)

    def resetTimeout(self):
        """Only a stream makes a connection busy: bytes that open none (PINGs, SETTINGS,
        a header block that never ends) do not put the idle timeout off, so a client
        trickling them is closed as a silent one is."""
        if self.streams:
            super().resetTimeout()

    def timeoutConnection(self):
        if self.streams and not self._closing:
            self.setTimeout(self.timeOut)  # busy: look again one idle timeout later
            return
        # TLS closes only once no producer is registered (else Twisted's abort, 15 s on)
        self.transport.unregisterProducer()
        super().timeoutConnection()

    def close_when_done(self):
        """For a drain: close (with a GOAWAY) now if no stream is open, else once the
        last one is over.

        Not RFC 9113 6.8's two-step graceful shutdown (a first GOAWAY while streams
        finish): a client built on h2, as httpx is, takes no more DATA after a GOAWAY
        and would lose the rest of its responses. The drain's timeout bounds a client
        that keeps opening streams.
        """
        if self._closing or self._lost:
            return
        self._closing = True
        if not self.streams:
            self._close()

    def stream_ended(self):
        if self.streams or self._lost:
            return
        if self._closing:
            self._close()
        else:
            self.setTimeout(self.timeOut)  # idle from now

    def _close(self):
        self._lost = True  # nothing more is sent on it
        self.conn.close_connection()
        transport = self.transport
        transport.write(self.conn.data_to_send())
        transport.unregisterProducer()  # TLS closes only once no producer is registered
        transport.loseConnection()


def take_over(channel):
    """Give *channel*'s TLS connection, on which ALPN chose ``h2``, to an H2Channel.

    The HTTP/1.1 channel never saw a byte of HTTP: it lets go of the transport (its
    producer registration, its timers, its place in the site) and the H2Channel
    becomes the protocol the TLS layer delivers to.
    """
    transport, site = channel.transport, channel.site
    channel.let_go(transport)
    successor = H2Channel(site)
    transport.wrappedProtocol = successor
    successor.makeConnection(transport)
    transport.registerProducer(successor, True)
    return successor
