"""The supervisor of ``WORKERS=N`` on a Clock: what each worker is given, restarts, stop."""
import json
import os
import socket

import pytest
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.logger import LogLevel, eventAsJSON

from rig.listeners import (
    fd_description,
    parse_description,
    server_endpoint,
    shared_port_socket,
    tcp_address,
    with_port,
)
from rig.settings import Settings
from rig.supervisor import Supervisor


class FakeProcess:
    def __init__(self, pid):
        self.pid = pid
        self.signals = []

    def signalProcess(self, name):
        self.signals.append(name)


class FakeReactor(Clock):
    """A Clock that records spawned processes and checks the descriptors they get."""

    def __init__(self):
        super().__init__()
        self.spawned = []
        self._pids = iter(range(1000, 2000))

    def spawnProcess(self, process_protocol, executable, args, env, childFDs):
        spec = json.loads(args[args.index("--spec") + 1])
        ports = {number: socket.socket(fileno=socket.dup(fd)) for number, fd in childFDs.items()
                 if isinstance(fd, int)}
        bound = {number: (sock.getsockname()[1],
                          sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT),
                          sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
                 for number, sock in ports.items()}
        for sock in ports.values():
            sock.close()
        process = FakeProcess(next(self._pids))
        self.spawned.append({"protocol": process_protocol, "spec": spec, "env": env,
                             "fds": bound, "args": args, "process": process})
        return process

    def listenUNIXDatagram(self, address, protocol):
        self.notify_address = address
        return FakePort()


class FakePort:
    def stopListening(self):
        pass


class FakeSystemd:
    def __init__(self):
        self.ready_with = []

    def ready(self, status):
        self.ready_with.append(status)


def settings(**overrides):
    values = {"inbound_listen": "tcp:0:interface=127.0.0.1",
              "api_listen": "tcp:0:interface=127.0.0.1", "workers": 2}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def started():
    """Start a supervisor on a FakeReactor; stop it (and free its ports) afterwards."""
    running = []

    def start(environ=None, published=None, **overrides):
        reactor = FakeReactor()
        systemd = FakeSystemd()
        supervisor = Supervisor(reactor, settings(**overrides), environ=environ or {},
                                systemd=systemd, executable="/venv/bin/python",
                                publish=(published.append if published is not None
                                         else lambda event: None))
        supervisor.startService()
        running.append((supervisor, reactor))
        return supervisor, reactor, systemd

    yield start
    for supervisor, reactor in running:
        if supervisor.running:
            stopping = supervisor.stopService()
            for spawned in reactor.spawned:
                worker = spawned["protocol"].worker
                if worker.process is spawned["process"]:
                    spawned["protocol"].processEnded(_ended(0))
            assert stopping.called


def _ended(code=0, signal=None):
    class Reason:
        value = ProcessDone(0) if code == 0 and signal is None else ProcessTerminated(
            code, signal)

    return Reason()


def test_endpoint_descriptions():
    assert parse_description(r"tcp6:4000:interface=\:\:1:backlog=9") == (
        "tcp6", ["4000"], {"interface": "::1", "backlog": "9"})
    assert tcp_address("tcp:4000") == (socket.AF_INET, "", 4000, 50)
    assert tcp_address(r"tcp6:0:interface=\:\:1:backlog=9") == (socket.AF_INET6, "::1", 0, 9)
    assert tcp_address("unix:/run/rig.sock") is None
    assert with_port("tcp:7946:interface=10.0.0.5", 7948) == "tcp:7948:interface=10.0.0.5"
    assert with_port("ssl:7946:privateKey=k.pem:certKey=c.pem", 7947) == (
        "ssl:7947:privateKey=k.pem:certKey=c.pem")
    assert with_port("tcp:7946", 7950) == "tcp:7950"
    with pytest.raises(ValueError):
        with_port("unix:/run/x", 1)
    assert fd_description(5, socket.AF_INET6) == "fd:fileno=5:family=INET6"


