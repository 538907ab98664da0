"""Many timeouts of one length, behind one timer.

A ``callLater`` per proxied request, cancelled when the answer comes, cost a
DelayedCall, a heap push with Python comparisons, and a cancellation that the
reactor cleans up later: about 3 % of the proxy's time. Timeouts that all last
the same time end in the order they started, so a queue and one timer set for
the oldest open one do the same work.
"""
from collections import deque

from twisted.logger import Logger

_EXPIRED = 1  # an entry is [deadline, expired callable or None once stopped]
_FIRING = object()


class FixedTimeouts:
    """Call ``expired()`` *timeout* seconds after :meth:`start`, unless :meth:`stop`
    came first. Entries stopped before theirs came are dropped from the front of the
    queue as new ones arrive, and by the timer: so the queue holds at most the
    entries started within one *timeout*, and those stopped only as small lists."""

    log = Logger()

    def __init__(self, reactor, timeout):
        self._reactor = reactor
        self.timeout = timeout
        self._queue = deque()
        self._timer = None

    def start(self, expired):
        """Start a timeout; returns its entry, for :meth:`stop`."""
        entry = [self._reactor.seconds() + self.timeout, expired]
        queue = self._queue
        while queue and queue[0][_EXPIRED] is None:
            queue.popleft()
        queue.append(entry)
        if self._timer is None:
            self._timer = self._reactor.callLater(self.timeout, self._fire)
        return entry

    @staticmethod
    def stop(entry):
        """The timeout's work is done before it expired (a second stop does nothing)."""
        entry[_EXPIRED] = None

    def pending(self):
        """How many started timeouts have neither expired nor been stopped."""
        return sum(1 for entry in self._queue if entry[_EXPIRED] is not None)

    def _fire(self):
        self._timer = _FIRING  # a timeout started by an expiry waits for the loop below
        now = self._reactor.seconds()
        queue = self._queue
        while queue:
            deadline, expired = queue[0]
            if expired is not None and deadline > now:
                self._timer = self._reactor.callLater(deadline - now, self._fire)
                return
            queue.popleft()
            if expired is not None:
                try:
                    expired()
                except Exception:  # the others still expire in time
                    self.log.failure("a timeout's expiry failed")
        self._timer = None
