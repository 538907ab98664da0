"""Each use of a Twisted private attribute, checked against the installed Twisted."""
import inspect
import signal

from twisted.internet import reactor
from twisted.scripts import twistd

from rig.twistedcompat import forget_sigterm


def test_twistd_exits_with_the_signal_the_reactor_remembers():
    assert hasattr(reactor, "_exitSignal")
    assert "_exitSignal" in inspect.getsource(twistd)  # what twistd re-raises after the stop


def test_forget_sigterm_clears_only_sigterm():
    class Reactor:
        _exitSignal = signal.SIGTERM

    stopped = Reactor()
    forget_sigterm(stopped)
    assert stopped._exitSignal is None
    stopped._exitSignal = signal.SIGINT
    forget_sigterm(stopped)
    assert stopped._exitSignal == signal.SIGINT
