"""systemd's notify protocol (``sd_notify``) without libsystemd: ready, stopping, watchdog.

Under ``Type=notify`` systemd starts the units ordered after the gateway only
once it says ``READY=1``, so that is sent after every listener is bound. It
says ``STOPPING=1`` when a stop begins, so ``systemctl status`` shows the
drain, and, when the unit sets ``WatchdogSec=``, it pings ``WATCHDOG=1`` at
half that interval so a wedged reactor gets restarted.

A message is one datagram of ``NAME=value`` lines sent to the AF_UNIX socket
named by ``NOTIFY_SOCKET`` (a path, or ``@name`` in the abstract namespace).
Outside systemd there is no such variable and every call does nothing. The
socket is non-blocking, and a failed send is logged, never raised: the
gateway keeps serving whatever systemd hears.
"""
import os
import socket

from twisted.application.service import Service
from twisted.internet.task import LoopingCall
from twisted.logger import Logger


def notify_address(environ):
    """The socket address named by ``NOTIFY_SOCKET`` (bytes), or None when there is none.

    ``@name`` means the abstract namespace (a leading NUL byte on the wire).
    """
    value = environ.get("NOTIFY_SOCKET", "")
    if value.startswith("/"):
        return os.fsencode(value)
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    return None


def watchdog_interval(environ, pid):
    """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or None.

    systemd sets ``WATCHDOG_PID`` to say which process the watchdog is for;
    a child that inherited the variables must not ping for its parent.
    """
    owner = environ.get("WATCHDOG_PID", "").strip()
    if owner and owner != str(pid):
        return None
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 2_000_000


class Notifier:
    """Sends notify messages to systemd; does nothing without an address."""

    log = Logger()

    def __init__(self, address, getpid=os.getpid):
        self.address = address
        self._getpid = getpid

    @classmethod
    def from_environ(cls, environ, getpid=os.getpid):
        value = environ.get("NOTIFY_SOCKET", "")
        address = notify_address(environ)
        if value and address is None:
            cls.log.warn("NOTIFY_SOCKET={value!r} is not a path or @name: not notifying "
                         "systemd", value=value)
        return cls(address, getpid)

    @property
    def enabled(self):
        return self.address is not None

    def send(self, **fields):
        """Send ``NAME=value`` lines in one datagram; True when it went out."""
        if self.address is None:
            return False
        message = "".join(f"{name}={value}\n" for name, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:  # not inherited
                sock.setblocking(False)
                sock.sendto(message.encode("utf-8"), self.address)
        except OSError as error:
            self.log.warn("Could not notify systemd ({names}): {error}",
                          names=",".join(fields), error=error)
            return False
        return True

    def ready(self, status):
        return self.send(READY=1, STATUS=status, MAINPID=self._getpid())

    def stopping(self, status):
        return self.send(STOPPING=1, STATUS=status)

    def status(self, status):
        return self.send(STATUS=status)

    def watchdog(self):
        return self.send(WATCHDOG=1)


class SystemdService(Service):
    """The gateway's side of ``Type=notify``: watchdog pings while running, STOPPING on stop.

    ``RigService`` calls :meth:`ready` once every child has started. Placed
    just before the listeners in the service tree, this service is stopped
    right after them (MultiService stops children in reverse), so STOPPING
    follows "no longer accepting" and precedes the cluster leave and the
    closing of frontend connections.
    """

    log = Logger()

    def __init__(self, reactor, notifier, watchdog_interval=None):
        self._reactor = reactor
        self.notifier = notifier
        self.watchdog_interval = watchdog_interval
        self._watchdog = None

    @classmethod
    def from_environ(cls, reactor, environ, getpid=os.getpid):
        notifier = Notifier.from_environ(environ, getpid)
        interval = watchdog_interval(environ, getpid()) if notifier.enabled else None
        return cls(reactor, notifier, interval)

    def startService(self):
        super().startService()
        if self.watchdog_interval is not None and self._watchdog is None:
            self._watchdog = LoopingCall(self.notifier.watchdog)
            self._watchdog.clock = self._reactor
            self._watchdog.start(self.watchdog_interval, now=False).addErrback(
                lambda failure: self.log.failure("systemd watchdog pings stopped", failure))

    def ready(self, status):
        """Every listener is bound: systemd may start what depends on the gateway."""
        if self.notifier.ready(status):
            self.log.info("Told systemd: ready ({status})", status=status)

    def stopService(self):
        super().stopService()
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog.running:
            watchdog.stop()
        self.notifier.stopping("Stopping: no longer accepting connections, draining")
