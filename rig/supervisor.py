"""``WORKERS=N``: ``twistd rig`` supervises N worker processes that share the ports.

CPython runs one core per process, so a gateway that should use every core of
a VM runs several workers. The supervisor

- creates every listening socket: for the frontend, internal and HTTPS ports
  one socket per worker, all bound with ``SO_REUSEPORT`` to the same port
  (the kernel spreads new connections evenly, and none go to a dead worker);
  without a ``CLUSTER_PORT``, one loopback cluster socket per worker, kept
  across restarts so that a restarted worker comes back at the same address;
- starts worker i (``python -m rig.worker``) with its sockets, a JSON spec of
  the settings it differs in (its listeners, ``CLUSTER_PORT + i`` when one is
  set, its siblings as cluster seeds) and the shared ``NODE_COOKIE`` (one
  generated per start when none is set: then only the workers form the cluster);
- republishes the workers' log events (JSON lines on their stdout) through its
  own log observers, tagged with the worker's number;
- tells systemd ``READY=1`` once every worker has said so (each sends its
  own ``READY=1`` to the supervisor's notify socket once it is synced);
- restarts a worker that dies, at once after a long life and with a growing
  delay while it keeps dying;
- on stop (SIGTERM), asks every worker to drain (SIGTERM) and waits for them.
"""
import json
import os
import secrets
import shutil
import socket
import sys
import tempfile

import attrs
from twisted.application.service import MultiService, Service
from twisted.internet import defer, protocol
from twisted.logger import Logger, eventFromJSON, globalLogPublisher

from rig.listeners import (
    fd_description,
    shared_port_socket,
    tcp_address,
    with_backlog,
    with_port,
)
from rig.systemd import SystemdService
from rig.twistedcompat import forget_sigterm

LISTENERS = ("inbound_listen", "api_listen", "inbound_https_listen", "api_https_listen")
# the child's descriptors 0-2 are stdin (its lifeline), stdout (log events), stderr
FIRST_FD = 3
# a worker that lived this long before it died is restarted at once
STABLE_AFTER = 10.0


class Listener:
    """One port every worker listens on; the supervisor holds it reserved."""

    def __init__(self, field, description):
        self.field = field
        self.family, self.host, port, self.backlog = tcp_address(description)
        # bound (not listening) for as long as the supervisor runs: it resolves port 0,
        # fails at start if the port is taken, and keeps it while workers restart
        self.reservation = shared_port_socket(self.family, self.host, port, self.backlog,
                                              listen=False)
        self.port = self.reservation.getsockname()[1]

    def open(self):
        """A new listening socket on the shared port, for one worker."""
        return shared_port_socket(self.family, self.host, self.port, self.backlog)

    def close(self):
        self.reservation.close()


@attrs.define(eq=False)
class Worker:
    index: int
    cluster_address: str
    cluster_listen: str | None = None  # CLUSTER_PORT + i; else the loopback socket below
    cluster_socket: socket.socket | None = None
    process: object = None
    pid: int | None = None
    started_at: float = 0.0
    failures: int = 0
    ready: bool = False
    restart: object = None  # DelayedCall
    ended: defer.Deferred | None = None


class WorkerProtocol(protocol.ProcessProtocol):
    """A worker's output: log events on stdout (one JSON object a line), text on stderr."""

    def __init__(self, supervisor, worker):
        self.supervisor = supervisor
        self.worker = worker
        self._buffers = {1: b"", 2: b""}

    def childDataReceived(self, childFD, data):
        buffered = self._buffers.get(childFD)
        if buffered is None:
            return
        *lines, self._buffers[childFD] = (buffered + data).split(b"\n")
        for line in lines:
            if line.strip():
                self.supervisor.worker_output(self.worker, line, childFD)

    def processEnded(self, reason):
        self.supervisor.worker_ended(self.worker, reason.value)


