"""The session blacklist: expiry on the reactor clock, max-register merges, purging."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from rig.auth.blacklist import Blacklist

NOW = 1_700_000_000


def make():
    clock = Clock()
    clock.advance(NOW)
    return clock, Blacklist(clock)


def listened(blacklist):
    calls = []
    blacklist.on_add(calls.append)
    return calls


def test_empty_blacklist():
    _, blacklist = make()
    assert "s" not in blacklist
    assert blacklist.expires_at("s") is None
    assert len(blacklist) == 0
    assert blacklist.snapshot() == {}


def test_add_contains_and_expires_at():
    clock, blacklist = make()
    blacklist.add("s1", NOW + 60)
    assert "s1" in blacklist
    assert "s2" not in blacklist
    assert blacklist.expires_at("s1") == NOW + 60
    clock.advance(59.9)
    assert "s1" in blacklist
    clock.advance(0.1)
    assert "s1" not in blacklist
    assert blacklist.expires_at("s1") is None


def test_add_with_an_expiry_in_the_past_is_not_live():
    _, blacklist = make()
    blacklist.add("old", NOW - 1)
    blacklist.add("now", NOW)
    assert "old" not in blacklist
    assert "now" not in blacklist
    assert len(blacklist) == 0


def test_re_adding_with_a_later_expiry_extends():
    clock, blacklist = make()
    blacklist.add("s1", NOW + 60)
    blacklist.add("s1", NOW + 120)
    assert blacklist.expires_at("s1") == NOW + 120
    clock.advance(100)
    assert "s1" in blacklist


def test_re_adding_with_an_earlier_expiry_does_not_shrink():
    clock, blacklist = make()
    blacklist.add("s1", NOW + 120)
    blacklist.add("s1", NOW + 60)
    assert blacklist.expires_at("s1") == NOW + 120
    clock.advance(100)
    assert "s1" in blacklist
    assert blacklist.snapshot() == {"s1": NOW + 120}


def test_re_adding_after_expiry_makes_it_live_again():
    clock, blacklist = make()
    blacklist.add("s1", NOW + 10)
    clock.advance(20)
    assert "s1" not in blacklist
    blacklist.add("s1", NOW + 60)
    assert "s1" in blacklist


def test_listeners_are_called_on_every_add():
    _, blacklist = make()
    first, second = listened(blacklist), listened(blacklist)
    blacklist.add("s1", NOW + 60)
    blacklist.add("s1", NOW + 120)
    blacklist.add("s1", NOW + 30)  # does not extend, but is still an add
    blacklist.add("s2", NOW + 60)
    assert first == ["s1", "s1", "s1", "s2"]
    assert second == first


def test_a_failing_listener_does_not_stop_the_others():
    _, blacklist = make()

    def broken(session):
        raise RuntimeError("boom")

    blacklist.on_add(broken)
    calls = listened(blacklist)
    blacklist.add("s1", NOW + 60)
    assert calls == ["s1"]
    assert "s1" in blacklist


def test_merge_keeps_the_max_per_session():
    _, blacklist = make()
    blacklist.add("a", NOW + 100)
    blacklist.add("b", NOW + 100)
    blacklist.merge({"a": NOW + 50, "b": NOW + 200, "c": NOW + 10})
    assert blacklist.snapshot() == {"a": NOW + 100, "b": NOW + 200, "c": NOW + 10}


def test_merge_announces_sessions_that_became_live():
    clock, blacklist = make()
    blacklist.add("live", NOW + 100)
    blacklist.add("expired", NOW + 10)
    clock.advance(20)
    calls = listened(blacklist)
    blacklist.merge({
        "live": NOW + 500,      # already live: extended, not announced
        "expired": NOW + 500,   # known but expired: becomes live again
        "new": NOW + 500,       # unknown: becomes live
        "stale": NOW + 5,       # unknown but already expired: not live, not announced
        "fresh": NOW + 20,      # expires exactly now: not live
    })
    assert sorted(calls) == ["expired", "new"]
    assert "live" in blacklist and "expired" in blacklist and "new" in blacklist
    assert "stale" not in blacklist and "fresh" not in blacklist


def test_merge_of_known_entries_announces_nothing():
    _, blacklist = make()
    blacklist.add("a", NOW + 100)
    calls = listened(blacklist)
    blacklist.merge({"a": NOW + 100})
    blacklist.merge({"a": NOW + 50})
    blacklist.merge(blacklist.snapshot())
    assert calls == []


def test_merge_of_an_empty_mapping_changes_nothing():
    _, blacklist = make()
    blacklist.add("a", NOW + 100)
    blacklist.merge({})
    assert blacklist.snapshot() == {"a": NOW + 100}


SESSIONS = st.sampled_from(["a", "b", "c", "d", "e"])
EXPIRIES = st.floats(min_value=NOW - 100, max_value=NOW + 100, allow_nan=False)
REPLICAS = st.dictionaries(SESSIONS, EXPIRIES, max_size=5)
FUZZ = settings(derandomize=True, deadline=None, database=None, max_examples=100)


def merged(*replicas):
    _, blacklist = make()
    for replica in replicas:
        blacklist.merge(replica)
    return blacklist.snapshot()


@FUZZ
@given(REPLICAS, REPLICAS)
def test_merge_is_commutative(x, y):
    assert merged(x, y) == merged(y, x)


@FUZZ
@given(REPLICAS, REPLICAS, REPLICAS)
def test_merge_is_associative(x, y, z):
    xy = merged(x, y)
    yz = merged(y, z)
    assert merged(xy, z) == merged(x, yz) == merged(x, y, z)


@FUZZ
@given(REPLICAS, REPLICAS)
def test_merge_is_idempotent(x, y):
    assert merged(x, x) == merged(x)
    assert merged(x, y, x, y) == merged(x, y)
    assert merged(merged(x, y), x) == merged(x, y)


@FUZZ
@given(REPLICAS, REPLICAS)
def test_merge_is_the_pointwise_max(x, y):
    expected = {s: max(v for v in (x.get(s), y.get(s)) if v is not None) for s in {*x, *y}}
    assert merged(x, y) == expected


@FUZZ
@given(st.lists(st.tuples(SESSIONS, EXPIRIES), max_size=10), REPLICAS)
def test_adds_and_merges_commute(adds, replica):
    _, first = make()
    for session, expires_at in adds:
        first.add(session, expires_at)
    first.merge(replica)
    _, second = make()
    second.merge(replica)
    for session, expires_at in adds:
        second.add(session, expires_at)
    assert first.snapshot() == second.snapshot()


@FUZZ
@given(REPLICAS, REPLICAS)
def test_merge_announces_exactly_the_sessions_that_became_live(before, replica):
    _, blacklist = make()
    blacklist.merge(before)
    live_before = {s for s in before if s in blacklist}
    calls = listened(blacklist)
    blacklist.merge(replica)
    live_after = {s for s in blacklist.snapshot() if s in blacklist}
    assert sorted(calls) == sorted(live_after - live_before)


def test_purge_drops_only_expired_entries():
    clock, blacklist = make()
    blacklist.add("short", NOW + 10)
    blacklist.add("long", NOW + 100)
    blacklist.add("edge", NOW + 20)
    clock.advance(20)
    blacklist.purge()
    assert blacklist.snapshot() == {"long": NOW + 100}
    assert "long" in blacklist


def test_purge_loop_runs_every_interval():
    clock, blacklist = make()
    blacklist.add("short", NOW + 10)
    blacklist.add("long", NOW + 100)
    blacklist.start(interval=60)
    assert blacklist.snapshot() == {"short": NOW + 10, "long": NOW + 100}  # not at start
    clock.advance(60)
    assert blacklist.snapshot() == {"long": NOW + 100}
    clock.advance(60)
    assert blacklist.snapshot() == {}
    blacklist.stop()
    assert clock.getDelayedCalls() == []


def test_start_and_stop_leave_no_delayed_calls():
    clock, blacklist = make()
    blacklist.start()
    assert len(clock.getDelayedCalls()) == 1
    blacklist.stop()
    assert clock.getDelayedCalls() == []
    blacklist.stop()  # stopping twice is harmless
    assert clock.getDelayedCalls() == []


def test_stop_without_start_is_harmless():
    clock, blacklist = make()
    blacklist.stop()
    assert clock.getDelayedCalls() == []


def test_len_counts_live_entries():
    clock, blacklist = make()
    blacklist.add("a", NOW + 10)
    blacklist.add("b", NOW + 20)
    blacklist.add("a", NOW + 5)
    blacklist.add("c", NOW - 5)
    assert len(blacklist) == 2
    clock.advance(10)
    assert len(blacklist) == 1
    clock.advance(10)
    assert len(blacklist) == 0
    assert len(blacklist.snapshot()) == 3  # still stored until purged


def test_snapshot_is_a_copy():
    _, blacklist = make()
    blacklist.add("a", NOW + 10)
    snapshot = blacklist.snapshot()
    snapshot["b"] = NOW + 10
    snapshot["a"] = NOW + 1000
    assert blacklist.snapshot() == {"a": NOW + 10}


@pytest.mark.parametrize("session", ["", "with/slash", "ünïcode", "a" * 1000])
def test_any_string_can_be_a_session(session):
    _, blacklist = make()
    blacklist.add(session, NOW + 10)
    assert session in blacklist
