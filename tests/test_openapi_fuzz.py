"""The gateway fuzzed against its own OpenAPI document with schemathesis (issue 16).

A ``twistd rig`` process (schemathesis's client blocks, so not in the test's
reactor) is fuzzed on each port with the operations the document places
there: no 5xx, every status, content type, header and body as documented,
and the process alive and answering ``/health`` afterwards.

Streams are left out, as an accepted request to them never ends: the SSE GET
and POST (an endless event stream). The WebSocket GET is fuzzed as a plain
HTTP request (the document has no ``Upgrade`` parameter: 426 every time).
Long polling is fuzzed: with no live session cookie (a fuzzer cannot forge
one) every poll is a new session, answered at once.

``RIG_FUZZ_EXAMPLES`` (default 25) sets the examples per operation.
"""
import contextlib
import os
import re
import signal
import socket
import subprocess
from http.cookiejar import DefaultCookiePolicy

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from rig.web.openapi import build_document
from tests.support import TWISTD, listening_ports

EXAMPLES = int(os.environ.get("RIG_FUZZ_EXAMPLES", "25"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection]
STREAMS = r"^/_rig/v1/connection/sse$"
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                         suppress_health_check=list(HealthCheck))

# Statuses that reject input, for the negative-data check: its defaults and the gateway's
# own limits (413, a head too long: 414, 431) and the WebSocket path's 426 to any plain
# GET (its query is read only after an upgrade).
REJECTIONS = ["400", "401", "403", "404", "406", "413", "414", "422", "426", "431"]
CONFIG = schemathesis.Config.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REJECTIONS}}})
schema = schemathesis.openapi.from_dict(build_document(), config=CONFIG)
internal_operations = schema.exclude(path_regex="^/_rig/")
inbound_operations = schema.include(path_regex="^/_rig/").exclude(path_regex=STREAMS)


def _wait_ready(notify, process, log):
    """The ports from the READY=1 message the gateway sends its notify socket."""
    while True:
        try:
            datagram = notify.recv(65536).decode("utf-8")
        except TimeoutError:
            raise AssertionError(f"the gateway did not start (exit {process.poll()}):"
                                 f" {log.read_text(errors='replace')[-500:]}") from None
        fields = dict(line.split("=", 1) for line in datagram.splitlines() if "=" in line)
        if fields.get("READY") == "1":
            return listening_ports(fields["STATUS"])


@contextlib.contextmanager
def running_rig(workdir, **settings_env):
    """A ``twistd rig`` on ephemeral loopback ports: ``{"process", "inbound", "internal",
    "log"}``; killed on exit."""
    notify_path = str(workdir / "notify")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(10)
    ephemeral = "tcp:0:interface=127.0.0.1"
    env = dict(os.environ, INBOUND_PORT=ephemeral, API_HTTP_PORT=ephemeral, LOG_LEVEL="warn",
               JWT_SECRET_KEY="mysecret", NOTIFY_SOCKET=notify_path,
               MAX_CONNECTIONS_PER_MINUTE="100000")
    for name in ("WATCHDOG_USEC", "API_AUTH_TOKENS", "CLUSTER_PORT", "REDIS_URL"):
        env.pop(name, None)
    env.update(settings_env)
    with open(workdir / "rig.log", "wb") as log:
        process = subprocess.Popen([TWISTD, "--nodaemon", "--pidfile=", "rig"], cwd=workdir,
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        ports = _wait_ready(notify, process, workdir / "rig.log")
        yield {"process": process, **ports, "log": workdir / "rig.log"}
    finally:
        notify.close()
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def rig_process(tmp_path_factory):
    with running_rig(tmp_path_factory.mktemp("fuzz")) as rig:
        yield rig


@pytest.fixture(scope="module")
def locked_rig(tmp_path_factory):
    """Its internal API needs a token (API_AUTH_TOKENS), which the fuzz does not send."""
    token = "an-operators-token-0123"
    with running_rig(tmp_path_factory.mktemp("fuzz-locked"), API_AUTH_TOKENS=token) as rig:
        yield rig


def _base(rig_process, name):
    return f"http://127.0.0.1:{rig_process[name]}"


@pytest.fixture(scope="module")
def http():
    """Keeps no cookies: a long-poll session cookie from one example would turn the next
    long-poll example into a poll of that session (which ignores the query)."""
    with requests.Session() as session:
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        yield session


@internal_operations.parametrize()
@FUZZ_SETTINGS
def test_internal_api(case, rig_process, http):
    case.call_and_validate(base_url=_base(rig_process, "internal"), session=http,
                           checks=CHECKS, timeout=10)


@inbound_operations.parametrize()
@FUZZ_SETTINGS
def test_inbound_api(case, rig_process, http):
    case.call_and_validate(base_url=_base(rig_process, "inbound"), session=http,
                           checks=CHECKS, timeout=10)


OPEN_PATHS = ("/health", "/metrics")


@internal_operations.parametrize()
@settings(FUZZ_SETTINGS, max_examples=5)
def test_internal_api_without_the_token(case, locked_rig, http):
    """The security the document declares: 401 with the documented body, except on the
    open paths."""
    response = case.call_and_validate(base_url=_base(locked_rig, "internal"), session=http,
                                      checks=CHECKS, timeout=10)
    assert (response.status_code == 401) == (case.operation.path not in OPEN_PATHS)


def test_gateway_alive_after_the_fuzz(rig_process, http):
    """Runs after the fuzz tests of this module (pytest keeps file order)."""
    assert rig_process["process"].poll() is None
    for name, path in (("internal", "/health"), ("inbound", "/_rig/health")):
        response = http.get(_base(rig_process, name) + path, timeout=5)
        assert (response.status_code, response.text) == (200, "OK")
    log = rig_process["log"].read_text(errors="replace")
    assert not re.search(r"Traceback|Unhandled|while serving", log), log[-3000:]
