"""The Hub: every live connection of this node, their subscriptions, and publishing.

Transports (WebSocket, SSE, long polling) register connection objects here.
A connection provides ``local_id``, ``token``, ``subscriptions``, ``framer``
(a function ``(event, seq) -> frame`` shared by its kind), ``deliver(frame)``,
``heartbeat()`` and ``close(reason)``. Publishing matches the event through
the index and builds each kind's frame once.
"""
import itertools

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from rig.auth import NoJWTValidation, jwt_subscriptions
from rig.connections.outbox import Outbox
from rig.connections.token import TokenCodec
from rig.events import rig_event
from rig.subscriptions.extractors import ExtractorConfig
from rig.subscriptions.index import SubscriptionIndex


class ConnectionRateLimit:
    """RIG's fixed one-minute window on new connections, per node."""

    def __init__(self, clock, per_minute):
        self._clock = clock
        self._per_minute = per_minute
        self._window = None
        self._count = 0

    def allow(self):
        """Count one connection; False when this minute's quota is used up."""
        window = int(self._clock.seconds() // 60)
        if window != self._window:
            self._window, self._count = window, 0
        if self._count >= self._per_minute:
            return False
        self._count += 1
        return True


class Hub:
    log = Logger()

    def __init__(
        self,
        reactor,
        *,
        extractors=None,
        codec=None,
        max_connections_per_minute=5000,
        heartbeat_interval=15.0,
        send_queue_limit=1 << 20,
        jwt=None,
    ):
        self.reactor = reactor
        self.extractors = extractors or ExtractorConfig()
        self.codec = codec or TokenCodec.from_cookie("rig@127.0.0.1", None)
        self.index = SubscriptionIndex(self.extractors)
        self.outbox = Outbox(reactor)
        self.rate_limit = ConnectionRateLimit(reactor, max_connections_per_minute)
        self.send_queue_limit = send_queue_limit
        self.jwt = jwt or NoJWTValidation()
        self.connections = {}
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = reactor
        self._heartbeat_interval = heartbeat_interval

    # -- lifecycle -------------------------------------------------------

    def start(self):
        self._heartbeat.start(self._heartbeat_interval, now=False).addErrback(
            lambda failure: self.log.failure("heartbeat loop died", failure)
        )

    def stop(self):
        if self._heartbeat.running:
            self._heartbeat.stop()
        self.outbox.stop()

    # -- registry --------------------------------------------------------

    def new_local_id(self):
        return next(self._ids)

    def token_for(self, local_id):
        return self.codec.encode(local_id)

    def register(self, connection, subscriptions):
        """Make *connection* live with *subscriptions* and send it the welcome events."""
        self.connections[connection.local_id] = connection
        connection.send_rig_event(
            rig_event(
                "rig.connection.create",
                {"connection_token": connection.token},
                now=self.reactor.seconds(),
            )
        )
        self.set_subscriptions(connection, subscriptions)

    def unregister(self, connection):
        if self.connections.pop(connection.local_id, None) is not None:
            self.index.remove(connection)

    def find(self, ref):
        """The live local connection *ref* names, or None."""
        if not self.codec.is_local(ref):
            return None
        return self.connections.get(ref.local_id)

    def set_subscriptions(self, connection, subscriptions):
        """Replace the connection's subscriptions and tell it (``rig.subscriptions_set``)."""
        connection.subscriptions = subscriptions
        self.index.set(connection, subscriptions)
        connection.send_rig_event(
            rig_event(
                "rig.subscriptions_set",
                [subscription.to_json() for subscription in subscriptions],
                now=self.reactor.seconds(),
            )
        )

    def subscriptions_from_jwt(self, token):
        """Validated claims of *token* turned into subscriptions (raises InvalidJWT)."""
        claims = self.jwt.claims(token)
        return claims, jwt_subscriptions(self.extractors, claims)

    # -- publishing ------------------------------------------------------

    def publish(self, event):
        """Deliver *event* to every matching local connection; return how many."""
        seq = next(self._seq)
        targets = self.index.match(event)
        if not targets:
            return 0
        frames = {}
        for connection in targets:
            framer = connection.framer
            frame = frames.get(framer)
            if frame is None:
                frame = frames[framer] = framer(event, seq)
            connection.deliver(frame)
        return len(targets)

    def _beat(self):
        for connection in list(self.connections.values()):
            try:
                connection.heartbeat()
            except Exception:
                self.log.failure("heartbeat of {connection!r}", connection=connection)

    def close_all(self):
        """Close every connection (shutdown): WebSockets go away, streams end."""
        for connection in list(self.connections.values()):
            try:
                connection.close()
            except Exception:
                self.log.failure("closing {connection!r}", connection=connection)
