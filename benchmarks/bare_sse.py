"""The floor under an SSE connect: Twisted accepting, reading a request and writing a
canned answer, with nothing of the gateway in between.

Every request head gets one write of an SSE response head and two events (the
size of RIG's welcome), as the gateway's one write does; the client's close ends
the connection. ``connect_rate.py`` against it measures what the kernel and
Twisted's TCP transport cost per connect on this machine, so the gateway's own
share is the difference::

    taskset -c 0 python benchmarks/bare_sse.py --port 4000 &
    taskset -c 1 python benchmarks/connect_rate.py --count 10000

``--lean`` dispatches socket events as the gateway's twistd process does
(``rig.twistedcompat.lean_dispatch``).
"""
import argparse

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import protocol, reactor  # noqa: E402  (after the install)

_EVENT = b"x" * 150  # about the size of a welcome event's JSON
ANSWER = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
          b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
          b"c8\r\nevent: rig.connection.create\ndata: {" + _EVENT + b"}\nid: 1\n\n\r\n"
          b"c8\r\nevent: rig.subscriptions_set\ndata: {" + _EVENT + b"}\nid: 2\n\n\r\n")


class CannedStream(protocol.Protocol):
    def connectionMade(self):
        self.transport.setTcpNoDelay(True)  # as the gateway's channel does

    def dataReceived(self, data):
        if b"\r\n\r\n" in data:
            self.transport.write(ANSWER)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=4000)
    parser.add_argument("--lean", action="store_true")
    options = parser.parse_args()
    if options.lean:
        from rig.twistedcompat import lean_dispatch

        lean_dispatch(reactor)
    reactor.listenTCP(options.port, protocol.Factory.forProtocol(CannedStream),
                      backlog=4096, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