def test_an_inherited_socket_is_adopted():
    sock = shared_port_socket(socket.AF_INET, "127.0.0.1", 0, 5)
    try:
        endpoint = server_endpoint(Clock(), fd_description(sock.fileno(), socket.AF_INET))
        assert (endpoint.fileno, endpoint.addressFamily) == (sock.fileno(), socket.AF_INET)
    finally:
        sock.close()


def test_each_worker_gets_its_own_socket_on_the_shared_ports(started):
    supervisor, reactor, _ = started(environ={"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "5",
                                              "LISTEN_FDS": "2", "PATH": "/bin"})
    inbound, api = (listener.port for listener in supervisor.listeners)
    assert [spawned["fds"] for spawned in reactor.spawned] == [
        {3: (inbound, 1, 1), 4: (api, 1, 1), 5: (spawned["fds"][5][0], 0, 1)}
        for spawned in reactor.spawned]
    first, second = (spawned["spec"] for spawned in reactor.spawned)
    assert first["inbound_listen"] == "fd:fileno=3:family=INET"
    assert first["api_listen"] == "fd:fileno=4:family=INET"
    assert first["cluster_listen"] == "fd:fileno=5:family=INET"
    assert (first["workers"], first["worker_index"], second["worker_index"]) == (1, 0, 1)
    a, b = (worker.cluster_address for worker in supervisor.workers)
    assert a != b and a.startswith("127.0.0.1:")
    assert (first["worker_siblings"], first["cluster_seeds"]) == ([b], [b])
    assert (second["worker_siblings"], second["cluster_seeds"]) == ([a], [a])
    environments = [spawned["env"] for spawned in reactor.spawned]
    cookie = environments[0]["NODE_COOKIE"]
    assert len(cookie) > 30 and environments[1]["NODE_COOKIE"] == cookie  # generated, shared
    assert environments[0]["NOTIFY_SOCKET"] == reactor.notify_address
    assert os.stat(os.path.dirname(reactor.notify_address)).st_mode & 0o777 == 0o700
    assert {"WATCHDOG_USEC", "LISTEN_FDS"}.isdisjoint(environments[0])
    assert environments[0]["PATH"] == "/bin"
    assert reactor.spawned[0]["args"][:3] == ["/venv/bin/python", "-m", "rig.worker"]


def test_with_a_cluster_port_worker_i_listens_on_it_plus_i(started):
    _supervisor, reactor, _ = started(
        workers=3, cluster_listen="tcp:7946:interface=0.0.0.0", node_host="10.0.0.5",
        node_cookie="secret", cluster_seeds=("10.0.0.9:7946",))
    specs = [spawned["spec"] for spawned in reactor.spawned]
    assert [spec["cluster_listen"] for spec in specs] == [
        "tcp:7946:interface=0.0.0.0", "tcp:7947:interface=0.0.0.0", "tcp:7948:interface=0.0.0.0"]
    assert specs[1]["cluster_seeds"] == ["10.0.0.5:7946", "10.0.0.5:7948", "10.0.0.9:7946"]
    assert specs[1]["worker_siblings"] == ["10.0.0.5:7946", "10.0.0.5:7948"]
    assert all(5 not in spawned["fds"] for spawned in reactor.spawned)
    assert {spawned["env"]["NODE_COOKIE"] for spawned in reactor.spawned} == {"secret"}


def test_a_taken_port_fails_at_start_and_leaves_nothing_bound():
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = taken.getsockname()[1]
        supervisor = Supervisor(FakeReactor(),
                                settings(api_listen=f"tcp:{port}:interface=127.0.0.1"))
        with pytest.raises(OSError):
            supervisor.startService()
        assert supervisor.listeners == [] and supervisor.workers == []
    finally:
        taken.close()


