"""W3C Trace Context headers (``traceparent``, ``tracestate``), parsed and minted cheaply.

The gateway sends every backend a ``traceparent`` whether or not spans are
exported (RIG does too), so this runs on each proxied request: one regular
expression to read the incoming header, one ``getrandbits`` per new id. When
spans are exported, the OpenTelemetry SDK mints the ids instead; a test checks
that this parser agrees with the SDK's propagator.
"""
import re
from random import getrandbits

MAX_TRACEPARENT = 512  # longer values are ignored (as OpenTelemetry's propagator does)
MAX_TRACESTATE = 512  # what W3C asks every vendor to propagate at least
_TRACEPARENT = re.compile(
    r"[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?[ \t]*\Z")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def parse_traceparent(value):
    """``(trace_id, parent_id, flags)`` as lower-case hex text, or None for a value that
    W3C says to ignore (then the request starts a new trace)."""
    if not isinstance(value, str) or len(value) > MAX_TRACEPARENT:
        return None
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE \
            or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id, flags


def usable_tracestate(value):
    """The ``tracestate`` to pass on with a valid parent: kept as sent, or None when it
    is empty or longer than we propagate."""
    if not isinstance(value, str) or not value or len(value) > MAX_TRACESTATE:
        return None
    return value


def new_span_id():
    return "%016x" % (getrandbits(64) or 1)


def new_trace_id():
    return "%032x" % (getrandbits(128) or 1)


def format_traceparent(trace_id, span_id, flags):
    return f"00-{trace_id}-{span_id}-{flags}"
