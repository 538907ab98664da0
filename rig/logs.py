"""Log observers for twistd: text or JSON lines, filtered by level.

Under plain ``twistd`` the service cannot choose its own observer, so
:mod:`rig.tap` hands twistd a factory built from the settings, and
``twistd --logger rig.logs.observer`` offers the same from the environment.
"""

import datetime
import json
import os
import sys

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    textFileLogObserver,
)

LEVELS = ("debug", "info", "warn", "error")
FORMATS = ("text", "json")


def parse_level(text):
    """Normalise a LOG_LEVEL value (case-insensitive, ``warning`` means ``warn``)."""
    if isinstance(text, str):
        level = text.strip().lower()
        level = "warn" if level == "warning" else level
        if level in LEVELS:
            return level
    raise ValueError(f"must be one of debug, info, warn, error, got {text!r}")


def parse_format(text):
    """Normalise a LOG_FMT value; RIG's ``erlang`` is text and its ``gcl`` is JSON."""
    if isinstance(text, str):
        fmt = text.strip().lower()
        fmt = {"erlang": "text", "gcl": "json"}.get(fmt, fmt)
        if fmt in FORMATS:
            return fmt
    raise ValueError(f"must be text or json (or RIG's erlang or gcl), got {text!r}")


def make_observer(level, fmt, stream):
    """An observer writing events at ``level`` or above to ``stream``.

    JSON output is one object per line (no RFC 7464 separator) so journald
    and log shippers can read it as it is. A message repeated within 10 s is
    written once (see :class:`RepeatFilter`).
    """
    if parse_format(fmt) == "json":
        writer = FileLogObserver(stream, json_line)
    else:
        writer = textFileLogObserver(stream)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(parse_level(level)))
    return FilteringLogObserver(RepeatFilter(writer), [predicate])


class RepeatFilter:
    """Passes on at most *burst* events of one kind (namespace and message template) per
    *window* seconds; the first one after that says how many were held back. At the
    open-file limit Twisted logs every socket it closes to recover, hundreds of lines
    a second: this keeps a few every *window* seconds."""

    def __init__(self, observer, window=10.0, burst=10, max_kinds=1000):
        self._observer = observer
        self._window = window
        self._burst = burst
        self._max_kinds = max_kinds
        self._recent = {}  # kind -> [window start, passed on, held back]

    def __call__(self, event):
        template = event.get("log_format")
        kind = (event.get("log_namespace"),
                template if isinstance(template, str) else formatEvent(event)[:1000])
        now = event.get("log_time", 0.0)
        recent = self._recent.get(kind)
        if recent is not None and now - recent[0] < self._window:
            if recent[1] >= self._burst:
                recent[2] += 1
                return
            recent[1] += 1
            self._observer(event)
            return
        held = recent[2] if recent is not None else 0
        if len(self._recent) >= self._max_kinds:
            self._forget(now)
        self._recent[kind] = [now, 1, 0]
        if held and isinstance(template, str):
            event = dict(event, log_format=template + " ({log_held_back} more like this in"
                         " the {log_window:g} s before were not logged)",
                         log_held_back=held, log_window=self._window)
        self._observer(event)

    def _forget(self, now):
        for kind, (start, _passed, _held) in list(self._recent.items()):
            if now - start >= self._window:
                del self._recent[kind]
        if len(self._recent) >= self._max_kinds:
            self._recent.clear()


_PLAIN = (str, int, float, bool, type(None))


def json_line(event):
    """One event as one JSON object: ``time``, ``level``, ``namespace``, the
    formatted ``message``, plain fields of the event, and a ``traceback``."""
    record = {
        "time": datetime.datetime.fromtimestamp(
            event.get("log_time", 0), datetime.UTC).isoformat(timespec="microseconds"),
        "level": getattr(event.get("log_level"), "name", "info"),
        "namespace": event.get("log_namespace", ""),
        "message": formatEvent(event),
    }
    for key, value in event.items():
        if not key.startswith("log_") and key not in record and isinstance(value, _PLAIN):
            record[key] = value
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    return json.dumps(record, default=str) + "\n"


def observer():
    """Factory for ``twistd --logger rig.logs.observer``: LOG_LEVEL and LOG_FMT from os.environ."""
    level = os.environ.get("LOG_LEVEL", "").strip() or "info"
    fmt = os.environ.get("LOG_FMT", "").strip() or "text"
    return make_observer(level, fmt, sys.stdout)
