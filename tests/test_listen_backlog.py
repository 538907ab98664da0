"""Every listener queues 4096 pending connections (LISTEN_BACKLOG), as ``ss -ltn`` shows.

A reconnect storm after a deploy overflows Twisted's default of 50: the
kernel drops the SYNs it has no room for and each of those clients waits a
second or more for its retransmission.
"""
import os
import re
import subprocess

import pytest

from rig.listeners import with_backlog
from tests.certs import make_certificate

COOKIE = "backlog-cookie"


@pytest.mark.parametrize(("description", "expected"), [
    ("tcp:4000", "tcp:4000:backlog=4096"),
    ("tcp:4000:interface=127.0.0.1", "tcp:4000:interface=127.0.0.1:backlog=4096"),
    (r"tcp6:4000:interface=\:\:1", r"tcp6:4000:interface=\:\:1:backlog=4096"),
    ("ssl:4001:privateKey=k.pem", "ssl:4001:privateKey=k.pem:backlog=4096"),
    ("unix:/run/rig.sock", "unix:/run/rig.sock:backlog=4096"),
    ("tcp:4000:backlog=10", "tcp:4000:backlog=10"),  # the operator's own value stays
    ("fd:fileno=3:family=INET", "fd:fileno=3:family=INET"),  # the supervisor listened
])
def test_with_backlog(description, expected):
    assert with_backlog(description, 4096) == expected


def listen_queues(pids):
    """``{port: backlog}`` of the TCP sockets in LISTEN state held by *pids*."""
    output = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True,
                            check=True).stdout
    queues = {}
    for line in output.splitlines():
        if not any(f"pid={pid}," in line for pid in pids):
            continue
        _state, _recv, send, local, *_ = line.split()
        queues[int(local.rpartition(":")[2])] = int(send)
    return queues


def process_tree(pid):
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True,
                              text=True, check=False).stdout.split()
    return [pid, *(int(child) for child in children)]


@pytest.fixture
def tls_env(tmp_path):
    cert = make_certificate(tmp_path)
    ephemeral = "tcp:0:interface=127.0.0.1"
    return {"HTTPS_CERTFILE": cert.certfile, "HTTPS_KEYFILE": cert.keyfile,
            "INBOUND_HTTPS_PORT": ephemeral, "API_HTTPS_PORT": ephemeral}


async def test_every_listener_of_a_node_has_a_backlog_of_4096(processes, tmp_path, tls_env):
    node = await processes.node("a", str(tmp_path), COOKIE, **tls_env).start(processes.pool)
    queues = listen_queues([node.process.pid])
    cluster_port = int(node.cluster_address.rpartition(":")[2])
    assert {node.inbound, node.api, cluster_port} <= set(queues)
    assert len(queues) == 5  # inbound, internal, their two HTTPS twins, cluster
    assert set(queues.values()) == {4096}


async def test_listen_backlog_sets_it(processes, tmp_path):
    node = await processes.node("a", str(tmp_path), COOKIE,
                                LISTEN_BACKLOG="300").start(processes.pool)
    queues = listen_queues([node.process.pid])
    assert len(queues) == 3
    assert set(queues.values()) == {300}


async def test_the_workers_sockets_have_it_too(processes, tmp_path):
    node = await processes.node("a", str(tmp_path), COOKIE, WORKERS="2",
                                CLUSTER_PORT="").start(processes.pool)
    pids = process_tree(node.process.pid)
    assert len(pids) == 3  # the supervisor and two workers
    queues = listen_queues(pids)
    # the two shared ports (one SO_REUSEPORT socket per worker) and each worker's
    # loopback cluster socket
    assert {node.inbound, node.api} <= set(queues)
    assert len(queues) == 4
    assert set(queues.values()) == {4096}


def test_the_example_config_documents_it():
    path = os.path.join(os.path.dirname(__file__), os.pardir, "etc", "rig.toml")
    with open(path, encoding="utf-8") as config:
        assert re.search(r"^listen_backlog = 4096$", config.read(), re.MULTILINE)
