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


_PLAIN_TCP = (tcp.Server, tcp.Client)


def write_now(transport, data, limit=None):
    """Write *data*, straight to the socket when a plain TCP transport (accepted or
    connected) has nothing queued
    before it (a lone ``transport.write`` would wait a reactor turn, see rig/hub/outbox.py).

    With a *limit*, the client is too slow when more than *limit* bytes are still queued
    from earlier writes: then nothing is written and this returns False (True otherwise).
    So the limit bounds what waits behind a write in progress, and one frame larger
    than the limit still reaches a client that reads. Inlined: it runs once per frame.
    """
    if (
        type(transport) in _PLAIN_TCP
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
        and transport.connected
        and not transport.disconnecting
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:  # EAGAIN, or an error the transport will discover and report
            sent = 0
        if sent == len(data):
            return True
        data = data[sent:]
    elif limit is not None and queued_bytes(transport) > limit:
        return False
    transport.write(data)
    return True
