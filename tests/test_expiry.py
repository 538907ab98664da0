"""ExpiryTimers: connections end when their tokens expire, with a timer per second."""
from twisted.internet.task import Clock

from rig.hub.expiry import ExpiryTimers


def _timers(start=1000.0):
    clock = Clock()
    clock.advance(start)
    expired = []
    return clock, expired, ExpiryTimers(clock, expired.append)


def test_connections_expiring_in_the_same_second_share_one_timer_and_none_ends_early():
    clock, expired, timers = _timers()
    timers.expire_at("a", 1010.2)
    timers.expire_at("b", 1010.9)
    timers.expire_at("c", 1012.0)
    assert len(clock.getDelayedCalls()) == 2  # 1011 and 1012
    clock.advance(10.9)
    assert expired == []  # 1010.9: b's token has just expired, its second not yet over
    clock.advance(0.1)
    assert expired == ["a", "b"]
    clock.advance(1)
    assert expired == ["a", "b", "c"] and clock.getDelayedCalls() == []


def test_a_later_expiry_extends_and_an_earlier_one_does_not_shorten():
    clock, expired, timers = _timers()
    timers.expire_at("a", 1005)
    timers.expire_at("a", 1020)  # a newer token of its session
    timers.expire_at("a", 1010)  # an older one: no change
    assert len(clock.getDelayedCalls()) == 1  # 1005's timer went with its last connection
    clock.advance(19.9)
    assert expired == []
    clock.advance(0.1)
    assert expired == ["a"]


def test_a_forgotten_connection_does_not_expire_and_its_seconds_timer_goes_with_the_last():
    clock, expired, timers = _timers()
    timers.expire_at("a", 1005)
    timers.expire_at("b", 1005)
    timers.forget("a")
    timers.forget("a")  # twice: nothing
    assert len(clock.getDelayedCalls()) == 1
    timers.forget("b")
    assert clock.getDelayedCalls() == []
    clock.advance(10)
    assert expired == []


def test_an_expiry_already_past_ends_the_connection_at_the_next_turn_and_stop_leaves_no_timer():
    clock, expired, timers = _timers()
    timers.expire_at("late", 990)  # accepted within the JWT leeway
    clock.advance(0)
    assert expired == ["late"]
    timers.expire_at("a", 2000)
    timers.expire_at("b", 3000)
    timers.stop()
    assert clock.getDelayedCalls() == []
    clock.advance(5000)
    assert expired == ["late"]


def test_a_connection_that_expires_again_after_its_timer_fired_gets_a_new_one():
    clock, expired, timers = _timers()
    timers.expire_at("a", 1001)
    clock.advance(1)
    timers.expire_at("a", 1003)
    clock.advance(2)
    assert expired == ["a", "a"]
