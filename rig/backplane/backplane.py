"""Events between nodes through a broker, with the gossip mesh as the fallback.

With ``CLUSTER_BACKPLANE`` set, a node publishes each event it originates
once, to the broker channel of the event's type (``<prefix><type>``), and
subscribes to the channels of the types it has interest in (those of its
subscribers, and of recently closed connections for the recovery history's
age, as the mesh interest does). A new type's confirmation waits for the
broker to acknowledge the subscription, so the promise of the scale-out issue
holds: every matching event published anywhere after the confirmation arrives.

Each node tells the cluster (a gossiped flag, :class:`BackplaneReplica`)
whether it receives from the broker. A publisher sends over the mesh links
only to interested nodes without the flag, or to every interested node while
its own broker connection is down; so the mesh carries what the broker
cannot, and nothing while all is well.

The switch, and what it guarantees:

- Every event a node sends carries its position in the sender's history
  (``<epoch>.<seq>``); a receiver drops a position it has delivered already
  (:class:`rig.cluster.routing.RecentPositions`), and its own publications
  coming back from the broker. So an event that arrives both ways is
  delivered once.
- A broker message also carries a tag keyed by ``NODE_COOKIE`` (HMAC-SHA256):
  whoever else can publish to the broker cannot pass events off as a node's.
- A node sets its flag only after the broker acknowledged every subscription
  it needs, and clears it as soon as its connection is lost; until its peers
  have the change they keep sending both ways, which the receiver de-duplicates.
- Publications the broker has not acknowledged when the connection drops are
  sent again over the mesh.
- What can be missed: events published on *other* nodes between this node's
  broker connection breaking and those nodes learning of it (the time to
  notice a silent connection plus one gossip push). A client gets them back
  by reconnecting with its last event id, as far as the recovery history
  reaches (``RECOVERY_HISTORY_SIZE`` / ``_AGE``). A broker that goes away for
  every node at once (a crash, a restart) costs nothing of that kind: every
  publisher notices its own connection and falls back to the mesh.
"""
import binascii
import collections
import hashlib
import hmac
import re

from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from rig.cluster.replicas import PartitionedReplica
from rig.hmackey import HmacKey
from rig.pause import Pause

UP = "up"
SUBSCRIBE_TIMEOUT = 10.0  # seconds for the broker to take every subscription after a connect
_SAFE_TYPE = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")


def message_key(cookie):
    """The key of the backplane's message tags: anyone may be able to publish to the
    broker, only the cluster's nodes know ``NODE_COOKIE``."""
    secret = (cookie or "").encode("utf-8")
    return hashlib.sha256(b"txrig backplane key\x00" + secret).digest()


def tag(key, position, body):
    """The tag of a backplane message: 32 hex digits of HMAC-SHA256 (*key*, an HmacKey)
    over position and body."""
    return key.digest(position + b"\n" + body).hex()[:32].encode("ascii")


def channel_of(prefix, event_type):
    """The channel (NATS subject) of *event_type*: the type itself when it is a valid
    subject made of letters, digits, ``_``, ``-`` and dots, else ``~`` and its UTF-8 in
    hex (``~`` never appears in the first form, so the two cannot meet)."""
    if _SAFE_TYPE.fullmatch(event_type):
        return prefix + event_type
    return prefix + "~" + binascii.hexlify(event_type.encode("utf-8")).decode("ascii")


class BackplaneReplica(PartitionedReplica):
    """Which nodes receive their events from the broker (gossiped: a node's partition
    is ``{"up"}`` while it does)."""

    key = "backplane"

    def __init__(self, backplane, interval=0.5):
        super().__init__(lambda: {UP} if backplane.up else set(), interval)
        self._on_broker = None  # the answer of on_broker, until the sets change

    def on_broker(self):
        """The nodes that receive from the broker (asked once per published event)."""
        if self._on_broker is None:
            self._on_broker = frozenset(self.owners_with(UP))
        return self._on_broker

    def refresh(self):
        self._on_broker = None
        return super().refresh()

    def merge(self, state, address):
        self._on_broker = None
        return super().merge(state, address)

    def member_gone(self, member):
        self._on_broker = None
        super().member_gone(member)


