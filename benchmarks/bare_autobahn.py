"""The reference for fan-out: bare Twisted + Autobahn, no gateway logic.

    taskset -c 0 python benchmarks/bare_autobahn.py --port 4000

Speaks just enough of RIG's interface for ``fanout.py --ws N``: a WebSocket
at ``/_rig/v1/connection/ws`` that gets the two ``rig.*`` welcome frames, and
``POST /_rig/v1/events`` whose body goes to every WebSocket as it came, the
way Autobahn's documentation broadcasts: ``prepareMessage`` once, then
``sendPreparedMessage`` per client. No subscriptions, no index, no JSON
parsing: the floor a gateway's own work is measured against.
"""
import argparse

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

WELCOME = (b'{"specversion":"1.0","type":"rig.connection.create","source":"rig","id":"1"}',
           b'{"specversion":"1.0","type":"rig.subscriptions_set","source":"rig","id":"2"}')


class Subscriber(WebSocketServerProtocol):
    def onOpen(self):
        for frame in WELCOME:
            self.sendMessage(frame)
        self.factory.clients.add(self)

    def onClose(self, wasClean, code, reason):
        self.factory.clients.discard(self)


class Broadcast(WebSocketServerFactory):
    protocol = Subscriber

    def __init__(self):
        super().__init__()
        self.clients = set()

    def broadcast(self, payload):
        prepared = self.prepareMessage(payload)
        for client in self.clients:
            client.sendPreparedMessage(prepared)


class Events(Resource):
    isLeaf = True

    def __init__(self, factory):
        super().__init__()
        self.factory = factory

    def render_POST(self, request):
        self.factory.broadcast(request.content.read())
        request.setResponseCode(202)
        return b""


class Health(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"ok"


def main():
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--port", type=int, default=4000)
    options = parser.parse_args()
    factory = Broadcast()
    root, rig, v1, connection = Resource(), Resource(), Resource(), Resource()
    root.putChild(b"_rig", rig)
    rig.putChild(b"v1", v1)
    rig.putChild(b"health", Health())
    v1.putChild(b"connection", connection)
    v1.putChild(b"events", Events(factory))
    connection.putChild(b"ws", WebSocketResource(factory))
    reactor.listenTCP(options.port, Site(root), backlog=4096, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
