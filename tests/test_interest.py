"""Interest pushed and acknowledged before a confirmation (issue 12), on a Clock."""
import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from rig.auth.blacklist import Blacklist
from rig.cluster.calls import OwnerCalls
from rig.cluster.delegate import IClusterPart, IReplicated
from rig.cluster.interest import ACK, InterestReplica
from rig.cluster.membership import ALIVE, DEAD, SUSPECT, Member
from rig.cluster.replicas import ApiReplica, BlacklistReplica, SessionsReplica
from rig.cluster.routing import EventRouter
from rig.hub import Hub
from rig.proxy.store import ApiStore


class FakeCluster:
    """What a part sees of the node: members, sends, handlers, readiness."""

    def __init__(self, clock, name="me:1", peers=()):
        self.clock = clock
        self.node_name = name
        self.synced = True
        self.sent = []  # (address, message)
        self.handlers = {}
        self._members = {member.name: member for member in peers}
        self._waiters = []

    def add(self, name, state=ALIVE, boot="b1"):
        self._members[name] = Member(name, name, 0, state, boot)

    def member(self, name):
        return self._members.get(name)

    def live_peers(self):
        return [m for m in self._members.values() if m.state in (ALIVE, SUSPECT)]

    def handle(self, kind, handler):
        self.handlers[kind] = handler

    def send(self, address, message):
        self.sent.append((address, message))

    def send_many(self, addresses, message):
        for address in addresses:
            self.send(address, message)

    def broadcast(self, message):
        self.send_many([m.address for m in self.live_peers() if m.state == ALIVE], message)

    def when_synced(self):
        if self.synced:
            return defer.succeed(None)
        waiter = defer.Deferred()
        self._waiters.append(waiter)
        return waiter

    def sync(self):
        self.synced = True
        for waiter in self._waiters:
            waiter.callback(None)

    def deliver(self, address, message):
        self.handlers[message["type"]](address, message)

    def take(self, kind=None):
        sent = [(a, m) for a, m in self.sent if kind is None or m["type"] == kind]
        self.sent = [(a, m) for a, m in self.sent if not (kind is None or m["type"] == kind)]
        return sent


def replica(peers=("b:1", "c:1"), timeout=1.0, synced=True):
    clock = Clock()
    hub = Hub(clock)
    cluster = FakeCluster(clock)
    cluster.synced = synced
    for name in peers:
        cluster.add(name)
    interest = InterestReplica(hub, timeout=timeout)
    interest.attach(cluster)
    return clock, cluster, interest


def ack(cluster, interest, peer, version=None):
    version = interest.sets.local_version() if version is None else version
    cluster.deliver(peer, {"type": ACK, "version": version})


def fired(deferred):
    outcome = []
    deferred.addBoth(outcome.append)
    return bool(outcome)


def test_every_part_declares_its_interface():
    clock = Clock()
    hub = Hub(clock)
    interest = InterestReplica(hub)
    for part in (interest, SessionsReplica(hub), BlacklistReplica(Blacklist(clock)),
                 ApiReplica(ApiStore(clock, "n"))):
        assert verifyObject(IReplicated, part)
    for part in (EventRouter(hub, interest), OwnerCalls(clock)):
        assert verifyObject(IClusterPart, part)


def test_a_new_type_is_pushed_to_every_live_peer_and_waits_for_all_acks():
    _clock, cluster, interest = replica(peers=("b:1", "c:1"))
    cluster.add("d:1", state=SUSPECT)  # maybe alive: it is asked too
    waiting = interest.want({"greeting"})
    pushed = cluster.take("rig.interest")
    assert sorted(address for address, _ in pushed) == ["b:1", "c:1", "d:1"]
    assert pushed[0][1]["partitions"] == {"me:1": [1, ["greeting"]]}
    ack(cluster, interest, "b:1")
    ack(cluster, interest, "c:1")
    assert not fired(waiting)
    ack(cluster, interest, "d:1")
    assert fired(waiting)


def test_a_type_every_peer_acknowledged_confirms_at_once_and_sends_nothing():
    _clock, cluster, interest = replica()
    first = interest.want({"greeting"})
    for peer in ("b:1", "c:1"):
        ack(cluster, interest, peer)
    assert fired(first)
    cluster.take()
    assert interest.want({"greeting"}) is None
    assert interest.want(set()) is None
    assert cluster.take() == []


def test_an_old_ack_does_not_confirm_a_newer_type():
    _clock, cluster, interest = replica(peers=("b:1",))
    interest.want({"one"})
    ack(cluster, interest, "b:1")
    waiting = interest.want({"two"})
    ack(cluster, interest, "b:1", version=1)  # the ack of the first push, late
    assert not fired(waiting)
    ack(cluster, interest, "b:1", version=2)
    assert fired(waiting)


