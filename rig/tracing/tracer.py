"""Spans for the gateway's work: lean when nothing is exported, OpenTelemetry when it is.

Every proxied request, external check and Redis target event carries a
``traceparent`` that is a child of the incoming one, exported or not. Without
an exporter a :class:`Trace` is just the headers to pass on (a few
microseconds per request, see benchmarks/README.rst "Tracing"); with one, the
OpenTelemetry SDK records a span whose times come from the reactor's clock.
"""
from opentelemetry import trace as otel
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

from rig.tracing.context import (
    format_traceparent,
    new_span_id,
    new_traceparent,
    parse_traceparent,
    request_trace_context,
    usable_tracestate,
)

SERVER, CLIENT, PRODUCER, CONSUMER = (SpanKind.SERVER, SpanKind.CLIENT, SpanKind.PRODUCER,
                                      SpanKind.CONSUMER)


class Trace:
    """One traced piece of work as the code around it sees it: what to pass on."""

    __slots__ = ("traceparent", "tracestate")

    def __init__(self, traceparent, tracestate=None):
        self.traceparent = traceparent
        self.tracestate = tracestate

    def header_lines(self):
        """The headers for an HTTP request head, as bytes."""
        if self.tracestate:
            return (f"traceparent: {self.traceparent}\r\ntracestate: {self.tracestate}\r\n"
                    .encode("latin-1", "replace"))
        return f"traceparent: {self.traceparent}\r\n".encode()

    def headers(self):
        """The headers as a dict of text, for treq."""
        headers = {"traceparent": self.traceparent}
        if self.tracestate:
            headers["tracestate"] = self.tracestate
        return headers

    def attributes(self):
        """The CloudEvents distributed-tracing extension attributes."""
        attributes = {"traceparent": self.traceparent}
        if self.tracestate:
            attributes["tracestate"] = self.tracestate
        return attributes

    def end(self, status_code=None, *, error=None, attributes=None):
        """Nothing is recorded without an exporter."""


class RecordedTrace(Trace):
    """A :class:`Trace` whose OpenTelemetry span is exported when it ends."""

    __slots__ = ("_clock", "_span")

    def __init__(self, span, clock):
        context = span.get_span_context()
        super().__init__(
            format_traceparent(f"{context.trace_id:032x}", f"{context.span_id:016x}",
                               f"{int(context.trace_flags):02x}"),
            context.trace_state.to_header() or None)
        self._span = span
        self._clock = clock

    def end(self, status_code=None, *, error=None, attributes=None):
        span = self._span
        if attributes:
            span.set_attributes(attributes)
        if status_code is not None:
            span.set_attribute("http.response.status_code", status_code)
            if status_code >= 500:
                span.set_status(Status(StatusCode.ERROR))
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=_nanoseconds(self._clock))


class Tracing:
    """Starts traces; records spans with *provider*'s tracer (an SDK ``TracerProvider``),
    or none when *provider* is None."""

    def __init__(self, clock, provider=None):
        self._clock = clock
        self.provider = provider
        self._tracer = provider.get_tracer("rig") if provider is not None else None

    @property
    def exporting(self):
        return self._tracer is not None

    def start(self, name, traceparent=None, tracestate=None, *, kind=SERVER, attributes=None):
        """A :class:`Trace` that is a child of *traceparent* (text; ignored when invalid,
        then a new trace starts), with *tracestate* kept when the parent is valid."""
        parent = parse_traceparent(traceparent) if traceparent else None
        if self._tracer is None:
            if parent is None:
                return Trace(new_traceparent())
            trace_id, _parent_id, flags = parent
            return Trace(format_traceparent(trace_id, new_span_id(), flags),
                         usable_tracestate(tracestate))
        context = None
        if parent is not None:
            trace_id, parent_id, flags = parent
            state = usable_tracestate(tracestate)
            remote = SpanContext(int(trace_id, 16), int(parent_id, 16), is_remote=True,
                                 trace_flags=TraceFlags(int(flags, 16)),
                                 trace_state=TraceState.from_header([state]) if state else None)
            context = otel.set_span_in_context(NonRecordingSpan(remote))
        span = self._tracer.start_span(name, context=context, kind=kind, attributes=attributes,
                                       start_time=_nanoseconds(self._clock))
        return RecordedTrace(span, self._clock)

    def start_from_request(self, name, request, *, kind=SERVER, attributes=None):
        """:meth:`start` with the parent from a twisted.web request's headers."""
        return self.start(name, *request_trace_context(request), kind=kind,
                          attributes=attributes)


def _nanoseconds(clock):
    return int(clock.seconds() * 1e9)
