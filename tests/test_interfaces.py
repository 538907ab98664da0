"""Every connection kind provides the declared IConnection; the hub keeps its own books."""
from twisted.internet.task import Clock
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel
from zope.interface.verify import verifyObject

from rig.connections.longpoll import LongPollSession
from rig.connections.sse import SSEConnection
from rig.connections.ws import RigWebSocketFactory
from rig.hub import Hub
from rig.hub.interface import IConnection
from rig.subscriptions.model import Subscription
from rig.testing import FakeConnection


def test_every_transport_and_the_public_fake_provide_the_connection_interface():
    hub = Hub(Clock())
    websocket = RigWebSocketFactory(hub).buildProtocol(None)
    request = Request(DummyChannel())
    request.chunked = True
    stream = SSEConnection(hub, request, hub.new_local_id())
    session = LongPollSession(hub, hub.new_local_id(), buffer_size=10, wait=5, ttl=60, cors=b"*")
    for connection in (websocket, stream, session, FakeConnection(hub)):
        assert verifyObject(IConnection, connection)


def test_the_hub_writes_nothing_on_a_connection():
    clock = Clock()
    hub = Hub(clock)
    hub.auth.validator.session_of = lambda claims: claims.get("jti")  # as JWT_SESSION_FIELD
    connection = FakeConnection(hub)
    before = dict(vars(connection))
    hub.register(connection, [Subscription("greeting")])
    hub.join_sessions(connection, [{"jti": "s", "exp": clock.seconds() + 60}])
    assert set(vars(connection)) == set(before)  # frames recorded, no attribute added
    assert hub.subscriptions_of(connection) == (Subscription("greeting"),)
    assert hub.sessions == {"s": {connection}}
    hub.unregister(connection)
    assert hub.subscriptions_of(connection) == () and hub.sessions == {}
    assert clock.getDelayedCalls() == []  # the expiry timer went with it
