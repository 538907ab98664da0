"""One worker of ``WORKERS=N`` (``python -m rig.worker``), started by :mod:`rig.supervisor`.

It runs the whole gateway as ``twistd rig`` would, with the operator's
settings plus what the supervisor's spec changes: inherited sockets, its
cluster address and seeds, its number. Its log events go to stdout as JSON
lines, which the supervisor formats with its own observers. It drains and
exits on SIGTERM or SIGINT, and also when its supervisor goes away (its stdin,
a pipe from the supervisor, closes), so no worker outlives it.
"""
import argparse
import json
import os
import signal
import sys

import attrs
from twisted.internet import protocol, stdio
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    jsonFileLogObserver,
)

from rig.logs import RepeatFilter
from rig.settings import Settings, SettingsError

log = Logger(namespace="rig.worker")


def worker_settings(spec, config_path, environ):
    """The operator's settings with the worker's spec applied (JSON lists become tuples)."""
    settings = Settings.load(config_path, environ)
    changes = {name: tuple(value) if isinstance(value, list) else value
               for name, value in spec.items()}
    return attrs.evolve(settings, **changes)


class _Lifeline(protocol.Protocol):
    """The supervisor's end of our stdin: when it closes, the supervisor is gone."""

    def __init__(self, stop):
        self._stop = stop

    def connectionLost(self, reason=None):
        self._stop()


def run(reactor, argv, environ, stdout=sys.stdout):
    """Run one worker until it is told to stop; its exit status."""
    from rig.service import RigService

    parser = argparse.ArgumentParser(prog="python -m rig.worker")
    parser.add_argument("--spec", required=True, help="JSON: the settings this worker changes")
    parser.add_argument("--config", default=None)
    args = parser.parse_args(argv)
    try:
        settings = worker_settings(json.loads(args.spec), args.config, environ)
    except (SettingsError, ValueError, TypeError) as error:
        print(f"rig worker: bad setting: {error}", file=sys.stderr)
        return 1
    level = LogLevel.levelWithName(settings.log_level)
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(
        RepeatFilter(jsonFileLogObserver(stdout, recordSeparator="")),
        [LogLevelFilterPredicate(defaultLogLevel=level)])], redirectStandardIO=False)
    service = RigService.build(settings, reactor, environ=environ)
    outcome = {"status": 0, "stopping": False}

    def stop(*_):
        if not outcome["stopping"]:
            outcome["stopping"] = True
            reactor.callFromThread(reactor.stop)

    def start():
        try:
            service.startService()
        except Exception:
            log.failure("Worker {index} could not start", index=settings.worker_index)
            outcome["status"] = 1
            stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with open(os.devnull, "wb") as devnull:
        stdio.StandardIO(_Lifeline(stop), stdin=0, stdout=devnull.fileno(), reactor=reactor)
        reactor.callWhenRunning(start)
        reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
        reactor.run(installSignalHandlers=False)
    return outcome["status"]


if __name__ == "__main__":
    from rig.tap import run_worker

    sys.exit(run_worker(sys.argv[1:]))