def test_ready_once_every_worker_is(started):
    supervisor, reactor, systemd = started()
    first, second = (spawned["process"].pid for spawned in reactor.spawned)
    supervisor.notified({"READY": "1", "MAINPID": str(first)})
    supervisor.notified({"STOPPING": "1"})
    assert systemd.ready_with == []
    supervisor.notified({"READY": "1", "MAINPID": str(second)})
    assert len(systemd.ready_with) == 1
    assert systemd.ready_with[0].startswith("Ready: 2 workers, inbound on 127.0.0.1:")


def test_a_worker_that_keeps_dying_is_restarted_later_and_later(started, log_events):
    _supervisor, reactor, _ = started()
    delays = []
    for _ in range(5):
        spawned = [s for s in reactor.spawned if s["protocol"].worker.index == 0][-1]
        reactor.advance(1.0)  # a short life
        spawned["protocol"].processEnded(_ended(1))
        before = len(reactor.spawned)
        waited = 0.0
        while len(reactor.spawned) == before:
            reactor.advance(0.25)
            waited += 0.25
        delays.append(waited)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]
    spawned = reactor.spawned[-1]
    reactor.advance(60.0)  # a long life: the next death is restarted at once again
    spawned["protocol"].processEnded(_ended(signal=9))
    reactor.advance(0.5)
    assert reactor.spawned[-1] is not spawned
    warned = [e for e in log_events if e.get("log_format", "").startswith("Worker {index}")
              and e.get("log_level") == LogLevel.warn]
    assert warned[-1]["reason"] == "killed by signal 9"


def test_the_loopback_cluster_address_survives_a_restart(started):
    supervisor, reactor, _ = started()
    address = supervisor.workers[0].cluster_address
    port_before = reactor.spawned[0]["fds"][5][0]
    reactor.spawned[0]["protocol"].processEnded(_ended(signal=9))
    reactor.advance(0.5)
    again = reactor.spawned[-1]
    assert again["spec"]["worker_index"] == 0
    assert again["fds"][5][0] == port_before
    assert supervisor.workers[0].cluster_address == address


def test_stop_asks_every_worker_to_drain_then_kills_the_rest(started):
    supervisor, reactor, _ = started(shutdown_drain_timeout=2.0)
    first, second = reactor.spawned
    stopping = supervisor.stopService()
    assert first["process"].signals == ["TERM"] and second["process"].signals == ["TERM"]
    first["protocol"].processEnded(_ended(0))
    reactor.advance(6.9)
    assert not stopping.called and second["process"].signals == ["TERM"]
    reactor.advance(0.1)  # drain timeout and a 5 s margin
    assert second["process"].signals == ["TERM", "KILL"]
    assert stopping.called
    second["protocol"].processEnded(_ended(signal=9))
    assert len(reactor.spawned) == 2  # nothing restarted during a stop


def test_worker_log_events_are_republished_with_the_workers_number(started, log_events):
    published = []
    supervisor, reactor, _ = started(published=published)
    worker = supervisor.workers[1]
    event = {"log_format": "hello {name}", "name": "x", "log_level": LogLevel.info,
             "log_namespace": "rig.test", "log_time": 5.0}
    line = eventAsJSON(event).encode()
    reactor.spawned[1]["protocol"].childDataReceived(1, line[:10])
    assert published == []  # half a line waits for the rest
    reactor.spawned[1]["protocol"].childDataReceived(1, line[10:] + b"\nnot json\n")
    reactor.spawned[1]["protocol"].childDataReceived(2, b"Traceback: boom\n")
    assert published[0]["worker"] == 1 and published[0]["log_system"] == "worker 1"
    assert published[0]["log_level"] == LogLevel.info and published[0]["name"] == "x"
    assert len(published) == 1
    lines = [e["line"] for e in log_events if e.get("log_format") == "worker {index}: {line}"]
    assert lines == ["not json", "Traceback: boom"]  # kept, as the worker's own words
    assert worker.index == 1
