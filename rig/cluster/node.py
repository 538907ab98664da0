"""One node's part in the cluster: its links, its SWIM membership, and the parts it carries.

The node core (as memberlist's) knows members and links, not what they carry:

- membership messages go straight to the sans-IO SWIM core
  (:mod:`rig.cluster.membership`); its outputs go out on the links;
- every other message type is handled by a *part* registered with
  :meth:`ClusterNode.handle`: replicated structures (:mod:`rig.cluster.replicas`,
  :mod:`rig.cluster.interest`), event routing (:mod:`rig.cluster.routing`) and
  calls to owning nodes (:mod:`rig.cluster.calls`);
- the replicated parts take part in two generic exchanges: a member that
  becomes alive gets this node's full state, and every few seconds one random
  peer gets a digest and sends back only what differs (push-pull anti-entropy);
  a dead or departed member's partitions are dropped.
"""
import random

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IResolutionReceiver
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from zope.interface import implementer

from rig.cluster.delegate import IReplicated
from rig.cluster.links import ClusterLinks
from rig.cluster.membership import ALIVE, DEAD, LEFT, Membership, SwimConfig, make_boot

SWIM_TYPES = frozenset(("ping", "ack", "ping-req", "nack", "join", "sync", "gossip"))
STATE = "rig.state"
DIGEST = "rig.digest"
SYNC = "rig.sync"
_BAD_MESSAGE = (KeyError, TypeError, ValueError, AttributeError)


