"""The Hub: every live connection of this node, their subscriptions, and publishing.

Transports (WebSocket, SSE, long polling) register connection objects here.
A connection provides ``local_id``, ``token``, ``subscriptions``, ``framer``
(a function ``(event, position) -> frame`` shared by its kind; *position* is
the SSE ``id:`` from the history), ``deliver(frame)``,
``heartbeat()`` and ``close(reason)``. Publishing matches the event through
the index and builds each kind's frame once.
"""
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import attrs
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from rig import defaults
from rig.auth.authority import Authority
from rig.events import CloudEvent, rfc3339_utc, rig_notice
from rig.hub.closing import SESSION_KILLED, SHUTDOWN, TOKEN_EXPIRED
from rig.hub.expiry import ExpiryTimers
from rig.hub.interface import IConnection
from rig.hub.outbox import Outbox
from rig.hub.token import ConnectionRef, TokenCodec
from rig.metrics.stats import HubStats
from rig.recovery import History
from rig.subscriptions.extractors import ExtractorConfig
from rig.subscriptions.index import SubscriptionIndex
from rig.subscriptions.inference import jwt_subscriptions
from rig.subscriptions.model import Subscription
from rig.subscriptions.params import SubscriptionParams


@attrs.define(slots=True)
class ConnectionRecord:
    """What the hub keeps about a connection; nothing of it is written on the transport."""

    subscriptions: tuple = ()
    sessions: set | None = None  # the sessions of its JWTs


