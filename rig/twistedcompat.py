"""Every use of a Twisted private attribute, in one place (each has a test).

A Twisted upgrade that changes one of these fails its test here instead of
breaking the gateway somewhere else.
"""
import signal

from twisted.internet import tcp


def forget_sigterm(reactor):
    """Let twistd exit with status 0 after a stop that SIGTERM asked for.

    twistd re-raises the signal that stopped the reactor once it is done
    (``reactor._exitSignal``), so the exit status would read "killed by
    SIGTERM" even after a complete drain. SIGTERM is how a service manager
    asks for the stop, so a finished stop clears it (SIGINT is left alone).
    """
    if getattr(reactor, "_exitSignal", None) == signal.SIGTERM:
        reactor._exitSignal = None


# -- a TCP transport's send buffer (the write path's direct send and its limit) -----


def queued_bytes(transport):
    """Bytes a TCP transport holds but has not sent yet (0 if it cannot tell: TLS, tests)."""
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except AttributeError:
        return 0


def idle_socket(transport):
    """The socket of a plain TCP server transport with nothing queued, on which data may
    be sent at once ahead of the reactor; None otherwise (then use ``transport.write``)."""
    if (
        type(transport) is tcp.Server
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
        and transport.connected
        and not transport.disconnecting
    ):
        return transport.socket
    return None
