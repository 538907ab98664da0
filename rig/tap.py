"""``twistd rig``: parse and validate the settings, then build the service tree.

Loaded lazily through ``twisted/plugins/rig_plugin.py``.
"""

import os
import sys
from typing import ClassVar

from twisted.python import usage

from rig.logs import make_observer
from rig.settings import Settings, SettingsError


class Options(usage.Options):
    synopsis = "[--config FILE]"
    longdesc = (
        "Run the Reactive Interaction Gateway. Settings come from built-in defaults, "
        "then the optional TOML file, then RIG's environment variables (INBOUND_PORT, "
        "API_HTTP_PORT, LOG_LEVEL, ...), which win."
    )
    optParameters: ClassVar[list] = [
        ["config", "c", None, "Path to a rig.toml settings file (optional)."],
    ]

    def postOptions(self):
        """Fail before anything starts, with one line and status 1 (never a traceback)."""
        try:
            self.settings = Settings.load(self["config"], os.environ)
        except SettingsError as error:
            raise SystemExit(f"rig: bad setting: {error}") from None
        parent = getattr(self, "parent", None)
        if parent is not None:
            _offer_logger(parent, self.settings)


def makeService(options):
    """Build (never start) the service tree; the one place the global reactor is imported.

    With ``WORKERS`` > 1 the tree is a supervisor of that many worker processes.
    """
    from twisted.internet import reactor

    from rig.gctune import tune_once_running

    tune_once_running(reactor)
    _lean_dispatch(reactor)
    if options.settings.workers > 1:
        from rig.supervisor import SupervisorService

        return SupervisorService.build(options.settings, reactor, environ=os.environ,
                                       config_path=options["config"])
    from rig.service import RigService

    return RigService.build(options.settings, reactor, environ=os.environ)


def run_worker(argv):
    """``python -m rig.worker``: one worker process of a supervisor (see rig.worker)."""
    from twisted.internet import reactor

    from rig.gctune import tune_once_running
    from rig.worker import run

    tune_once_running(reactor)
    _lean_dispatch(reactor)
    return run(reactor, argv, dict(os.environ))


def _lean_dispatch(reactor):
    """For a process about to run its reactor (not a test run whose reactor already
    runs), socket events go to their handlers without Twisted's legacy log context."""
    if not reactor.running:
        from rig.twistedcompat import lean_dispatch

        lean_dispatch(reactor)


def _offer_logger(parent, settings):
    """Give twistd an observer honouring LOG_LEVEL/LOG_FMT unless the user chose one.

    twistd builds its AppLogger from ``parent["logger"]`` after parsing, but
    its own ``postOptions`` runs after ours and passes any ``logger`` value
    through ``namedAny``, which only takes a dotted name. So the factory is set
    once that has run, by wrapping this one parent's ``postOptions``.
    """
    if "logger" not in parent or parent.get("logger") or parent.get("syslog"):
        return
    parent_post_options = parent.postOptions

    def post_options():
        parent_post_options()
        if not parent.get("logger"):
            parent["logger"] = _ObserverFactory(
                settings.log_level, settings.log_fmt, _log_path(parent)
            )

    parent.postOptions = post_options


def _log_path(parent):
    """twistd's own choice: ``-`` is stdout, and so is no file in the foreground.

    A daemon without ``--logfile`` writes ``twistd.log``, as twistd does,
    because its stdout is about to become ``/dev/null``.
    """
    path = parent.get("logfile")
    if path == "-" or (not path and parent.get("nodaemon")):
        return None
    return path or "twistd.log"


class _ObserverFactory:
    """Zero-argument observer factory; opens the log file only when twistd starts logging."""

    def __init__(self, level, fmt, path):
        self.level = level
        self.fmt = fmt
        self.path = path

    def __call__(self):
        if self.path is None:
            stream = sys.stdout
        else:
            stream = open(self.path, "a", buffering=1, encoding="utf-8")
        return make_observer(self.level, self.fmt, stream)