def test_a_silent_peer_delays_the_confirmation_only_until_the_timeout(log_events):
    clock, cluster, interest = replica(timeout=1.0)
    waiting = interest.want({"greeting"})
    ack(cluster, interest, "b:1")
    clock.advance(0.99)
    assert not fired(waiting)
    clock.advance(0.01)
    assert fired(waiting)
    warned = [e for e in log_events if "did not acknowledge" in e.get("log_format", "")]
    assert len(warned) == 1 and warned[0]["peers"] == "c:1"
    assert len(clock.getDelayedCalls()) == 1  # only the refresh loop: no timer left over


def test_a_peer_that_dies_is_not_waited_for():
    _clock, cluster, interest = replica()
    waiting = interest.want({"greeting"})
    ack(cluster, interest, "b:1")
    cluster.add("c:1", state=DEAD)
    interest.member_gone(cluster.member("c:1"))
    assert fired(waiting)


def test_a_restarted_peer_must_acknowledge_again():
    _clock, cluster, interest = replica(peers=("b:1",))
    interest.want({"greeting"})
    ack(cluster, interest, "b:1")
    cluster.take()
    cluster.add("b:1", boot="b2")  # same name, new boot: it knows nothing of us
    waiting = interest.want({"greeting"})
    assert waiting is not None
    (pushed,) = cluster.take("rig.interest")  # the peer that missed our change gets it
    assert pushed[0] == "b:1"
    ack(cluster, interest, "b:1")
    assert fired(waiting)


def test_a_joining_peer_that_never_heard_our_partition_gets_it_when_needed():
    _clock, cluster, interest = replica(peers=("b:1",))
    interest.want({"greeting"})
    ack(cluster, interest, "b:1")
    cluster.take()
    cluster.add("c:1")
    waiting = interest.want({"greeting"})
    assert [address for address, _ in cluster.take("rig.interest")] == ["c:1"]
    ack(cluster, interest, "c:1")
    assert fired(waiting)


def test_types_waiting_for_their_confirmation_stay_in_the_partition():
    clock, cluster, interest = replica()
    interest.want({"greeting"})
    clock.advance(0.5)  # a refresh: the index has no subscriber for it yet
    assert interest.sets.local_members() == {"greeting"}
    assert cluster.take("rig.interest")[0][1]["partitions"]["me:1"][0] == 1


def test_removals_are_pushed_by_the_refresh_without_waiting():
    clock, cluster, interest = replica()
    waiting = interest.want({"greeting"})
    clock.advance(1.0)  # timed out: confirmed, and no subscriber ever came
    assert fired(waiting)
    cluster.take()
    clock.advance(0.5)
    (pushed, *_rest) = cluster.take("rig.interest")
    assert pushed[1]["partitions"] == {"me:1": [2, []]}
    assert interest.want({"greeting"}) is not None  # re-added: a new version to acknowledge


def test_a_node_not_yet_synced_confirms_only_after_it_is():
    _clock, cluster, interest = replica(synced=False)
    waiting = interest.want({"greeting"})
    assert cluster.take("rig.interest") == []
    cluster.sync()
    assert len(cluster.take("rig.interest")) == 2
    ack(cluster, interest, "b:1")
    ack(cluster, interest, "c:1")
    assert fired(waiting)


def test_a_peers_partition_is_acknowledged_with_the_version_held():
    _clock, cluster, interest = replica()
    cluster.deliver("b:1", {"type": "rig.interest", "partitions": {"b:1": [3, ["news"]]}})
    assert cluster.take(ACK) == [("b:1", {"type": ACK, "version": 3})]
    interest.merge({"b:1": [2, ["old"]], "c:1": [1, []]}, "b:1")  # full state, stale for b
    assert cluster.take(ACK) == [("b:1", {"type": ACK, "version": 3})]
    interest.merge({"c:1": [1, []]}, "b:1")  # relayed state without b's own partition
    assert cluster.take(ACK) == []
    assert interest.owners_with("news") == ["b:1"]


@pytest.mark.parametrize("stopped", [True, False])
def test_stopping_releases_every_waiting_confirmation(stopped):
    _clock, _cluster, interest = replica()
    waiting = interest.want({"greeting"})
    if stopped:
        interest.detach()
        assert fired(waiting)
    else:
        assert not fired(waiting)


def test_a_burst_waiting_for_the_same_version_shares_one_wait_and_one_timer():
    clock, cluster, interest = replica()
    burst = [interest.want({"greeting"}) for _ in range(50)]
    assert len(cluster.take("rig.interest")) == 2  # pushed once to each peer
    assert len(clock.getDelayedCalls()) == 2  # the refresh loop and one timeout
    ack(cluster, interest, "b:1")
    ack(cluster, interest, "c:1")
    assert all(fired(confirmed) for confirmed in burst)
