"""A cancellable wait on the reactor, for the reconnect loops that a stop must wake."""
from twisted.internet import defer
from twisted.internet.task import deferLater


class Pause:
    def __init__(self, reactor):
        self._reactor = reactor
        self._waiting = None

    async def sleep(self, delay):
        """Wait *delay* seconds; False if :meth:`cancel` cut the wait short."""
        self._waiting = deferLater(self._reactor, delay, lambda: None)
        try:
            await self._waiting
        except defer.CancelledError:
            return False
        finally:
            self._waiting = None
        return True

    def cancel(self):
        if self._waiting is not None:
            self._waiting.cancel()
