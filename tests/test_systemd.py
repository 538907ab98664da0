"""systemd integration: the notify protocol over a real datagram socket, and the unit files."""
import os
import shlex
import socket
import uuid

import pytest
import pytest_twisted
from twisted.internet.task import Clock
from twisted.logger import capturedLogs

from rig.settings import Settings
from rig.systemd import Notifier, SystemdService, notify_address, watchdog_interval

UNITS = os.path.join(os.path.dirname(__file__), os.pardir, "systemd")


@pytest.fixture
def notify_socket(tmp_path):
    """A bound, non-blocking AF_UNIX datagram socket: systemd's end of NOTIFY_SOCKET."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    yield path, sock
    sock.close()


def received(sock):
    """Every datagram waiting on *sock*, decoded (AF_UNIX delivers at sendto time)."""
    messages = []
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except BlockingIOError:
            return messages


def test_no_notify_socket_is_a_no_op():
    notifier = Notifier.from_environ({})
    assert not notifier.enabled
    assert notifier.ready("Ready") is False
    assert notifier.stopping("Stopping") is False
    service = SystemdService.from_environ(Clock(), {"WATCHDOG_USEC": "1000000"})
    service.startService()
    service.ready("Ready")
    service.stopService()
    assert service.watchdog_interval is None


def test_messages_reach_a_path_socket(notify_socket):
    path, sock = notify_socket
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path}, getpid=lambda: 4242)
    assert notifier.ready("Ready: inbound on 127.0.0.1:4000")
    assert notifier.status("Draining 3 connections")
    assert notifier.stopping("Stopping")
    assert notifier.watchdog()
    assert received(sock) == [
        "READY=1\nSTATUS=Ready: inbound on 127.0.0.1:4000\nMAINPID=4242\n",
        "STATUS=Draining 3 connections\n",
        "STOPPING=1\nSTATUS=Stopping\n",
        "WATCHDOG=1\n",
    ]


def test_abstract_socket_name():
    name = f"txrig-test-{uuid.uuid4().hex}"
    assert notify_address({"NOTIFY_SOCKET": "@" + name}) == b"\0" + name.encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.setblocking(False)
        assert Notifier.from_environ({"NOTIFY_SOCKET": "@" + name}).ready("Ready")
        assert received(sock) == [f"READY=1\nSTATUS=Ready\nMAINPID={os.getpid()}\n"]


def test_unusable_notify_socket_values_disable_notifying():
    for value in ("relative/path", "@", "vsock:2:1234"):
        with capturedLogs() as events:
            assert not Notifier.from_environ({"NOTIFY_SOCKET": value}).enabled
        assert "NOTIFY_SOCKET" in events[0]["log_format"]


def test_a_failed_send_is_logged_not_raised(tmp_path):
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with capturedLogs() as events:
        assert notifier.ready("Ready") is False
    assert events[0]["log_level"].name == "warn"
    assert isinstance(events[0]["error"], OSError)


def test_watchdog_interval_is_half_of_watchdog_usec():
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, 7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, 7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, 7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, 7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, 7) is None
    assert watchdog_interval({}, 7) is None


def test_watchdog_pings_until_the_stop(notify_socket):
    path, sock = notify_socket
    clock = Clock()
    service = SystemdService.from_environ(
        clock, {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}, getpid=lambda: 7)
    assert service.watchdog_interval == 1.0
    service.startService()
    assert received(sock) == []  # the first ping is due after one interval
    clock.advance(1.0)
    clock.advance(1.0)
    assert received(sock) == ["WATCHDOG=1\n"] * 2
    service.stopService()
    assert clock.getDelayedCalls() == []
    [stopping] = received(sock)
    assert stopping.startswith("STOPPING=1\n")


@pytest_twisted.ensureDeferred
async def test_gateway_is_ready_once_listening_and_says_stopping_after(notify_socket):
    """READY=1 names the bound ports; STOPPING=1 comes after the listeners stopped
    and before the cluster leaves and the hub closes its connections."""
    from twisted.internet import reactor

    from rig.service import RigService

    path, sock = notify_socket
    settings = Settings(inbound_listen="tcp:0:interface=127.0.0.1",
                        api_listen="tcp:0:interface=127.0.0.1",
                        cluster_listen="tcp:0:interface=127.0.0.1", node_cookie="c")
    service = RigService.build(settings, reactor, environ={"NOTIFY_SOCKET": path})
    seen_at_stopping = []
    send = service.systemd.notifier.send

    def recording_send(**fields):
        if "STOPPING" in fields:
            seen_at_stopping.append({
                "inbound listening": service.getServiceNamed("inbound").port is not None,
                "internal listening": service.getServiceNamed("internal").port is not None,
                "cluster running": bool(service.cluster.running),
                "hub closing": service.hub.closing,
            })
        return send(**fields)

    service.systemd.notifier.send = recording_send
    service.startService()
    try:
        [ready] = received(sock)
        inbound, internal = service.address("inbound"), service.address("internal")
        assert ready == (f"READY=1\nSTATUS=Ready: inbound on 127.0.0.1:{inbound.port}, "
                         f"internal on 127.0.0.1:{internal.port}\nMAINPID={os.getpid()}\n")
    finally:
        await service.stopService()
    assert seen_at_stopping == [{"inbound listening": False, "internal listening": False,
                                 "cluster running": True, "hub closing": False}]
    [stopping] = received(sock)
    assert stopping.startswith("STOPPING=1\n")


@pytest_twisted.ensureDeferred
async def test_a_cluster_node_is_ready_only_once_it_has_its_peers_state(notify_socket,
                                                                          dead_port):
    from twisted.internet import reactor

    from rig.service import RigService

    path, sock = notify_socket
    settings = Settings(inbound_listen="tcp:0:interface=127.0.0.1",
                        api_listen="tcp:0:interface=127.0.0.1",
                        cluster_listen="tcp:0:interface=127.0.0.1", node_cookie="c",
                        cluster_seeds=(f"127.0.0.1:{dead_port}",))
    service = RigService.build(settings, reactor, environ={"NOTIFY_SOCKET": path},
                               cluster_options={"join_timeout": 0.3})
    service.startService()
    try:
        assert received(sock) == []  # listening, but the seed has not answered
        await service.cluster.when_synced()
        [ready] = received(sock)
        assert ready.startswith("READY=1\n")
    finally:
        await service.stopService()


# -- unit files ---------------------------------------------------------------


def parse_unit(name):
    """``{section: {key: [values]}}``; systemd keys repeat, so configparser does not fit."""
    sections, current = {}, None
    with open(os.path.join(UNITS, name), encoding="utf-8") as unit:
        for raw in unit:
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("[") and line.endswith("]"):
                current = sections.setdefault(line[1:-1], {})
                continue
            key, sep, value = line.partition("=")
            assert sep and current is not None, f"{name}: stray line {raw!r}"
            assert not value.endswith("\\"), f"{name}: keep {key} on one line"
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def one(section, key):
    values = section[key]
    assert len(values) == 1, (key, values)
    return values[0]


@pytest.mark.parametrize(("name", "config"), [
    ("rig.service", "/etc/rig/rig.toml"),
    ("rig@.service", "/etc/rig/%i.toml"),
])
def test_unit_essentials(name, config):
    service = parse_unit(name)["Service"]
    assert one(service, "Type") == "notify"
    assert one(service, "NotifyAccess") == "main"
    assert shlex.split(one(service, "ExecStart")) == [
        "/opt/txrig/.venv/bin/twistd", "--nodaemon", "--pidfile=", "rig", "--config", config]
    assert one(service, "Restart") == "on-failure"
    assert float(one(service, "RestartSec")) > 0
    assert one(service, "KillSignal") == "SIGTERM"
    assert float(one(service, "TimeoutStopSec")) > Settings().shutdown_drain_timeout + 5
    assert one(service, "LimitNOFILE") == "65536"
    assert one(service, "User") == "rig"
    assert one(service, "CapabilityBoundingSet") == ""
    assert one(service, "RestrictAddressFamilies").split() == ["AF_INET", "AF_INET6", "AF_UNIX"]
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp", "PrivateDevices",
                "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups"):
        assert one(service, key) == "yes", key
    assert one(service, "ProtectSystem") == "strict"
    assert parse_unit(name)["Install"]["WantedBy"] == ["multi-user.target"]


def test_template_differs_only_by_instance():
    plain, template = parse_unit("rig.service"), parse_unit("rig@.service")
    per_instance = {"ExecStart", "EnvironmentFile", "SyslogIdentifier", "RuntimeDirectory"}
    for section in ("Unit", "Service", "Install"):
        for key in set(plain[section]) | set(template[section]):
            if key in per_instance or key == "Description":
                assert "%i" in " ".join(template[section][key]), key
            else:
                assert plain[section].get(key) == template[section].get(key), key
