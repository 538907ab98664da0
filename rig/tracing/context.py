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
_VERSION_00 = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")  # the usual value, exactly
_TRACEPARENT = re.compile(
    r"[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?[ \t]*\Z")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
_LOW_BITS = (1 << 64) | 1  # the low bit of both ids in a 192-bit draw: neither is zero


def parse_traceparent(value):
    """``(trace_id, parent_id, flags)`` as lower-case hex text, or None for a value that
    W3C says to ignore (then the request starts a new trace)."""
    if not isinstance(value, str) or len(value) > MAX_TRACEPARENT:
        return None
    if _VERSION_00.fullmatch(value) is not None:  # no groups: slicing is cheaper
        trace_id, parent_id = value[3:35], value[36:52]
        if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
            return None
        return trace_id, parent_id, value[53:]
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE \
            or parent_id == _ZERO_SPAN:
        return None
    return trace_id, parent_id, flags


def request_trace_context(request):
    """``(traceparent, tracestate)`` text of a twisted.web request (None where absent)."""
    headers = request.requestHeaders
    traceparent = headers.getRawHeaders(b"traceparent")
    tracestate = headers.getRawHeaders(b"tracestate")
    return trace_context(traceparent[0] if traceparent else None,
                         b",".join(tracestate) if tracestate else None)


def trace_context(traceparent, tracestate):
    """``(traceparent, tracestate)`` text of the two headers' values (bytes; None where
    absent; several ``tracestate`` values joined with commas): no parent, no state."""
    if traceparent is None:
        return None, None
    return traceparent.decode("latin-1"), tracestate.decode("latin-1") if tracestate else None


def usable_tracestate(value):
    """The ``tracestate`` to pass on with a valid parent: kept as sent, or None when it
    is empty or longer than we propagate."""
    if not isinstance(value, str) or not value or len(value) > MAX_TRACESTATE:
        return None
    return value


def new_span_id():
    return "%016x" % (getrandbits(64) | 1)  # never all zeros, which W3C forbids


def new_traceparent():
    """A ``traceparent`` that starts a sampled trace: one random draw for both ids."""
    ids = "%048x" % (getrandbits(192) | _LOW_BITS)
    return f"00-{ids[:32]}-{ids[32:]}-01"


_CHILD_00 = re.compile(rb"00-([0-9a-f]{32})-[0-9a-f]{16}-([0-9a-f]{2})")


def child_header_lines(headers):
    """The ``traceparent`` (and ``tracestate``) request-head lines for a child of what
    *headers* (a twisted.web ``Headers``) carry, when no span is recorded: the
    proxy's path, in bytes, without building a :class:`rig.tracing.tracer.Trace`."""
    return child_lines(headers.getRawHeaders(b"traceparent"),
                       headers.getRawHeaders(b"tracestate"))


def child_lines(incoming, state):
    """:func:`child_header_lines` from the raw ``traceparent`` and ``tracestate`` values
    (lists, or None), for a caller that has read the headers already."""
    if incoming is None:
        return b"traceparent: 00-%032x-%016x-01\r\n" % (getrandbits(128) | 1,
                                                          getrandbits(64) | 1)
    value = incoming[0]
    match = _CHILD_00.fullmatch(value)
    if match is not None and value[3:35] != b"0" * 32 and value[36:52] != b"0" * 16:
        trace_id, flags = match.groups()
    else:  # another version, spaces, or invalid: the careful parser decides
        parsed = parse_traceparent(value.decode("latin-1"))
        if parsed is None:
            return b"traceparent: 00-%032x-%016x-01\r\n" % (getrandbits(128) | 1,
                                                              getrandbits(64) | 1)
        trace_id, flags = parsed[0].encode(), parsed[2].encode()
    line = b"traceparent: 00-%s-%016x-%s\r\n" % (trace_id, getrandbits(64) | 1, flags)
    if state:
        state = b",".join(state)
        if len(state) <= MAX_TRACESTATE:
            line += b"tracestate: " + state + b"\r\n"
    return line


def format_traceparent(trace_id, span_id, flags):
    return f"00-{trace_id}-{span_id}-{flags}"