class ClusterNode(Service):
    log = Logger()

    def __init__(self, reactor, *, cookie, listen, node_host, boot=None, seeds=(),
                 dns_name=None, tls_ca=None, swim_config=None, parts=(), named=(),
                 tick_interval=0.1, anti_entropy_interval=5.0, join_timeout=5.0,
                 sync_timeout=5.0, rng=None):
        """*parts* are attached once the node listens; *named* (token codecs) are
        given the node's name then, so that tokens name this cluster member.

        The node is *synced* once it has joined (a seed answered, or none did
        within *join_timeout*) and every live peer has sent its state (or
        *sync_timeout* ran out): only then does it report itself ready.
        """
        self.clock = reactor
        self.boot = boot or make_boot(reactor.seconds())
        self.parts = list(parts)
        self._named = list(named)
        self._cookie = cookie
        self._listen = listen
        self._node_host = node_host
        self._seeds = list(seeds)
        self._dns_name = dns_name
        self._tls_trust = None
        if tls_ca:  # read once, at build time, not on the reactor per connection
            from twisted.internet.ssl import Certificate

            with open(tls_ca, "rb") as ca_file:
                self._tls_trust = Certificate.loadPEM(ca_file.read())
        self._swim_config = swim_config or SwimConfig()
        self._rng = rng or random.Random()
        self._intervals = (tick_interval, anti_entropy_interval)
        self._loops = []
        self._handlers = {STATE: self._on_state, DIGEST: self._on_digest, SYNC: self._on_sync}
        self._timeouts = (join_timeout, sync_timeout)
        self.synced = False
        self._joined = False
        self._syncing = set()  # peers whose state we asked for while joining
        self._sync_waiters = []
        self._sync_timer = None
        self._started_at = None
        self._last_seen = {}
        self._counts = {"sent": 0, "received": 0}
        self.links = None
        self.membership = None

    @property
    def node_name(self):
        return self.membership.name if self.membership is not None else None

    @property
    def replicated(self):
        return [part for part in self.parts if IReplicated.providedBy(part)]

    # -- lifecycle -----------------------------------------------------------

    def startService(self):
        super().startService()
        self.links = ClusterLinks(
            self.clock, node_name=self._advertised() or "rig", cookie=self._cookie,
            listen=self._listen, advertise=self._advertised(),
            on_message=self._received, on_link_down=self._link_down,
            client_endpoint=self._tls_endpoint if self._tls_trust is not None else None,
        )
        starting = self.links.start()
        starting.addCallback(self._listening)
        starting.addErrback(lambda failure: self.log.failure("cluster start failed", failure))
        return starting

    def _tls_endpoint(self, address):
        """Connect to a peer over TLS, trusting only ``CLUSTER_TLS_CA`` and checking
        that the peer's certificate names the address it is reached at."""
        from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
        from twisted.internet.ssl import optionsForClientTLS

        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        return wrapClientTLS(optionsForClientTLS(host, trustRoot=self._tls_trust),
                             HostnameEndpoint(self.clock, host, int(port)))

    def _advertised(self):
        """``NODE_HOST:port`` when the listener names its port; else the bound address."""
        parts = self._listen.split(":")
        if len(parts) > 1 and parts[1].isdigit() and parts[1] != "0":
            return f"{self._node_host}:{parts[1]}"
        return None

    def _listening(self, port):
        address = self.links.address
        self.links.node_name = address
        self.membership = Membership(address, address, self.boot, config=self._swim_config,
                                     rng=self._rng, now=self.clock.seconds())
        self.membership.on_change.append(self._member_changed)
        for codec in self._named:  # tokens and correlation ids now name this member
            codec.node = address
        for part in self.parts:
            part.attach(self)
        self._started_at = self.clock.seconds()
        joining = self.membership.join(self.clock.seconds(), self._seeds)
        self._send_all(joining)
        if joining:
            self._sync_timer = self.clock.callLater(self._timeouts[0], self._join_timed_out)
        else:
            self._have_joined()
        tick, anti_entropy = self._intervals
        loops = [(self._tick, tick), (self._anti_entropy, anti_entropy)]
        if self._dns_name:
            loops.append((self._discover, 5.0))
        for function, interval in loops:
            loop = LoopingCall(function)
            loop.clock = self.clock
            loop.start(interval, now=False).addErrback(
                lambda failure: self.log.failure("cluster loop died", failure))
            self._loops.append(loop)
        self.log.info("Cluster node {name} listening", name=address)

    def stopService(self):
        super().stopService()
        self._cancel_sync_timer()
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        if self.membership is not None:
            for part in self.parts:
                part.detach()
            self._send_all(self.membership.leave(self.clock.seconds()))
        if self.links is None:
            return None
        # give the leave a moment to go out, then close the links
        return defer.Deferred.fromCoroutine(self._close_links())

    async def _close_links(self):
        await deferLater(self.clock, 0.05, lambda: None)
        await self.links.stop()

    # -- joining: every live peer's state before ready -------------------------------

    def when_synced(self):
        """A Deferred that fires once this node knows every live peer's state."""
        if self.synced:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._sync_waiters.append(waiter)
        return waiter

    def _have_joined(self):
        """A seed answered (or none is configured, or none answered in time): ask
        every live peer for its state, telling it about us first."""
        self._joined = True
        self._cancel_sync_timer()
        self._sync_timer = self.clock.callLater(self._timeouts[1], self._sync_timed_out)
        for member in self.live_peers():
            self._request_state(member)
        self._check_synced()

    def _request_state(self, member):
        if self.synced or member.name in self._syncing:
            return
        self._syncing.add(member.name)
        # introduced first, the peer holds us as alive before it answers, so its
        # later interest changes come to us too
        self._send_all(self.membership.introduce(self.clock.seconds(), member.address))
        self.send(member.address, {**self._full_state(), "type": SYNC})

    def _on_sync(self, address, message):
        """A joining peer sends its state and asks for ours."""
        self._on_state(address, message)
        self.send(address, {**self._full_state(), "synced": True})

    def _state_from(self, name):
        if name in self._syncing:
            self._syncing.discard(name)
            self._check_synced()

    def _check_synced(self):
        if self.synced or not self._joined or self._syncing:
            return
        self.synced = True
        self._cancel_sync_timer()
        self.log.info("Cluster node {name} has the state of {count} peers, after {seconds:.3f} s",
                      name=self.node_name, count=len(self.live_peers()),
                      seconds=self.clock.seconds() - self._started_at)
        waiters, self._sync_waiters = self._sync_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _join_timed_out(self):
        self._sync_timer = None
        self.log.warn("No cluster seed answered within {timeout} s ({seeds}); going on with"
                      " the members known so far", timeout=self._timeouts[0],
                      seeds=", ".join(self._seeds))
        self._have_joined()

    def _sync_timed_out(self):
        self._sync_timer = None
        self.log.warn("Cluster peers {peers} did not send their state within {timeout} s;"
                      " reporting ready without it", peers=", ".join(sorted(self._syncing)),
                      timeout=self._timeouts[1])
        self._syncing.clear()
        self._check_synced()

    def _cancel_sync_timer(self):
        timer, self._sync_timer = self._sync_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    # -- DNS discovery ----------------------------------------------------------

    def _discover(self):
        """Resolve ``DNS_NAME`` (in the resolver's threads, never on the reactor) and join
        every address that is not a live member yet, on our cluster port."""
        port = self.links.address.rpartition(":")[2]
        found = []
        done = defer.Deferred()

        @implementer(IResolutionReceiver)
        class Receiver:
            def resolutionBegan(self, resolution):
                pass

            def addressResolved(self, address):
                found.append(address.host)

            def resolutionComplete(self):
                done.callback(found)

        self.clock.nameResolver.resolveHostName(Receiver(), self._dns_name)
        done.addCallback(lambda hosts: self._join_discovered(hosts, port) or hosts)
        done.addErrback(lambda failure: self.log.failure("DNS discovery", failure))
        return done

    def _join_discovered(self, hosts, port):
        known = {member.address for member in self.live_peers()}
        seeds = [f"{host}:{port}" for host in dict.fromkeys(hosts)]
        seeds = [seed for seed in seeds if seed not in known and seed != self.links.address]
        if seeds:
            self._send_all(self.membership.join(self.clock.seconds(), seeds))

    # -- membership -----------------------------------------------------------

    def _tick(self):
        self._send_all(self.membership.tick(self.clock.seconds()))

    def _link_down(self, address):
        if self.membership is not None:
            self._send_all(self.membership.link_down(self.clock.seconds(), address))

    def _member_changed(self, member):
        if member.state in (DEAD, LEFT):
            for part in self.replicated:
                part.member_gone(member)
            self.links.forget(member.address)
            self.log.info("Cluster member {name} is {state}", name=member.name,
                          state=member.state)
            self._state_from(member.name)
        elif member.state == ALIVE and member.name != self.node_name:
            if self._joined and not self.synced:
                self._request_state(member)
            else:
                self.send(member.address, self._full_state())

    def member(self, name):
        return self.membership.member(name) if self.membership is not None else None

    def members(self):
        return self.membership.members() if self.membership is not None else []

    def peers(self):
        """Members other than this node that are alive (not suspect)."""
        return [member for member in self.membership.alive() if member.state == ALIVE]

    def live_peers(self):
        """Members other than this node that are alive or suspect."""
        return self.membership.alive() if self.membership is not None else []

    def describe(self):
        """What ``GET /v3/cluster`` shows: this node and every member as it sees them."""
        now = self.clock.seconds()
        members = []
        for member in self.members():
            last_seen = self._last_seen.get(member.address)
            members.append({
                "name": member.name, "address": member.address, "state": member.state,
                "incarnation": member.incarnation, "boot": member.boot,
                "self": member.name == self.node_name,
                "last_seen_seconds_ago": None if last_seen is None else round(now - last_seen, 3),
                "link_up": self.links.is_up(member.address) if self.links else False,
            })
        view = {"node": self.node_name, "synced": self.synced, "members": members}
        for part in self.replicated:
            describe = getattr(part, "describe", None)
            if describe is not None and self.membership is not None:
                view[part.key] = describe()
        view["messages"] = dict(self._counts)
        return view

    # -- messages -------------------------------------------------------------

    def handle(self, kind, handler):
        """Call ``handler(address, message)`` for every message of type *kind*."""
        self._handlers[kind] = handler

    def send(self, address, message):
        self._counts["sent"] += 1
        self.links.send(address, message)

    def send_many(self, addresses, message):
        """Send one message to several members, encoded once."""
        self._counts["sent"] += len(addresses)
        self.links.send_many(addresses, message)

    def broadcast(self, message):
        """Send *message* to every alive peer."""
        self.send_many([member.address for member in self.peers()], message)

    def _send_all(self, outgoing):
        for address, message in outgoing:
            self.send(address, message)

    def _received(self, address, message):
        self._last_seen[address] = self.clock.seconds()
        self._counts["received"] += 1
        kind = message.get("type")
        if kind in SWIM_TYPES:
            self._send_all(self.membership.receive(self.clock.seconds(), address, message))
            if kind == "sync" and not self._joined:
                self._have_joined()  # a seed answered our join with its members
            return
        handler = self._handlers.get(kind)
        if handler is None:
            self.log.warn("Unknown cluster message {kind!r} from {address}", kind=kind,
                          address=address)
            return
        try:
            handler(address, message)
        except _BAD_MESSAGE as error:
            self.log.warn("Bad cluster message {kind!r} from {address}: {error}", kind=kind,
                          address=address, error=repr(error))

    # -- full state and anti-entropy --------------------------------------------------

    def _full_state(self):
        return {"type": STATE, **{part.key: part.full_state() for part in self.replicated}}

    def digest(self):
        """A summary of every replicated structure, for push-pull anti-entropy."""
        return {part.key: part.digest() for part in self.replicated}

    def what_differs(self, digest):
        """The state a replica with *digest* lacks: push-pull's second half."""
        state = {"type": STATE}
        for part in self.replicated:
            missing = part.missing(digest.get(part.key))
            if missing is not None:
                state[part.key] = missing
        return state

    def _anti_entropy(self):
        """Push-pull with one random peer: digest first, then only what differs."""
        peers = self.peers()
        if peers:
            peer = self._rng.choice(peers)
            self.send(peer.address, {"type": DIGEST, **self.digest()})

    def _on_digest(self, address, message):
        state = self.what_differs(message)
        state["digest"] = self.digest()  # so the asker can send back what we lack
        self.send(address, state)

    def _on_state(self, address, message):
        for part in self.replicated:
            if part.key in message:
                part.merge(message[part.key], address)
        if "digest" in message:
            reply = self.what_differs(message["digest"])
            if len(reply) > 1:
                self.send(address, reply)
        if message.get("synced"):
            self._state_from(address)
