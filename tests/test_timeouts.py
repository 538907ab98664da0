"""FixedTimeouts: many timeouts of one length behind one timer (Clock-driven)."""
from twisted.internet.task import Clock

from rig.timeouts import FixedTimeouts


def test_each_timeout_expires_on_time_unless_stopped_with_one_timer_at_most():
    clock = Clock()
    timeouts = FixedTimeouts(clock, 5.0)
    expired = []
    entries = {}
    for name in "abcd":
        entries[name] = timeouts.start(lambda name=name: expired.append((name, clock.seconds())))
        clock.advance(1)  # a at 0, b at 1, c at 2, d at 3
        assert len(clock.getDelayedCalls()) == 1
    FixedTimeouts.stop(entries["a"])
    FixedTimeouts.stop(entries["c"])
    FixedTimeouts.stop(entries["c"])  # a second stop does nothing
    assert timeouts.pending() == 2
    clock.advance(1.9)  # 5.9: a's deadline (5) passed, but a was stopped
    assert expired == []
    clock.advance(0.1)  # 6.0: b's
    assert expired == [("b", 6.0)]
    clock.advance(1.9)
    assert expired == [("b", 6.0)]  # c was stopped; d is due at 8
    clock.advance(0.1)
    assert expired == [("b", 6.0), ("d", 8.0)]
    assert clock.getDelayedCalls() == [] and timeouts.pending() == 0
    timeouts.start(lambda: expired.append(("e", clock.seconds())))  # a new timer
    clock.advance(5)
    assert expired[-1] == ("e", 13.0)


def test_stopped_entries_do_not_pile_up_behind_the_front():
    clock = Clock()
    timeouts = FixedTimeouts(clock, 5.0)
    for _ in range(10_000):  # requests answered at once, as a busy proxy's are
        FixedTimeouts.stop(timeouts.start(lambda: None))
    assert len(timeouts._queue) == 1


def test_an_expiry_that_raises_or_starts_another_leaves_the_others_on_time():
    clock = Clock()
    timeouts = FixedTimeouts(clock, 2.0)
    expired = []

    def failing():
        raise RuntimeError("bug")

    def again():
        expired.append(("again", clock.seconds()))
        timeouts.start(lambda: expired.append(("restarted", clock.seconds())))

    timeouts.start(failing)
    timeouts.start(again)
    clock.advance(0.5)
    timeouts.start(lambda: expired.append(("later", clock.seconds())))
    clock.advance(1.5)
    assert expired == [("again", 2.0)]
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(0.5)
    assert expired[-1] == ("later", 2.5)
    clock.advance(1.5)
    assert expired[-1] == ("restarted", 4.0)
    assert clock.getDelayedCalls() == []