class Backplane(Service):
    log = Logger()

    def __init__(self, reactor, hub, pubsub_factory, *, prefix="rig.events.", epoch,
                 cookie=None, confirm_timeout=2.0, sync_interval=0.5, retry_policy=None):
        """*pubsub_factory(on_message)* makes the broker adapter
        (:mod:`rig.backplane.brokers`); *epoch* is this node's history epoch; *cookie*
        (``NODE_COOKIE``) keys the tag every message carries."""
        self._reactor = reactor
        self._key = HmacKey(message_key(cookie))
        self._hub = hub
        self.pubsub = pubsub_factory(self._received)
        self.prefix = prefix
        self._epoch = epoch.encode("ascii") if isinstance(epoch, str) else epoch
        self._confirm_timeout = confirm_timeout
        self._retry = retry_policy or backoffPolicy(initialDelay=0.25, maxDelay=5.0)
        self._sync = LoopingCall(self.sync)
        self._sync.clock = reactor
        self._sync_interval = sync_interval
        self.up = False
        self.replica = BackplaneReplica(self)
        self.router = None  # the EventRouter: receives, and re-sends the unacknowledged
        self._channels = {}  # event type -> Deferred of its subscription (None once done)
        self._holding = collections.Counter()  # types of confirmations under way
        self._unacknowledged = {}  # position -> event published, not yet acknowledged
        self._channel_names = {}  # event type -> its channel
        self._loop = None
        self._pause = Pause(reactor)
        self.counts = {"published": 0, "received": 0, "echoes": 0, "resent": 0, "forged": 0}

    @property
    def healthy(self):
        return self.up

    # -- the service -----------------------------------------------------------

    def startService(self):
        super().startService()
        self._loop = defer.ensureDeferred(self._run())
        self._loop.addErrback(lambda failure: self.log.failure("backplane stopped", failure))
        self._sync.start(self._sync_interval, now=False).addErrback(
            lambda failure: self.log.failure("backplane sync loop died", failure))

    def stopService(self):
        super().stopService()
        if self._sync.running:
            self._sync.stop()
        self._pause.cancel()
        self._down()
        self.pubsub.close()

    async def _run(self):
        attempt = 0
        while self.running:
            try:
                await self.pubsub.connect()
                subscribing = defer.ensureDeferred(self._subscribe_all())
                await subscribing.addTimeout(SUBSCRIBE_TIMEOUT, self._reactor)
            except Exception as error:
                self.pubsub.close()
                self._down()
                if not self.running:
                    return
                delay = self._retry(attempt)
                attempt += 1
                self.log.warn("Backplane {broker}: {error}; the mesh carries the events,"
                              " retrying in {delay:.1f} s", broker=str(self.pubsub),
                              error=str(error) or type(error).__name__, delay=delay)
                if not await self._pause.sleep(delay):
                    return
                continue
            attempt = 0
            self._set_up(True)
            self.log.info("Backplane {broker} is up: events between nodes go through it",
                          broker=str(self.pubsub))
            reason = await self.pubsub.lost
            self._down()
            self.pubsub.close()
            if not self.running:
                return
            self.log.warn("Backplane {broker} lost ({reason}): the mesh carries the events"
                          " until it is back", broker=str(self.pubsub),
                          reason=str(reason) or type(reason).__name__)
            if not await self._pause.sleep(self._retry(0)):
                return


    def _set_up(self, up):
        if self.up != up:
            self.up = up
            if self.replica.cluster is not None:
                self.replica.refresh()  # peers learn at once, not at the next interval

    def _down(self):
        """No broker: clear the flag, forget the subscriptions, and send what it never
        acknowledged over the mesh (receivers drop what they already had)."""
        self._set_up(False)
        channels, self._channels = self._channels, {}
        for subscribing in channels.values():
            if subscribing is not None and not subscribing.called:
                subscribing.cancel()
        unacknowledged, self._unacknowledged = self._unacknowledged, {}
        if unacknowledged and self.router is not None:
            self.counts["resent"] += len(unacknowledged)
            for position, event in unacknowledged.items():
                self.router.route_mesh(event, position)

    # -- subscriptions -----------------------------------------------------------

    def _wanted(self):
        types = self._hub.interest_types()
        if self._holding:
            types |= self._holding.keys()
        return types

    async def _subscribe_all(self):
        """Subscribe to every wanted type; returns once the broker acknowledged them."""
        waits = [self._subscribe(event_type) for event_type in self._wanted()]
        if waits:
            await defer.gatherResults(waits, consumeErrors=True)

    def _subscribe(self, event_type):
        subscribing = self._channels.get(event_type)
        if event_type in self._channels:
            return subscribing if subscribing is not None else defer.succeed(None)
        subscribing = self.pubsub.subscribe(channel_of(self.prefix, event_type))

        def done(result):
            if self._channels.get(event_type) is subscribing:
                if isinstance(result, Failure):
                    del self._channels[event_type]  # the next sync tries again
                else:
                    self._channels[event_type] = None
            return result

        self._channels[event_type] = subscribing
        return subscribing.addBoth(done)

    def want(self, types):
        """None when the broker already delivers *types* here (or is down: then the mesh
        does, and the interest confirmation covers it); else a Deferred that fires once
        it acknowledged the new subscriptions (or the timeout ran out)."""
        if not self.up:
            return None
        missing = [event_type for event_type in types
                   if event_type not in self._channels or self._channels[event_type] is not None]
        if not missing:
            return None
        self._holding.update(missing)
        confirmed = defer.Deferred()

        def release(_result=None):
            if confirmed.called:
                return
            if timer.active():
                timer.cancel()
            self._holding.subtract(missing)
            self._holding = +self._holding
            confirmed.callback(None)  # a lost connection or a timeout: the mesh takes over

        # a timeout must not cancel the subscriptions themselves: they may still complete
        timer = self._reactor.callLater(self._confirm_timeout, release)
        defer.gatherResults([self._subscribe(t) for t in missing],
                            consumeErrors=True).addBoth(release)
        return confirmed

    def sync(self):
        """Subscribe to new interest and leave the types nobody here wants any more."""
        if not self.up:
            return
        wanted = self._wanted()
        for event_type in wanted - self._channels.keys():
            self._subscribe(event_type).addErrback(lambda _failure: None)
        for event_type in self._channels.keys() - wanted:
            if self._channels[event_type] is None:  # not while it is being subscribed
                del self._channels[event_type]
                self.pubsub.unsubscribe(channel_of(self.prefix, event_type)).addErrback(
                    lambda _failure: None)

    # -- events ------------------------------------------------------------------

    def publish(self, event, position):
        """Send *event* (at *position* in this node's history) through the broker; False
        when the broker is down (the caller sends it over the mesh)."""
        if not self.up:
            return False
        channel = self._channel_names.get(event.type)
        if channel is None:
            if len(self._channel_names) >= 10000:
                self._channel_names.clear()  # types are not bounded; this cache is
            channel = self._channel_names[event.type] = channel_of(self.prefix, event.type)
        body = event.json
        try:
            sent = self.pubsub.publish(channel, position + b" " + tag(self._key, position, body)
                                       + b"\n" + body)
        except Exception as error:  # connection gone, message over the broker's limit
            self.log.debug("Backplane publish failed: {error}", error=str(error))
            return False
        self._unacknowledged[position] = event
        self.counts["published"] += 1
        sent.addBoth(self._acknowledged, position)
        return True

    def _acknowledged(self, result, position):
        event = self._unacknowledged.pop(position, None)
        if isinstance(result, Failure) and event is not None and self.router is not None:
            self.counts["resent"] += 1  # the broker may not have it: the mesh sends it
            self.router.route_mesh(event, position)

    def _received(self, _channel, payload):
        head, newline, body = payload.partition(b"\n")
        position, _, mac = head.partition(b" ")
        if not newline or not hmac.compare_digest(mac, tag(self._key, position, body)):
            self.counts["forged"] += 1
            if self.counts["forged"] % 1000 == 1:  # the first, then one line per thousand
                self.log.warn("Dropped {count} backplane message(s) without a valid tag (not"
                              " from a node with this NODE_COOKIE)", count=self.counts["forged"])
            return
        if position.partition(b".")[0] == self._epoch:
            self.counts["echoes"] += 1  # our own publication: delivered here already
            return
        self.counts["received"] += 1
        if self.router is not None:
            self.router.receive(body, position)


class Confirmations:
    """What a new subscription's confirmation waits for with a backplane: the mesh
    interest acknowledged by every peer (the fallback must know it too) and the
    broker's subscription, both at once."""

    def __init__(self, interest, backplane):
        self._interest = interest
        self._backplane = backplane

    def want(self, types):
        waits = [wait for wait in (self._interest.want(types), self._backplane.want(types))
                 if wait is not None]
        if not waits:
            return None
        return defer.gatherResults(waits, consumeErrors=True).addCallback(lambda _: None)
