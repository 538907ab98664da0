"""One node's part in the cluster: links, SWIM membership, replicated state, event routing.

- Membership messages go straight to the sans-IO SWIM core; its outputs go out
  on the links. A dead or departed member's partitions are dropped.
- Interest: each node publishes the set of event types it has subscribers for
  (an owner-partitioned set), as a delta at once and by digest anti-entropy.
  A published event crosses to a node only if that node has interest in its
  type, and is matched there; so each subscriber gets it exactly once.
- The session blacklist (max-register map) and the API definitions (LWW map)
  are replicated as deltas at once and as full state by anti-entropy; a
  blacklist entry arriving from a peer kills matching local connections.
"""
import base64
import hashlib
import itertools
import json
import random

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IResolutionReceiver
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from rig.cluster.links import ClusterLinks
from rig.cluster.membership import Membership, SwimConfig, make_boot
from rig.cluster.partitioned import PartitionedSets
from rig.events import EventError, parse_structured

SWIM_TYPES = frozenset(("ping", "ack", "ping-req", "nack", "join", "sync", "gossip"))


class ClusterNode(Service):
    log = Logger()

    def __init__(self, reactor, hub, store, *, cookie, listen, node_host, seeds=(),
                 dns_name=None, tls_ca=None, correlations=None, swim_config=None,
                 tick_interval=0.1,
                 interest_interval=0.5, anti_entropy_interval=5.0, call_timeout=5.0,
                 rng=None):
        self._reactor = reactor
        self.hub = hub
        self.store = store
        self.correlations = correlations
        self._call_timeout = call_timeout
        self._calls = {}
        self._call_ids = itertools.count(1)
        self._last_seen = {}
        self._counts = {"sent": 0, "received": 0}
        self._cookie = cookie
        self._listen = listen
        self._node_host = node_host
        self._seeds = list(seeds)
        self._dns_name = dns_name
        self._tls_ca = tls_ca
        self._tls_trust = None
        if tls_ca:  # read once, at build time, not on the reactor per connection
            from twisted.internet.ssl import Certificate

            with open(tls_ca, "rb") as ca_file:
                self._tls_trust = Certificate.loadPEM(ca_file.read())
        self._swim_config = swim_config or SwimConfig()
        self._rng = rng or random.Random()
        self._intervals = (tick_interval, interest_interval, anti_entropy_interval)
        self._loops = []
        self._merging = False
        self.links = None
        self.membership = None
        self.interest = None

    @property
    def node_name(self):
        return self.membership.name if self.membership is not None else None

    # -- lifecycle -----------------------------------------------------------

    def startService(self):
        super().startService()
        self.links = ClusterLinks(
            self._reactor, node_name=self._advertised() or "rig", cookie=self._cookie,
            listen=self._listen, advertise=self._advertised(),
            on_message=self._received, on_link_down=self._link_down,
            client_endpoint=self._tls_endpoint if self._tls_ca else None,
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
                             HostnameEndpoint(self._reactor, host, int(port)))

    def _advertised(self):
        """``NODE_HOST:port`` when the listener names its port; else the bound address."""
        parts = self._listen.split(":")
        if len(parts) > 1 and parts[1].isdigit() and parts[1] != "0":
            return f"{self._node_host}:{parts[1]}"
        return None

    def _listening(self, port):
        address = self.links.address
        self.links.node_name = address
        self.membership = Membership(address, address, make_boot(self._reactor.seconds()),
                                     config=self._swim_config, rng=self._rng,
                                     now=self._reactor.seconds())
        self.membership.on_change.append(self._member_changed)
        # tokens and correlation ids now name this cluster member and its boot
        for codec in self._codecs():
            codec.node = address
            codec.boot_id = token_boot(self.membership.boot)
        self.hub.remote = self
        if self.correlations is not None:
            self.correlations.remote = self
        self.interest = PartitionedSets(address)
        self.sessions = PartitionedSets(address)
        self.hub.forwarders.append(self._forward)
        self.hub.auth.blacklist.on_add(self._blacklisted)
        self.store.on_change.append(self._api_changed)
        self._send_all(self.membership.join(self._reactor.seconds(), self._seeds))
        tick, interest, anti_entropy = self._intervals
        loops = [(self._tick, tick), (self._refresh_interest, interest),
                 (self._anti_entropy, anti_entropy)]
        if self._dns_name:
            loops.append((self._discover, 5.0))
        for function, interval in loops:
            loop = LoopingCall(function)
            loop.clock = self._reactor
            loop.start(interval, now=False).addErrback(
                lambda failure: self.log.failure("cluster loop died", failure))
            self._loops.append(loop)
        self.log.info("Cluster node {name} listening", name=address)

    def stopService(self):
        super().stopService()
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []
        if self._forward in self.hub.forwarders:
            self.hub.forwarders.remove(self._forward)
        if self.membership is not None:
            self._send_all(self.membership.leave(self._reactor.seconds()))
        if self.links is None:
            return None
        # give the leave a moment to go out, then close the links
        return defer.Deferred.fromCoroutine(self._close_links())

    async def _close_links(self):
        from twisted.internet.task import deferLater

        await deferLater(self._reactor, 0.05, lambda: None)
        await self.links.stop()

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

        self._reactor.nameResolver.resolveHostName(Receiver(), self._dns_name)
        done.addCallback(lambda hosts: self._join_discovered(hosts, port) or hosts)
        done.addErrback(lambda failure: self.log.failure("DNS discovery", failure))
        return done

    def _join_discovered(self, hosts, port):
        known = {member.address for member in self.membership.members()
                 if member.state in ("alive", "suspect")}
        seeds = [f"{host}:{port}" for host in dict.fromkeys(hosts)]
        seeds = [seed for seed in seeds if seed not in known]
        if seeds:
            self._send_all(self.membership.join(self._reactor.seconds(), seeds))

    # -- membership -----------------------------------------------------------

    def _tick(self):
        self._send_all(self.membership.tick(self._reactor.seconds()))

    def _link_down(self, address):
        if self.membership is not None:
            self._send_all(self.membership.link_down(self._reactor.seconds(), address))

    def _member_changed(self, member):
        if member.state in ("dead", "left"):
            self.interest.drop(member.name)
            self.sessions.drop(member.name)
            self.links.forget(member.address)
            self.log.info("Cluster member {name} is {state}", name=member.name,
                          state=member.state)
        elif member.state == "alive" and member.name != self.node_name:
            self._send(member.address, self._full_state())

    def _peers(self):
        return [member for member in self.membership.alive() if member.state == "alive"]

    def members(self):
        return self.membership.members() if self.membership is not None else []

    def describe(self):
        """What ``GET /v3/cluster`` shows: this node and every member as it sees them."""
        now = self._reactor.seconds()
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
        return {
            "node": self.node_name,
            "members": members,
            "interest": {owner: sorted(types)
                         for owner, (_, types) in self.interest.snapshot().items()},
            "sessions": {owner: len(sessions)
                         for owner, (_, sessions) in self.sessions.snapshot().items()},
            "messages": dict(self._counts),
        }

    # -- messages -------------------------------------------------------------

    def _send_all(self, outgoing):
        for address, message in outgoing:
            self._send(address, message)

    def _send(self, address, message):
        self._counts["sent"] += 1
        self.links.send(address, message)

    def _broadcast(self, message):
        for member in self._peers():
            self._send(member.address, message)

    def _received(self, address, message):
        self._last_seen[address] = self._reactor.seconds()
        self._counts["received"] += 1
        kind = message.get("type")
        if kind in SWIM_TYPES:
            self._send_all(self.membership.receive(self._reactor.seconds(), address, message))
            return
        handler = self._handlers.get(kind)
        if handler is None:
            self.log.warn("Unknown cluster message {kind!r} from {address}", kind=kind,
                          address=address)
            return
        try:
            handler(self, address, message)
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            self.log.warn("Bad cluster message {kind!r} from {address}: {error}", kind=kind,
                          address=address, error=repr(error))

    # -- events ---------------------------------------------------------------

    def _forward(self, event):
        """Send a locally published event once to each other node with interest in its type."""
        if self.interest is None:
            return
        owners = [
            owner for owner in self.interest.owners_with(event.type) if owner != self.node_name
        ]
        if not owners:
            return
        message = {"type": "rig.event", "event": event.json.decode("utf-8")}
        for owner in owners:
            member = self.membership.member(owner)
            if member is not None and member.state in ("alive", "suspect"):
                self._send(member.address, message)

    def _on_event(self, address, message):
        try:
            event = parse_structured(message["event"].encode("utf-8"))
        except EventError as error:
            self.log.warn("Dropped a bad event from {address}: {error}", address=address,
                          error=str(error))
            return
        self.hub.stats.received["cluster"] += 1
        self.hub.publish_local(event)

    # -- calls to the node that owns a connection or a waiting request ---------------

    def _codecs(self):
        codecs = [self.hub.codec]
        if self.correlations is not None:
            codecs.append(self.correlations.codec)
        return codecs

    def owner_address(self, ref):
        """The address of the live member *ref* (a token's node and boot) names, or None."""
        member = self.membership.member(ref.node) if self.membership is not None else None
        if member is None or member.state not in ("alive", "suspect"):
            return None
        if token_boot(member.boot) != ref.boot_id or member.name == self.node_name:
            return None  # a restarted node, or our own previous life: that connection is gone
        return member.address

    def call_owner(self, ref, op, args, timeout=None):
        """Ask the owning node to run *op*; a Deferred of its reply, or of None if it
        is gone or does not answer in time (callers answer like a closed connection)."""
        address = self.owner_address(ref)
        if address is None:
            return defer.succeed(None)
        call_id = next(self._call_ids)
        waiting = defer.Deferred(lambda _d: self._calls.pop(call_id, None))
        self._calls[call_id] = waiting
        waiting.addTimeout(timeout or self._call_timeout, self._reactor)
        waiting.addErrback(lambda _failure: self._calls.pop(call_id, None) and None)
        self._send(address, {"type": "rig.call", "id": call_id, "op": op, "args": args})
        return waiting

    def _on_call(self, address, message):
        op, args = message["op"], message["args"]
        if op == "poll":
            self._poll_for(address, message["id"], int(args["local_id"]), str(args["cursor"]))
            return
        if op == "put-subscriptions":
            from rig.connections.subscribe import apply_subscriptions

            status, text = apply_subscriptions(
                self.hub, int(args["local_id"]), args["subscriptions"],
                [str(bearer) for bearer in args["bearers"]])
            result = {"status": status, "text": text}
        elif op == "async-response" and self.correlations is not None:
            result = {"delivered": self.correlations.deliver_local(
                int(args["local_id"]), int(args["status"]),
                [(name.encode("latin-1"), value.encode("latin-1"))
                 for name, value in args["headers"]],
                base64.b64decode(args["body"]))}
        else:
            raise ValueError(f"unknown call {op!r}")
        self._send(address, {"type": "rig.reply", "id": message["id"], "result": result})

    def _poll_for(self, address, call_id, local_id, cursor):
        from rig.connections.longpoll import LongPollSession

        session = self.hub.connections.get(local_id)
        if not isinstance(session, LongPollSession):
            self._send(address, {"type": "rig.reply", "id": call_id, "result": {"gone": True}})
            return

        def answer(result):
            events, last_id = result
            self._send(address, {"type": "rig.reply", "id": call_id, "result": {
                "events": [event.decode("utf-8") for event in events], "last_id": last_id}})

        session.wait(cursor).addCallbacks(
            answer, lambda failure: failure.trap(defer.CancelledError))

    def _on_reply(self, address, message):
        waiting = self._calls.pop(int(message["id"]), None)
        if waiting is not None:
            waiting.callback(message["result"])

    # -- interest ---------------------------------------------------------------

    def _refresh_interest(self):
        """Publish what changed in this node's partitions: event types with subscribers,
        and sessions with live connections."""
        delta = self.interest.set_local(self.hub.interest_types())
        if delta is not None:
            self._broadcast({"type": "rig.interest", "partitions": delta})
        delta = self.sessions.set_local(self.hub.sessions)
        if delta is not None:
            self._broadcast({"type": "rig.sessions", "partitions": delta})

    def _on_interest(self, address, message):
        self.interest.merge(_partitions(message["partitions"]))

    def _on_sessions(self, address, message):
        self.sessions.merge(_partitions(message["partitions"]))

    # -- blacklist and API definitions -------------------------------------------

    def _blacklisted(self, session):
        if self._merging:
            return
        expires_at = self.hub.auth.blacklist.expires_at(session)
        if expires_at is not None:
            self._broadcast({"type": "rig.blacklist", "entries": {session: expires_at}})

    def _on_blacklist(self, address, message):
        entries = {str(session): float(expiry) for session, expiry in message["entries"].items()}
        self._merging = True
        try:
            self.hub.auth.blacklist.merge(entries)
        finally:
            self._merging = False

    def _api_changed(self, api):
        """Only local writes reach here: ``ApiStore.merge`` does not call its listeners."""
        self._broadcast({"type": "rig.apis", "apis": {api["id"]: api}})

    def _on_apis(self, address, message):
        self.store.merge({str(key): dict(api) for key, api in message["apis"].items()})

    # -- anti-entropy ---------------------------------------------------------------

    def _full_state(self):
        return {
            "type": "rig.state",
            "interest": self.interest.newer_than({}),
            "sessions": self.sessions.newer_than({}),
            "blacklist": self.hub.auth.blacklist.snapshot(),
            "apis": self.store.snapshot(),
        }

    def _digest(self):
        """Versions per partition owner, and a hash of each replicated map."""
        return {
            "interest": self.interest.digest(),
            "sessions": self.sessions.digest(),
            "blacklist": _hash(self.hub.auth.blacklist.snapshot()),
            "apis": _hash(self.store.snapshot()),
        }

    def _what_differs(self, digest):
        """The state a replica with *digest* lacks: push-pull's second half."""
        state = {
            "type": "rig.state",
            "interest": self.interest.newer_than(_versions(digest.get("interest", {}))),
            "sessions": self.sessions.newer_than(_versions(digest.get("sessions", {}))),
        }
        blacklist = self.hub.auth.blacklist.snapshot()
        if digest.get("blacklist") != _hash(blacklist):
            state["blacklist"] = blacklist
        apis = self.store.snapshot()
        if digest.get("apis") != _hash(apis):
            state["apis"] = apis
        return state

    def _anti_entropy(self):
        """Push-pull with one random peer: digest first, then only what differs."""
        peers = self._peers()
        if peers:
            peer = self._rng.choice(peers)
            self._send(peer.address, {"type": "rig.digest", **self._digest()})

    def _on_digest(self, address, message):
        state = self._what_differs(message)
        state["digest"] = self._digest()  # so the asker can send back what we lack
        self._send(address, state)

    def _on_state(self, address, message):
        self.interest.merge(_partitions(message.get("interest", {})))
        self.sessions.merge(_partitions(message.get("sessions", {})))
        if "blacklist" in message:
            self._on_blacklist(address, {"entries": message["blacklist"]})
        if "apis" in message:
            self._on_apis(address, {"apis": message["apis"]})
        if "digest" in message:
            reply = self._what_differs(message["digest"])
            if reply["interest"] or reply["sessions"] or "blacklist" in reply or "apis" in reply:
                self._send(address, reply)

    _handlers = {
        "rig.event": _on_event,
        "rig.interest": _on_interest,
        "rig.sessions": _on_sessions,
        "rig.blacklist": _on_blacklist,
        "rig.apis": _on_apis,
        "rig.digest": _on_digest,
        "rig.state": _on_state,
        "rig.call": _on_call,
        "rig.reply": _on_reply,
    }


def token_boot(boot):
    """The 8 bytes of a member's boot id that its tokens carry."""
    return hashlib.sha256(boot.encode("utf-8")).digest()[:8]


def _hash(mapping):
    return hashlib.sha256(json.dumps(mapping, sort_keys=True).encode()).hexdigest()


def _versions(raw):
    return {str(owner): int(version) for owner, version in raw.items()}


def _partitions(raw):
    return {str(owner): (int(version), [str(m) for m in members])
            for owner, (version, members) in raw.items()}