class Supervisor(Service):
    log = Logger()

    def __init__(self, reactor, settings, *, config_path=None, environ=None, systemd=None,
                 executable=sys.executable, restart_delay=0.5, max_restart_delay=30.0,
                 publish=globalLogPublisher):
        self._reactor = reactor
        self.settings = settings
        self._config_path = config_path
        self._environ = dict(environ if environ is not None else os.environ)
        self._systemd = systemd
        self._executable = executable
        self._restart_delay = restart_delay
        self._max_restart_delay = max_restart_delay
        self._publish = publish
        self._cookie = settings.node_cookie or secrets.token_urlsafe(32)
        self.listeners = []
        self.workers = []
        self._notify_port = None
        self._notify_dir = None
        self._announced = False

    # -- start -----------------------------------------------------------------

    def privilegedStartService(self):
        super().privilegedStartService()
        self._bind()

    def startService(self):
        super().startService()
        self._bind()
        # in a directory only we may enter: no other local user can claim readiness
        self._notify_dir = tempfile.mkdtemp(prefix="txrig-supervisor-")
        self._notify_port = self._reactor.listenUNIXDatagram(
            os.path.join(self._notify_dir, "notify"), _NotifyProtocol(self))
        for worker in self.workers:
            self._spawn(worker)
        self.log.info("Supervising {count} workers: {ports}", count=len(self.workers),
                      ports=self.describe_ports())

    def _bind(self):
        """Create the shared ports and each worker's cluster address, once."""
        if self.listeners:
            return
        settings = self.settings
        fields = LISTENERS if settings.https_certfile else LISTENERS[:2]
        try:
            for field in fields:
                self.listeners.append(Listener(
                    field, with_backlog(getattr(settings, field), settings.listen_backlog)))
            self.workers = [self._worker(index) for index in range(settings.workers)]
        except BaseException:
            self._close_sockets()
            raise

    def _worker(self, index):
        cluster = self.settings.cluster_listen
        if cluster is None:  # the workers only talk among themselves, over loopback
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sock.listen(self.settings.listen_backlog)
            sock.setblocking(False)
            return Worker(index, f"127.0.0.1:{sock.getsockname()[1]}", cluster_socket=sock)
        port = tcp_port(cluster) + index
        return Worker(index, f"{self.settings.node_host}:{port}",
                      cluster_listen=with_port(cluster, port))

    def describe_ports(self):
        names = {"inbound_listen": "inbound", "api_listen": "internal",
                 "inbound_https_listen": "inbound_https", "api_https_listen": "internal_https"}
        return ", ".join(f"{names[listener.field]} on {listener.host or '*'}:{listener.port}"
                         for listener in self.listeners)

    # -- workers -------------------------------------------------------------------

    def spec(self, worker, descriptors):
        """What worker *worker* is told: the settings it differs in (JSON)."""
        siblings = [other.cluster_address for other in self.workers if other is not worker]
        spec = {
            "workers": 1, "worker_index": worker.index, "worker_siblings": siblings,
            "cluster_seeds": [*siblings, *self.settings.cluster_seeds],
            "cluster_listen": worker.cluster_listen,
        }
        spec.update(descriptors)
        return spec

    def _environment(self):
        environ = {name: value for name, value in self._environ.items()
                   if not name.startswith(("NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_"))}
        environ.update(NODE_COOKIE=self._cookie,
                       NOTIFY_SOCKET=os.path.join(self._notify_dir, "notify"))
        return environ

    def _spawn(self, worker):
        worker.restart = None
        if not self.running:
            return
        sockets, child_fds, descriptors = [], {0: "w", 1: "r", 2: "r"}, {}
        try:
            for number, listener in enumerate(self.listeners, FIRST_FD):
                sock = listener.open()
                sockets.append(sock)
                child_fds[number] = sock.fileno()
                descriptors[listener.field] = fd_description(number, listener.family)
            if worker.cluster_socket is not None:
                number = FIRST_FD + len(self.listeners)
                child_fds[number] = worker.cluster_socket.fileno()
                descriptors["cluster_listen"] = fd_description(number, socket.AF_INET)
            args = [self._executable, "-m", "rig.worker", "--spec",
                    json.dumps(self.spec(worker, descriptors))]
            if self._config_path:
                args += ["--config", self._config_path]
            worker.ended = defer.Deferred()
            worker.process = self._reactor.spawnProcess(
                WorkerProtocol(self, worker), self._executable, args,
                env=self._environment(), childFDs=child_fds)
        except Exception:
            self.log.failure("Could not start worker {index}", index=worker.index)
            self._schedule_restart(worker)
            return
        finally:
            for sock in sockets:  # the worker has its own copies now
                sock.close()
        worker.pid = worker.process.pid
        worker.started_at = self._reactor.seconds()
        worker.ready = False
        self.log.info("Worker {index} started (pid {pid}, cluster address {address})",
                      index=worker.index, pid=worker.pid, address=worker.cluster_address)

    def worker_output(self, worker, line, child_fd):
        """A log event from a worker's stdout, or a line it wrote to stderr."""
        try:
            event = eventFromJSON(line.decode("utf-8")) if child_fd == 1 else None
        except ValueError:
            event = None
        if not isinstance(event, dict):
            self.log.warn("worker {index}: {line}", index=worker.index,
                          line=line.decode("utf-8", "replace"))
            return
        event["worker"] = worker.index
        event["log_system"] = f"worker {worker.index}"
        self._publish(event)

    def worker_ended(self, worker, reason):
        worker.process = None
        worker.ready = False
        ended, worker.ended = worker.ended, None
        if ended is not None:
            ended.callback(None)
        if not self.running:
            return
        lived = self._reactor.seconds() - worker.started_at
        worker.failures = 0 if lived >= STABLE_AFTER else worker.failures + 1
        self.log.warn("Worker {index} (pid {pid}) ended after {lived:.1f} s: {reason}",
                      index=worker.index, pid=worker.pid, lived=lived,
                      reason=_how_it_ended(reason))
        self._schedule_restart(worker)

    def _schedule_restart(self, worker):
        if not self.running or worker.restart is not None:
            return
        # at once after a long life; doubling while it keeps dying young
        delay = min(self._restart_delay * 2 ** max(worker.failures - 1, 0),
                    self._max_restart_delay)
        self.log.info("Restarting worker {index} in {delay:.1f} s", index=worker.index,
                      delay=delay)
        worker.restart = self._reactor.callLater(delay, self._spawn, worker)

    def notified(self, fields):
        """A worker's systemd notification (it names itself with MAINPID)."""
        if fields.get("READY") != "1":
            return
        for worker in self.workers:
            if str(worker.pid) == fields.get("MAINPID") and worker.process is not None:
                worker.ready = True
                self.log.info("Worker {index} is ready", index=worker.index)
        if not self._announced and all(worker.ready for worker in self.workers):
            self._announced = True
            status = f"Ready: {len(self.workers)} workers, {self.describe_ports()}"
            self.log.info("{status}", status=status)
            if self._systemd is not None:
                self._systemd.ready(status)

    # -- stop --------------------------------------------------------------------

    def stopService(self):
        """Ask every worker to drain (SIGTERM) and wait; kill what is left after
        the drain timeout and a margin."""
        super().stopService()
        waits = []
        for worker in self.workers:
            if worker.restart is not None and worker.restart.active():
                worker.restart.cancel()
            worker.restart = None
            if worker.process is not None:
                waits.append(worker.ended)
                _signal(worker.process, "TERM")
        stopped = defer.DeferredList(waits)
        stopped.addTimeout(self.settings.shutdown_drain_timeout + 5.0, self._reactor,
                           onTimeoutCancel=self._kill_the_rest)
        return stopped.addBoth(self._stopped)

    def _kill_the_rest(self, result, timeout):
        for worker in self.workers:
            if worker.process is not None:
                self.log.warn("Worker {index} still running {timeout} s after SIGTERM: killed",
                              index=worker.index, timeout=timeout)
                _signal(worker.process, "KILL")
        return result

    def _stopped(self, result):
        port, self._notify_port = self._notify_port, None
        if port is not None:
            port.stopListening()
        if self._notify_dir is not None:
            shutil.rmtree(self._notify_dir, ignore_errors=True)
            self._notify_dir = None
        self._close_sockets()
        forget_sigterm(self._reactor)
        self.log.info("Every worker has stopped")

    def _close_sockets(self):
        for listener in self.listeners:
            listener.close()
        for worker in self.workers:
            if worker.cluster_socket is not None:
                worker.cluster_socket.close()
        self.listeners, self.workers = [], []


