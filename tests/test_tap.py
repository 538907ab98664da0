"""``twistd rig``: plugin discovery, option parsing, fatal settings and logging wiring."""

import io
import json
import os
import subprocess
import sys
import types

import pytest
from twisted.application.service import IServiceMaker, Service
from twisted.logger import Logger
from twisted.plugin import getPlugins
from twisted.scripts.twistd import ServerOptions

from rig import logs, tap
from rig.settings import Settings, env_names

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch):
    """The tests' own environment must not leak settings into them."""
    for name in env_names():
        monkeypatch.delenv(name, raising=False)


def run_twistd(tmp_path, *args, **env):
    environ = {k: v for k, v in os.environ.items() if k not in env_names()}
    environ.update(env)
    return subprocess.run(
        [TWISTD, "--pidfile=", "--logfile=-", *args],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_plugin_is_discoverable():
    assert "rig" in [plugin.tapname for plugin in getPlugins(IServiceMaker)]


def test_options_with_config(tmp_path):
    path = tmp_path / "rig.toml"
    path.write_text("inbound_port = 4100\n")
    options = tap.Options()
    options.parseOptions(["--config", str(path)])
    assert options.settings == Settings(inbound_listen="tcp:4100")


def test_options_without_config():
    options = tap.Options()
    options.parseOptions([])
    assert options.settings == Settings()


def test_bad_env_setting_is_one_line_exit(monkeypatch):
    monkeypatch.setenv("LONGPOLL_WAIT", "soon")
    with pytest.raises(SystemExit) as info:
        tap.Options().parseOptions([])
    message = str(info.value.code)
    assert message.startswith("rig: bad setting: LONGPOLL_WAIT: ")
    assert "\n" not in message


def test_bad_config_file_is_one_line_exit(tmp_path):
    with pytest.raises(SystemExit, match=r"^rig: bad setting: cannot read settings file"):
        tap.Options().parseOptions(["--config", str(tmp_path / "missing.toml")])


def test_make_service_passes_settings_and_reactor(monkeypatch):
    built = []

    class RigService:
        @staticmethod
        def build(settings, reactor, environ=None):
            built.append((settings, reactor))
            return Service()

    monkeypatch.setitem(sys.modules, "rig.service", types.SimpleNamespace(RigService=RigService))
    options = tap.Options()
    options.parseOptions([])
    assert isinstance(tap.makeService(options), Service)
    assert built[0][0] is options.settings
    assert built[0][1] is not None


def parse_twistd(*args):
    config = ServerOptions()
    config.parseOptions(list(args))
    return config


def emit_one(observer):
    Logger(namespace="rig.test", observer=observer).info("hello {who}", who="world")
    Logger(namespace="rig.test", observer=observer).debug("filtered out")


def test_twistd_gets_a_json_logger_from_the_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("LOG_FMT", "json")
    log_path = tmp_path / "rig.log"
    config = parse_twistd("--nodaemon", "--pidfile=", f"--logfile={log_path}", "rig")
    emit_one(config["logger"]())
    lines = log_path.read_text().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["who"] == "world"
    assert event["namespace"] == "rig.test"
    assert event["level"] == "info"
    assert event["message"] == "hello world"
    assert event["time"].endswith("+00:00")


def test_twistd_logger_defaults_to_stdout_in_the_foreground(monkeypatch, capsys):
    config = parse_twistd("--nodaemon", "--pidfile=", "rig")
    emit_one(config["logger"]())
    out = capsys.readouterr().out
    assert "hello world" in out
    assert "filtered out" not in out


def test_twistd_explicit_logger_wins():
    config = parse_twistd("--nodaemon", "--pidfile=", "--logger", "rig.logs.observer", "rig")
    assert config["logger"] is logs.observer


def test_log_path_follows_twistd():
    assert tap._log_path({"logfile": "-", "nodaemon": False}) is None
    assert tap._log_path({"logfile": None, "nodaemon": True}) is None
    assert tap._log_path({"logfile": "", "nodaemon": True}) is None
    assert tap._log_path({"logfile": None, "nodaemon": False}) == "twistd.log"
    assert tap._log_path({"logfile": "/var/log/rig.log", "nodaemon": True}) == "/var/log/rig.log"


def test_logs_observer_reads_the_environment(monkeypatch, capsys):
    monkeypatch.setenv("LOG_LEVEL", "warning")
    monkeypatch.setenv("LOG_FMT", "json")
    emit_one(logs.observer())
    assert capsys.readouterr().out == ""


def test_json_lines_carry_failures_and_skip_objects():
    stream = io.StringIO()
    log = Logger(namespace="rig.test", observer=logs.make_observer("info", "json", stream))
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.failure("while dividing {what}", what="one", other=object())
    event = json.loads(stream.getvalue())
    assert event["level"] == "critical"
    assert event["message"] == "while dividing one"
    assert "ZeroDivisionError" in event["traceback"]
    assert "other" not in event  # only plain values become fields


def test_make_observer_rejects_unknown_format():
    with pytest.raises(ValueError):
        logs.make_observer("info", "xml", sys.stdout)


def test_twistd_rig_help(tmp_path):
    result = run_twistd(tmp_path, "rig", "--help")
    assert result.returncode == 0, result.stderr
    assert "--config" in result.stdout


def test_twistd_rig_bad_setting_exits_non_zero(tmp_path):
    result = run_twistd(tmp_path, "-n", "rig", INBOUND_PORT="notaport")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("rig: bad setting: INBOUND_PORT: ")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "which, missing",
    [("HTTPS_CERTFILE", "HTTPS_KEYFILE"), ("HTTPS_KEYFILE", "HTTPS_CERTFILE")],
)
def test_twistd_rig_with_half_the_https_files_exits_1(tmp_path, which, missing):
    from tests.certs import make_certificate

    cert = make_certificate(tmp_path)
    path = cert.certfile if which == "HTTPS_CERTFILE" else cert.keyfile
    result = run_twistd(tmp_path, "-n", "rig", **{which: path})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr + result.stdout
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"rig: bad setting: {missing}: ")
    assert f"Please also set {missing}" in last
    assert len(result.stderr.strip().splitlines()) == 1


def test_make_service_with_workers_builds_a_supervisor(monkeypatch):
    from rig.supervisor import SupervisorService

    monkeypatch.setenv("WORKERS", "2")
    options = tap.Options()
    options.parseOptions(["--config", "etc/rig.toml"])
    service = tap.makeService(options)
    assert isinstance(service, SupervisorService)
    assert service.supervisor.settings.workers == 2
    assert service.supervisor._config_path == "etc/rig.toml"
    assert not service.running  # built, never started


def test_twistd_rig_workers_need_a_tcp_listener(tmp_path):
    result = run_twistd(tmp_path, "-n", "rig", WORKERS="2", INBOUND_PORT="unix:rig.sock")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [(
        "rig: bad setting: INBOUND_PORT: with WORKERS=2 every listener must be a port or a tcp:"
        " or tcp6: endpoint (they share it), got 'unix:rig.sock'")]
