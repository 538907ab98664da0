"""SWIM/Lifeguard membership core, driven over a simulated in-memory network."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rig.cluster.membership import (
    ALIVE,
    DEAD,
    LEFT,
    SUSPECT,
    Member,
    Membership,
    SwimConfig,
    make_boot,
)
from rig.testing import STEP, MemoryNetwork

Net = MemoryNetwork


def formed(names, **kw):
    net = Net(names, **kw)
    net.join_all(names[0])
    net.run_until(net.converged, 10)
    return net


# -- unit-level checks ---------------------------------------------------------


def test_initial_views_and_api():
    node = Membership("a", "a:1", "b1", rng=random.Random(1))
    assert node.members() == [Member("a", "a:1", 0, ALIVE, "b1")]
    assert node.alive() == []
    assert node.tick(0.0) == []  # nobody to probe
    msgs = node.join(0.0, ["s:1", "a:1", "s:1"])
    assert [addr for addr, _ in msgs] == ["s:1"]
    assert msgs[0][1]["type"] == "join"
    assert msgs[0][1]["from"]["name"] == "a"
    json.dumps(msgs)


def test_malformed_input_is_ignored():
    node = Membership("a", "a", "b1", rng=random.Random(1))
    assert node.receive(0.0, "x", "garbage") == []
    assert node.receive(0.0, "x", {"type": "ping-req"}) == []
    node.receive(0.0, "x", {"type": "gossip", "gossip": [{"name": 3}, None, {"name": "z"}]})
    assert [m.name for m in node.members()] == ["a"]


def test_make_boot_sorts_by_start_time():
    rng = random.Random(3)
    assert make_boot(1000.0, rng) < make_boot(1000.001, rng) < make_boot(99999.0, rng)


def test_suspicion_timeout_decays_with_confirmations():
    node = Membership("a", "a", "b1", rng=random.Random(1))
    for name in "bcdef":
        node.receive(
            0.0,
            name,
            {
                "type": "gossip",
                "gossip": [
                    {"name": name, "address": name, "boot": "b1", "incarnation": 0, "state": ALIVE}
                ],
            },
        )
    susp = {"name": "b", "address": "b", "boot": "b1", "incarnation": 0, "state": SUSPECT}
    node.receive(0.0, "c", {"type": "gossip", "gossip": [dict(susp, by="c")]})
    n = 6
    min_t = 4.0 * max(1.0, math.log10(n)) * 1.0
    assert node.suspicion_timeout("b") == pytest.approx(6 * min_t)
    node.receive(0.0, "c", {"type": "gossip", "gossip": [dict(susp, by="c")]})  # originator
    assert node.suspicion_timeout("b") == pytest.approx(6 * min_t)
    node.receive(0.0, "d", {"type": "gossip", "gossip": [dict(susp, by="d")]})
    mid = node.suspicion_timeout("b")
    assert min_t < mid < 6 * min_t
    node.receive(0.0, "e", {"type": "gossip", "gossip": [dict(susp, by="e")]})
    assert node.suspicion_timeout("b") == pytest.approx(min_t)
    node.tick(min_t - 0.01)
    assert node.member("b").state == SUSPECT
    node.tick(min_t)
    assert node.member("b").state == DEAD


def test_small_cluster_uses_minimum_timeout():
    node = Membership("a", "a", "b1", rng=random.Random(1))
    for name in "bc":
        node.receive(
            0.0,
            name,
            {
                "type": "gossip",
                "gossip": [
                    {"name": name, "address": name, "boot": "b1", "incarnation": 0, "state": ALIVE}
                ],
            },
        )
    node.receive(
        0.0,
        "c",
        {
            "type": "gossip",
            "gossip": [
                {"name": "b", "address": "b", "boot": "b1", "incarnation": 0, "state": SUSPECT}
            ],
        },
    )
    assert node.suspicion_timeout("b") == pytest.approx(4.0)


def test_precedence_rules():
    node = Membership("a", "a", "b1", rng=random.Random(1))

    def hear(**kw):
        upd = {"name": "b", "address": "b", "boot": "b1", "incarnation": 0, "state": ALIVE}
        upd.update(kw)
        node.receive(0.0, "x", {"type": "gossip", "gossip": [upd]})
        return node.member("b")

    assert hear(state=DEAD) is None  # only alive updates introduce members
    assert hear(state=SUSPECT) is None
    assert hear().state == ALIVE
    assert hear(state=SUSPECT).state == SUSPECT
    assert hear(incarnation=0).state == SUSPECT  # alive(i) does not beat suspect(i)
    assert hear(incarnation=1).state == ALIVE
    assert hear(state=SUSPECT, incarnation=0).state == ALIVE  # stale suspicion
    assert hear(state=DEAD, incarnation=1).state == DEAD
    assert hear(state=ALIVE, incarnation=1).state == DEAD
    assert hear(state=ALIVE, incarnation=2).state == ALIVE
    assert hear(state=LEFT, incarnation=2).state == LEFT
    assert hear(state=DEAD, incarnation=2).state == LEFT  # left stays left
    assert hear(boot="b0", incarnation=9).state == LEFT  # older boot ignored
    assert hear(boot="b2", incarnation=0).state == ALIVE  # newer boot wins
    assert node.member("b").boot == "b2"


def test_reclaimed_member_is_not_resurrected_by_stale_state():
    node = Membership("a", "a", "b1", config=SwimConfig(dead_reclaim=5.0), rng=random.Random(1))
    _peers(node, "b")
    stale = {"name": "b", "address": "b", "boot": "b1", "incarnation": 0, "state": DEAD}
    node.receive(0.0, "x", {"type": "gossip", "gossip": [stale]})
    assert node.member("b").state == DEAD
    node.tick(4.9)
    assert node.member("b") is not None
    node.tick(5.0)
    assert node.member("b") is None
    node.receive(6.0, "x", {"type": "sync", "members": [stale, dict(stale, state=SUSPECT)]})
    node.receive(6.0, "x", {"type": "gossip", "gossip": [dict(stale, state=SUSPECT)]})
    assert node.member("b") is None


def test_only_owner_bumps_incarnation_and_refutes():
    node = Membership("a", "a", "b1", rng=random.Random(1))
    node.receive(
        0.0,
        "x",
        {
            "type": "gossip",
            "gossip": [
                {"name": "a", "address": "a", "boot": "b1", "incarnation": 0, "state": SUSPECT}
            ],
        },
    )
    assert node.incarnation == 1
    assert node.member("a").state == ALIVE
    assert node.awareness == 1
    # stale or other-boot claims are ignored
    node.receive(
        0.0,
        "x",
        {
            "type": "gossip",
            "gossip": [
                {"name": "a", "address": "a", "boot": "b1", "incarnation": 0, "state": DEAD},
                {"name": "a", "address": "a", "boot": "b0", "incarnation": 7, "state": DEAD},
            ],
        },
    )
    assert node.incarnation == 1


def _peers(node, names, now=0.0):
    for name in names:
        node.receive(
            now,
            name,
            {
                "type": "gossip",
                "gossip": [
                    {"name": name, "address": name, "boot": "b1", "incarnation": 0, "state": ALIVE}
                ],
            },
        )


def _of(kind, out):
    return [(addr, m) for addr, m in out if m["type"] == kind]


def test_lifeguard_awareness_from_missing_nacks():
    node = Membership("a", "a", "b1", rng=random.Random(1))
    _peers(node, "bcd")
    [(target, ping)] = _of("ping", node.tick(0.0))
    assert ping["target"] == target
    assert _of("ping-req", node.tick(0.45)) == []
    reqs = _of("ping-req", node.tick(0.5))
    assert sorted(addr for addr, _ in reqs) == sorted(set("bcd") - {target})
    assert all(m["seq"] == ping["seq"] and m["timeout"] > 0 for _, m in reqs)
    # one of the two helpers answers with a nack, the other stays silent
    node.receive(0.7, reqs[0][0], {"type": "nack", "seq": ping["seq"]})
    out = node.tick(1.0)
    assert node.member(target).state == SUSPECT
    assert node.awareness == 1  # one expected nack missing
    # the next probe period and timeout are scaled by awareness + 1
    [(nxt, ping2)] = [(a, m) for a, m in out if m["type"] == "ping"]
    assert not [m for _, m in node.tick(1.95) if m["type"] == "ping-req"]
    assert [m for _, m in node.tick(2.0) if m["type"] == "ping-req"]
    node.receive(2.1, nxt, {"type": "ack", "seq": ping2["seq"]})
    assert node.awareness == 0
    # a successful probe does not start the next one before the (scaled) period ends
    assert not [m for _, m in node.tick(2.9) if m["type"] == "ping"]
    assert [m for _, m in node.tick(3.0) if m["type"] == "ping"]


def test_ping_req_helper_relays_ack_or_sends_nack():
    helper = Membership("h", "h", "b1", rng=random.Random(1))
    req = {
        "type": "ping-req",
        "seq": 42,
        "target": "t",
        "target_address": "t",
        "timeout": 0.4,
        "from": {"name": "o", "address": "o", "boot": "b1", "incarnation": 0, "state": ALIVE},
    }
    [(addr, ping)] = helper.receive(0.0, "o-ephemeral", req)
    assert addr == "t" and ping["type"] == "ping" and ping["target"] == "t"
    [(addr, ack)] = helper.receive(0.1, "t", {"type": "ack", "seq": ping["seq"]})
    assert addr == "o" and ack["type"] == "ack" and ack["seq"] == 42
    [(addr, ping)] = helper.receive(1.0, "o", dict(req, seq=43))
    assert [m for m in helper.tick(1.39) if m[1]["type"] == "nack"] == []
    nacks = [(a, m["seq"]) for a, m in helper.tick(1.4) if m["type"] == "nack"]
    assert nacks == [("o", 43)]


def test_pinging_a_suspect_carries_the_suspicion():
    node = Membership("a", "a", "b1", rng=random.Random(1))
    _peers(node, "b")
    node.receive(
        0.0,
        "c",
        {
            "type": "gossip",
            "gossip": [
                {"name": "b", "address": "b", "boot": "b1", "incarnation": 0, "state": SUSPECT}
            ],
        },
    )
    node.tick(0.0)
    node.tick(0.25)  # let the gossip queue drain on the gossip tick
    [(addr, ping)] = [(a, m) for a, m in node.tick(1.0) + node.tick(2.0) if m["type"] == "ping"]
    assert addr == "b"
    assert any(u["name"] == "b" and u["state"] == SUSPECT for u in ping["gossip"])


# -- simulated clusters -----------------------------------------------------------


@pytest.mark.parametrize("n", [3, 5])
def test_join_via_one_seed_converges(n):
    names = [f"n{i}" for i in range(n)]
    net = Net(names, seed=n)
    net.join_all(names[0])
    elapsed = net.run_until(net.converged, 10)
    assert elapsed < 3
    net.run(5)
    assert net.converged()
    assert not any(m.state != ALIVE for _, _, m in net.changes)
    for node in net.nodes.values():
        assert [m.name for m in node.members()] == sorted(names)
        assert node.incarnation == 0
        assert len(node.alive()) == n - 1


def test_killed_node_is_suspected_then_dead_everywhere():
    names = ["a", "b", "c", "d", "e"]
    net = formed(names, seed=11)
    net.run(3)
    net.killed.add("e")
    t0 = net.now
    cfg = net.config
    others = ["a", "b", "c", "d"]
    min_t = cfg.suspicion_min_multiplier * max(1, math.log10(5)) * cfg.probe_interval
    # every live node probes e within two shuffled rounds, then the suspicion runs out
    bound = 2 * len(others) * cfg.probe_interval + cfg.suspicion_max_multiplier * min_t
    net.run_until(lambda: net.all_see(["e"], DEAD, others), bound)
    suspected = [t for t, _, m in net.changes if m.name == "e" and m.state == SUSPECT]
    died = [t for t, _, m in net.changes if m.name == "e" and m.state == DEAD]
    assert suspected and died
    assert min(suspected) - t0 <= 2 * len(others) * cfg.probe_interval + 1
    assert min(died) - min(suspected) >= min_t - STEP
    # confirmations from the other probers shorten it well below the maximum
    assert max(died) - t0 < bound
    # nobody else was ever suspected
    assert {m.name for _, _, m in net.changes if m.state != ALIVE} == {"e"}


def test_one_lossy_link_causes_no_false_positive():
    names = ["a", "b", "c", "d", "e"]
    net = formed(names, seed=5)
    net.drop[("a", "b")] = net.drop[("b", "a")] = 1.0
    net.run(60)
    assert net.converged()
    assert [m for _, _, m in net.changes if m.state != ALIVE] == []
    assert all(node.incarnation == 0 for node in net.nodes.values())


def test_link_down_triggers_probe_not_death():
    net = formed(["a", "b", "c"], seed=2)
    msgs = net.nodes["a"].link_down(net.now, "b")
    assert [(addr, m["type"]) for addr, m in msgs] in ([("b", "ping")], [])
    net.send("a", msgs)
    net.run(10)
    assert net.converged()
    assert [m for _, _, m in net.changes if m.state != ALIVE] == []


def test_false_suspicion_is_refuted():
    names = ["a", "b", "c", "d"]
    net = formed(names, seed=7)
    c = net.nodes["c"].member("c")
    rumour = dict(
        name="c", address="c", boot=c.boot, incarnation=c.incarnation, state=SUSPECT, by="a"
    )
    net.send("a", [("b", {"type": "gossip", "gossip": [rumour]})])
    net.run_until(lambda: net.state("b", "c") == SUSPECT, 1)
    net.run_until(lambda: net.converged() and net.nodes["b"].member("c").incarnation == 1, 10)
    assert net.nodes["c"].incarnation == 1
    assert all(net.nodes[o].member("c").incarnation == 1 for o in names)
    assert not [m for _, _, m in net.changes if m.state == DEAD]


def test_graceful_leave_is_seen_quickly():
    names = ["a", "b", "c", "d", "e"]
    net = formed(names, seed=3)
    net.send("c", net.nodes["c"].leave(net.now))
    elapsed = net.run_until(lambda: net.all_see(["c"], LEFT, ["a", "b", "d", "e"]), 5)
    assert elapsed < 0.5  # a failure takes several seconds to detect
    assert net.nodes["c"].has_left
    assert net.nodes["c"].leave(net.now) == []
    net.run(10)
    assert net.all_see(["c"], LEFT, ["a", "b", "d", "e"])
    assert not [m for _, _, m in net.changes if m.state == DEAD]
    # left members are reclaimed too
    net.run(net.config.dead_reclaim)
    assert all(net.nodes[o].member("c") is None for o in ["a", "b", "d", "e"])


def test_restarted_node_supersedes_old_entry():
    names = ["a", "b", "c", "d"]
    net = formed(names, seed=9)
    net.nodes["d"].receive(
        net.now,
        "x",
        {
            "type": "gossip",
            "gossip": [
                {"name": "d", "address": "d", "boot": "b1", "incarnation": 0, "state": SUSPECT}
            ],
        },
    )  # give the old life a higher incarnation than the new one will have
    net.run_until(lambda: all(net.nodes[o].member("d").incarnation == 1 for o in names), 2)
    net.killed.add("d")
    net.run(0.5)
    net.killed.discard("d")
    new = net.add("d", "b2")
    net.send("d", new.join(net.now, ["a"]))
    net.run_until(
        lambda: all(net.nodes[o].member("d").boot == "b2" for o in names) and net.converged(),
        3,
    )
    assert all(net.nodes[o].member("d").incarnation == 0 for o in names)
    boots = [m.boot for _, obs, m in net.changes if m.name == "d" and obs != "d"]
    assert boots.count("b2") == 3  # every other node reported the new life once
    net.run(10)
    assert net.converged()
    assert not [m for _, _, m in net.changes if m.state in (SUSPECT, DEAD)]


@pytest.mark.parametrize("reclaim", [1000.0, 10.0])
def test_partition_then_heal(reclaim):
    """Both sides declare each other dead, then re-merge once the partition heals.

    Recovery is by reconnect: every push-pull interval a node sends ``join`` to one
    dead member or unreachable seed.  The receiver learns it is thought dead and
    refutes with a higher incarnation; nodes already forgotten (reclaimed) are
    simply re-learned from the join/sync.
    """
    cfg = SwimConfig(push_pull_interval=5.0, dead_reclaim=reclaim)
    names = ["a", "b", "c", "d", "e"]
    net = formed(names, seed=13, config=cfg)
    left, right = ["a", "b"], ["c", "d", "e"]
    for x in left:
        for y in right:
            net.blocked |= {(x, y), (y, x)}
    net.run_until(
        lambda: (
            all(net.state(o, n) in (DEAD, None) for o in left for n in right)
            and all(net.state(o, n) in (DEAD, None) for o in right for n in left)
        ),
        40,
    )
    net.run(15)
    gone = None if reclaim < 15 else DEAD
    assert all(net.state(o, n) == gone for o in left for n in right)
    assert all(net.state(o, n) == gone for o in right for n in left)
    net.blocked.clear()
    net.run_until(net.converged, 30)
    net.run(5)
    assert net.converged()


def test_dead_members_are_reclaimed():
    cfg = SwimConfig(dead_reclaim=10.0)
    net = formed(["a", "b", "c"], seed=4, config=cfg)
    net.killed.add("c")
    net.run_until(lambda: net.all_see(["c"], DEAD, ["a", "b"]), 20)
    net.run(cfg.dead_reclaim - 1)
    assert net.state("a", "c") == DEAD
    net.run(1.5)
    assert net.state("a", "c") is None and net.state("b", "c") is None
    assert [m.name for m in net.nodes["a"].members()] == ["a", "b"]


LINKS = [(x, y) for x in "abcd" for y in "abcd" if x != y]


@settings(derandomize=True, deadline=None, database=None, max_examples=25)
@given(
    drops=st.dictionaries(st.sampled_from(LINKS), st.floats(0.0, 0.2), max_size=12),
    seed=st.integers(0, 2**16),
)
def test_lossy_links_eventually_converge(drops, seed):
    cfg = SwimConfig(push_pull_interval=5.0)
    net = formed(list("abcd"), seed=seed, config=cfg)
    net.drop.update(drops)
    net.run(10)
    net.drop.clear()
    net.run_until(net.converged, 40)


def test_introduce_makes_the_receiver_hold_us_alive():
    a = Membership("a", "a", "b1", rng=random.Random(1))
    b = Membership("b", "b", "b1", rng=random.Random(2))
    [(address, message)] = a.introduce(0.0, "b")
    assert address == "b" and message["type"] == "gossip"
    b.receive(0.0, "a", json.loads(json.dumps(message)))
    assert b.member("a").state == ALIVE
    a.leave(1.0)
    assert a.introduce(1.0, "b") == []  # a node that left introduces itself to nobody