class _NotifyProtocol(protocol.DatagramProtocol):
    """The systemd notify protocol, as the workers speak it to their supervisor."""

    def __init__(self, supervisor):
        self.supervisor = supervisor

    def datagramReceived(self, datagram, address):
        lines = datagram.decode("utf-8", "replace").splitlines()
        self.supervisor.notified(dict(line.split("=", 1) for line in lines if "=" in line))


def tcp_port(description):
    _family, _host, port, _backlog = tcp_address(description) or (None, None, None, None)
    if port is None:  # ssl: has its port first as well
        port = int(description.split(":")[1])
    return port


def _signal(process, name):
    try:
        process.signalProcess(name)
    except Exception:  # already gone (ProcessExitedAlready)
        pass


def _how_it_ended(reason):
    code, number = getattr(reason, "exitCode", None), getattr(reason, "signal", None)
    if number is not None:
        return f"killed by signal {number}"
    return f"exit status {code}"


class SupervisorService(MultiService):
    """The service tree of ``twistd rig`` with ``WORKERS`` > 1: the supervisor, then systemd."""

    @classmethod
    def build(cls, settings, reactor, environ=None, config_path=None):
        from rig.service import warn_if_open

        warn_if_open(settings)
        service = cls()
        systemd = SystemdService.from_environ(reactor, environ or {})
        service.supervisor = Supervisor(reactor, settings, config_path=config_path,
                                        environ=environ, systemd=systemd)
        service.supervisor.setName("supervisor")
        service.supervisor.setServiceParent(service)
        # after the supervisor: stopped first, so STOPPING=1 goes out as the drain begins
        systemd.setName("systemd")
        systemd.setServiceParent(service)
        return service