class ConnectionRateLimit:
    """RIG's fixed one-minute window on new connections, per node."""

    def __init__(self, clock: IReactorTime, per_minute: int) -> None:
        self._clock = clock
        self._per_minute = per_minute
        self._window: int | None = None
        self._count = 0

    def allow(self) -> bool:
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
        max_connections_per_minute=defaults.MAX_CONNECTIONS_PER_MINUTE,
        heartbeat_interval=defaults.HEARTBEAT_INTERVAL,
        send_queue_limit=defaults.SEND_QUEUE_LIMIT,
        auth=None,
        history=None,
    ):
        self.reactor = reactor
        self.extractors = extractors or ExtractorConfig()
        self.codec = codec or TokenCodec.from_cookie("rig@127.0.0.1", None)
        self.index = SubscriptionIndex(self.extractors)
        self.subscription_params = SubscriptionParams()  # what connects asked for lately
        self.outbox = Outbox(reactor)
        self.rate_limit = ConnectionRateLimit(reactor, max_connections_per_minute)
        self.send_queue_limit = send_queue_limit
        self.stats = HubStats()  # plain counters; the metrics collector reads them
        self.auth = auth or Authority.unconfigured(reactor)
        self.auth.blacklist.on_add(self.kill_session)
        # in a cluster (see join_cluster): where events go on to other nodes, calls to
        # the node that owns a connection, the interest confirmations wait for, and
        # replays from the node a reconnecting client left
        self.forwarders = []
        self.remote = None
        self.cluster_interest = None
        self.remote_history = None
        self.closing = False  # shutting down: new connections are refused
        self.connections = {}  # local id -> connection (IConnection)
        self._records = {}  # local id -> ConnectionRecord: the hub's own bookkeeping
        self.sessions = {}  # session id -> set of local connections
        # framer -> the subscribed connections using it: a publish groups its targets
        # by kind with set intersections, not with a Python step per connection
        self._by_framer = {}
        self._ids = itertools.count(1)
        self.history = history if history is not None else History(reactor)
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = reactor
        self._heartbeat_interval = heartbeat_interval
        self._expiries = ExpiryTimers(reactor, self._token_expired)  # JWTs' ends

    def join_cluster(self, *, forward: Callable[[CloudEvent, bytes], object], calls: Any,
                     interest: Any, remote_history: Any) -> None:
        """This node is a cluster member: route events, calls, confirmations and replays
        through the cluster's parts (the composition root calls this, once)."""
        self.forwarders.append(forward)
        self.remote = calls
        self.cluster_interest = interest
        self.remote_history = remote_history

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        self.auth.start()
        self._heartbeat.start(self._heartbeat_interval, now=False).addErrback(
            lambda failure: self.log.failure("heartbeat loop died", failure)
        )

    def stop(self) -> None:
        self.auth.stop()
        if self._heartbeat.running:
            self._heartbeat.stop()
        self.outbox.stop()
        self._expiries.stop()

    # -- registry --------------------------------------------------------

    def new_local_id(self) -> int:
        return next(self._ids)

    def token_for(self, local_id: int) -> str:
        return self.codec.encode(local_id)

    def register(self, connection: IConnection, subscriptions: Sequence[Subscription],
                 resume: str | None = None) -> Deferred | None:
        """Make *connection* live with *subscriptions* and send it the welcome events.

        ``rig.subscriptions_set`` is the client's confirmation: every matching
        event published afterwards, on any node, reaches it. In a cluster that
        may mean waiting for the peers to learn of a new event type: then this
        returns a Deferred that fires once the welcome is sent (else None).

        With *resume* (the client's last event id) the welcome says whether
        recovery is complete, and the missed matching events follow the
        subscriptions event, before any live one.
        """
        if connection.local_id not in self.connections:
            self.stats.connections[connection.kind] += 1
        self.connections[connection.local_id] = connection
        self._records[connection.local_id] = ConnectionRecord()
        if resume is not None and self.remote_history is not None:
            address = self.remote_history.owner_of(resume)
            if address is not None:  # the client comes from another node (or worker)
                return self._resume_from(address, connection, subscriptions, resume)
        return self._once_confirmed(connection, subscriptions, self._welcome, resume)

    def _resume_from(self, address, connection, subscriptions, resume):
        """Ask the node the client left for what it missed; add what arrives here meanwhile."""
        mark = self.history.position_id().decode("ascii")
        types = {subscription.event_type for subscription in subscriptions}

        def fetched(reply):
            if self.connections.get(connection.local_id) is not connection:
                return False
            return self._once_confirmed(connection, subscriptions, self._welcome, resume,
                                        (reply, mark))

        fetching = self.remote_history.fetch(address, resume, types).addCallback(fetched)
        fetching.addErrback(lambda failure: self.log.failure(
            "resuming connection {local_id}", failure, local_id=connection.local_id))
        return fetching

    def _once_confirmed(self, connection, subscriptions, then, *args):
        """Run ``then(connection, subscriptions, *args)`` once the cluster (if any) routes
        the subscribed event types here: at once (returning None) or later (a Deferred)."""
        interest = self.cluster_interest
        waiting = None
        if interest is not None:
            waiting = interest.want({subscription.event_type for subscription in subscriptions})
        if waiting is None:
            then(connection, subscriptions, *args)
            return None

        def confirmed(_):
            if self.connections.get(connection.local_id) is not connection:
                return False  # it went away meanwhile
            then(connection, subscriptions, *args)
            return True

        waiting.addCallback(confirmed)
        waiting.addErrback(lambda failure: self.log.failure(
            "confirming connection {local_id}", failure, local_id=connection.local_id))
        return waiting

    def _welcome(self, connection, subscriptions, resume, elsewhere=None):
        """The welcome events, then what the client missed since *resume*: from this
        node's history, or (*elsewhere*) from the node it left plus what this node
        received after the question went out."""
        welcome = f'"connection_token":"{connection.token}"'  # base64url: nothing to escape
        missed = ()
        if resume is not None:
            types = {subscription.event_type for subscription in subscriptions}
            if elsewhere is None:
                complete, missed = self.history.since(resume, types)
            else:
                reply, mark = elsewhere
                complete, missed = reply if reply is not None else (False, [])
                seen = {event.id for _, event in missed}
                missed = missed + [(position, event) for position, event
                                   in self.history.since(mark, types)[1] if event.id not in seen]
            welcome += ',"recovered":true' if complete else ',"recovered":false'
            missed = self._matching(subscriptions, missed)
            self.stats.recoveries["complete" if complete else "incomplete"] += 1
            self.stats.replayed += len(missed)
        now = rfc3339_utc(self.reactor.seconds())
        self._subscribe(connection, subscriptions, now,
                        rig_notice("rig.connection.create", f"{{{welcome}}}", now))
        for position, event in missed:
            connection.deliver(connection.framer(event, position))

    def _matching(self, subscriptions, missed):
        if not missed:
            return ()
        index, probe = SubscriptionIndex(self.extractors), object()
        index.set(probe, subscriptions)
        return [(position, event) for position, event in missed if index.match(event)]

    def _send_welcome(self, connection, *notices):
        """Send RIG events whose ids a client may later resume from."""
        self.history.mark(*[notice.id for notice in notices])
        connection.send_rig_event(*notices)

    def interest_types(self) -> set[str]:
        """Event types this node wants from the cluster: those subscribed to, and
        those of recently closed connections whose clients may come back for them."""
        types = self.index.event_types()
        lingering = self.history.lingering_types()
        if lingering:
            types |= lingering
        self.history.note_interest(types)
        return types

    def unregister(self, connection: IConnection) -> None:
        known = self.connections.pop(connection.local_id, None)
        if known is None:
            return
        self.stats.connections[known.kind] -= 1
        record = self._records.pop(connection.local_id, None) or ConnectionRecord()
        self.index.remove(connection)
        self._forget_framer(connection)
        self.history.linger({s.event_type for s in record.subscriptions})
        for session in record.sessions or ():
            members = self.sessions.get(session)
            if members is not None:
                members.discard(connection)
                if not members:
                    del self.sessions[session]
        self._expiries.forget(connection)

    def _forget_framer(self, connection):
        framer = connection.framer
        members = self._by_framer.get(framer)
        if members is not None:
            members.discard(connection)
            if not members:
                del self._by_framer[framer]

    def subscriptions_of(self, connection: IConnection) -> tuple[Subscription, ...]:
        """The subscriptions a live connection has (none while its confirmation waits)."""
        record = self._records.get(connection.local_id)
        return record.subscriptions if record is not None else ()

    def find(self, ref: ConnectionRef) -> IConnection | None:
        """The live local connection *ref* names, or None."""
        if not self.codec.is_local(ref):
            return None
        return self.connections.get(ref.local_id)

    def set_subscriptions(self, connection: IConnection,
                          subscriptions: Sequence[Subscription]) -> Deferred | None:
        """Replace the connection's subscriptions and tell it (``rig.subscriptions_set``):
        at once (None), or once the cluster routes new event types here (a Deferred
        of whether the connection was still there)."""
        return self._once_confirmed(connection, subscriptions, self._subscribe)

    def _subscribe(self, connection, subscriptions, now=None, created=None):
        """Subscribe *connection* and say so (after *created*, the welcome's first
        event, when it is new)."""
        self._records[connection.local_id].subscriptions = tuple(subscriptions)
        self.index.set(connection, subscriptions)
        self._by_framer.setdefault(connection.framer, set()).add(connection)
        listed = ",".join([subscription.json_text() for subscription in subscriptions])
        subscribed = rig_notice("rig.subscriptions_set", f"[{listed}]",
                                now or rfc3339_utc(self.reactor.seconds()))
        if created is None:
            self._send_welcome(connection, subscribed)
        else:
            self._send_welcome(connection, created, subscribed)

    def subscriptions_from_claims(self, claims: dict) -> list[Subscription]:
        return jwt_subscriptions(self.extractors, claims)

    # -- sessions and token lifetime ------------------------------------

    def join_sessions(self, connection: IConnection, claims_list: Sequence[dict]) -> None:
        """Associate *connection* with the session of each token; adopt the latest expiry.

        A connection authenticated by a JWT ends when that JWT expires, unless a
        newer valid JWT of one of its sessions (or its first JWT) extends it.
        """
        record = self._records.get(connection.local_id)
        if record is None:
            return  # it went away meanwhile
        session_of = self.auth.validator.session_of
        extended = None
        for claims in claims_list:
            session = session_of(claims)
            known = record.sessions
            if not known or session in known:
                expires = claims.get("exp")
                extended = expires if extended is None else max(extended, expires)
            if session is not None:
                if known is None:
                    record.sessions = known = set()
                known.add(session)
                self.sessions.setdefault(session, set()).add(connection)
        if extended is not None:
            self._expiries.expire_at(connection, extended)

    def _token_expired(self, connection):
        self.log.info("Closing connection {local_id}: its token expired",
                      local_id=connection.local_id)
        connection.close(TOKEN_EXPIRED)

    def kill_session(self, session: str) -> None:
        """Close every local connection of a blacklisted session at once."""
        members = self.sessions.pop(session, ())
        if members:
            self.log.info("Session {session} blacklisted: closing {count} connections",
                          session=session, count=len(members))
        for connection in list(members):
            connection.close(SESSION_KILLED)

    # -- publishing ------------------------------------------------------

    def publish(self, event: CloudEvent) -> int:
        """Deliver *event* here and hand it to the forwarders with its position in this
        node's history (which names it to other nodes); return local deliveries."""
        position = self.history.record(event)
        for forward in self.forwarders:
            try:
                forward(event, position)
            except Exception:
                self.log.failure("forwarding event {event_id}", event_id=event.id)
        return self._deliver(event, position)

    def publish_local(self, event: CloudEvent) -> int:
        """Deliver *event* to every matching local connection; return how many."""
        return self._deliver(event, self.history.record(event))

    def _deliver(self, event: CloudEvent, position: bytes) -> int:
        targets = self.index.match(event)
        if not targets:
            return 0
        broadcast = self.outbox.broadcast
        by_framer = self._by_framer
        if len(by_framer) == 1:  # one kind of connection (the common case): no grouping
            for framer in by_framer:
                broadcast(framer(event, position), targets)
        else:
            wanted = set(targets)
            for framer, members in by_framer.items():
                group = members & wanted  # iterates the smaller of the two, in C
                if group:
                    broadcast(framer(event, position), group)
        count = len(targets)
        self.stats.deliveries += count  # once per event, never per connection
        return count

    def slow_client(self, connection: IConnection, queued: int, limit: int, outcome: str,
                    unit: str = "bytes") -> None:
        """Count a client that cannot keep up and log why, once per connection.

        The transport decides what happens to it; *outcome* says what, for the log.
        """
        self.stats.slow_clients[connection.kind] += 1
        self.log.info(
            "Slow {transport} client {local_id}: {queued} {unit} queued, over the limit"
            " of {limit}; {outcome}",
            transport=connection.kind, local_id=connection.local_id, queued=queued,
            unit=unit, limit=limit, outcome=outcome, reason="too slow",
        )

    def _beat(self):
        for connection in list(self.connections.values()):
            try:
                connection.heartbeat()
            except Exception:
                self.log.failure("heartbeat of {connection!r}", connection=connection)

    def close_all(self) -> Deferred:
        """Close every connection (shutdown): WebSockets go away, streams end.

        From now on new connections are refused, so clients reconnect to
        another node. Returns a Deferred that fires once the connections that
        close with a handshake (WebSockets) are gone, so their close frames
        are on the wire before the process exits.
        """
        self.closing = True
        waits = []
        for connection in list(self.connections.values()):
            try:
                gone = connection.close(SHUTDOWN)
            except Exception:
                self.log.failure("closing {connection!r}", connection=connection)
                continue
            if gone is not None:
                waits.append(gone)
        return gatherResults(waits, consumeErrors=True)
