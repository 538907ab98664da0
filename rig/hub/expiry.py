"""When connections' tokens expire: one timer per second in which some expire.

A connection opened with a JWT ends when the JWT expires. A timer per
connection cost a heap insertion when it opened and a cancellation when it
closed, on every JWT connect; tokens an issuer mints in the same second expire
in the same second, so their connections share one timer here. An expiry is
rounded up to the whole second: a connection ends at most a second after its
token's ``exp``, never before.
"""
import math


class ExpiryTimers:
    """``expired(connection)`` is called once each connection's time has come."""

    def __init__(self, reactor, expired):
        self._reactor = reactor
        self._expired = expired
        self._second_of = {}  # connection -> the whole second it expires in
        self._due = {}  # second -> its connections (a dict for its order)
        self._calls = {}  # second -> the timer of that second

    def expire_at(self, connection, when):
        """Expire *connection* at unix time *when*, or later if it is set to already."""
        second = math.ceil(when)
        current = self._second_of.get(connection)
        if current is not None:
            if current >= second:
                return
            self.forget(connection)
        self._second_of[connection] = second
        due = self._due.get(second)
        if due is None:
            due = self._due[second] = {}
            delay = max(0.0, second - self._reactor.seconds())
            self._calls[second] = self._reactor.callLater(delay, self._fire, second)
        due[connection] = None

    def forget(self, connection):
        """*connection* is gone (or expires later): not expired at its second."""
        second = self._second_of.pop(connection, None)
        if second is None:
            return
        due = self._due[second]
        del due[connection]
        if not due:  # the last of its second: the timer goes too
            del self._due[second]
            call = self._calls.pop(second)
            if call.active():
                call.cancel()

    def stop(self):
        """No timer stays scheduled (for shutdown)."""
        for call in self._calls.values():
            if call.active():
                call.cancel()
        self._calls.clear()
        self._due.clear()
        self._second_of.clear()

    def _fire(self, second):
        del self._calls[second]
        due = self._due.pop(second, {})
        for connection in due:
            del self._second_of[connection]
        for connection in due:
            self._expired(connection)
