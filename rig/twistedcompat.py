"""Every use of a Twisted private attribute, in one place (each has a test).

A Twisted upgrade that changes one of these fails its test here instead of
breaking the gateway somewhere else.
"""
import signal


def forget_sigterm(reactor):
    """Let twistd exit with status 0 after a stop that SIGTERM asked for.

    twistd re-raises the signal that stopped the reactor once it is done
    (``reactor._exitSignal``), so the exit status would read "killed by
    SIGTERM" even after a complete drain. SIGTERM is how a service manager
    asks for the stop, so a finished stop clears it (SIGINT is left alone).
    """
    if getattr(reactor, "_exitSignal", None) == signal.SIGTERM:
        reactor._exitSignal = None
