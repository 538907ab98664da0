"""Trace context, spans on a Clock and the reactor's batch exporter (issue 16)."""
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import trace as otel
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.web.http_headers import Headers

from rig.settings import Settings
from rig.tracing.config import build_tracing, export_targets
from rig.tracing.context import child_header_lines, parse_traceparent
from rig.tracing.export import ReactorBatchProcessor, shown_url
from rig.tracing.tracer import Tracing
from tests.test_settings import error_for

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"

hex_text = st.text(alphabet="0123456789abcdefABCDEF-", min_size=0, max_size=4)
pieces = st.tuples(
    st.sampled_from(["00", "01", "ff", "0g", "0"]),
    st.sampled_from([TRACE_ID, "0" * 32, TRACE_ID.upper(), TRACE_ID[:31]]),
    st.sampled_from([PARENT, "0" * 16, PARENT[:15]]),
    st.sampled_from(["01", "00", "ff", "1"]),
    st.sampled_from(["", "-x", "-", "  ", "\t"]),
    st.sampled_from(["", " "]),
)


@given(pieces)
def test_the_parser_agrees_with_opentelemetrys_propagator(parts):
    version, trace_id, parent, flags, rest, lead = parts
    value = f"{lead}{version}-{trace_id}-{parent}-{flags}{rest}"
    context = otel.get_current_span(
        TraceContextTextMapPropagator().extract({"traceparent": value})).get_span_context()
    ours = parse_traceparent(value)
    if not context.is_valid:
        assert ours is None
    else:
        assert ours == (f"{context.trace_id:032x}", f"{context.span_id:016x}",
                        f"{int(context.trace_flags):02x}")


@given(pieces, st.sampled_from([None, "a=1", "a=1," + "b" * 600]))
def test_the_proxys_header_lines_are_the_child_a_trace_would_be(parts, state):
    version, trace_id, parent, flags, rest, lead = parts
    value = f"{lead}{version}-{trace_id}-{parent}-{flags}{rest}"
    headers = Headers({b"traceparent": [value.encode()]})
    if state is not None:
        headers.setRawHeaders(b"tracestate", [state.encode()])
    lines = child_header_lines(headers).decode().split("\r\n")
    expected = Tracing(Clock()).start("x", value, state)
    child = parse_traceparent(lines[0].removeprefix("traceparent: "))
    assert lines[0].startswith("traceparent: 00-") and child is not None
    parent_ids = parse_traceparent(value)
    if parent_ids is None:
        assert child[0] != trace_id and child[2] == "01" and lines[1] == ""
    else:
        assert (child[0], child[2]) == (parent_ids[0], parent_ids[2]) != (None, None)
        assert child[1] != parent_ids[1]
        assert lines[1] == (f"tracestate: {expected.tracestate}" if expected.tracestate
                            else "")
    assert child_header_lines(Headers()).startswith(b"traceparent: 00-")


@given(st.text(max_size=80))
def test_any_text_parses_or_is_ignored(value):
    parsed = parse_traceparent(value)
    assert parsed is None or len(parsed[0]) == 32
    assert parse_traceparent("00-" + TRACE_ID + "-" + PARENT + "-01" + "x" * 600) is None


def test_lean_traces_are_children_or_new_sampled_traces():
    tracing = Tracing(Clock())
    child = tracing.start("x", f"00-{TRACE_ID}-{PARENT}-00", "a=1")
    trace_id, span_id, flags = parse_traceparent(child.traceparent)
    assert (trace_id, flags, child.tracestate) == (TRACE_ID, "00", "a=1")
    assert span_id != PARENT
    assert child.header_lines() == (
        f"traceparent: {child.traceparent}\r\ntracestate: a=1\r\n".encode())
    fresh = tracing.start("x", "not a traceparent", "a=1")
    assert parse_traceparent(fresh.traceparent)[2] == "01" and fresh.tracestate is None
    long_state = tracing.start("x", f"00-{TRACE_ID}-{PARENT}-01", "a=" + "1" * 600)
    assert long_state.tracestate is None
    assert child.attributes() == {"traceparent": child.traceparent, "tracestate": "a=1"}
    child.end(200)  # nothing to record, nothing fails


class Sender:
    """Records batches; answers each with the next Deferred a test hands out."""

    url = "http://collector:4318/v1/traces"

    def __init__(self):
        self.batches = []
        self.pending = []

    def send(self, spans):
        self.batches.append(list(spans))
        answer = defer.Deferred()
        self.pending.append(answer)
        return answer


def recording(clock, sender, **options):
    settings = Settings(otel_exporter_otlp_endpoint="http://collector:4318")
    tracing, service = build_tracing(settings, clock)
    processor = ReactorBatchProcessor(clock, sender, **options)
    tracing.provider.add_span_processor(processor)
    return tracing, processor, service


def test_recorded_spans_take_the_clocks_time_and_their_parent():
    clock = Clock()
    clock.advance(1000.5)
    tracing, _processor, _service = recording(clock, Sender())
    trace = tracing.start("GET /x", f"00-{TRACE_ID}-{PARENT}-01", "k=v",
                          attributes={"url.path": "/x"})
    clock.advance(0.25)
    trace.end(503)
    span = trace._span
    assert (span.start_time, span.end_time) == (1000_500_000_000, 1000_750_000_000)
    assert f"{span.parent.span_id:016x}" == PARENT
    assert trace.traceparent == f"00-{TRACE_ID}-{span.context.span_id:016x}-01"
    assert trace.tracestate == "k=v"
    assert span.attributes["http.response.status_code"] == 503
    assert span.status.status_code.name == "ERROR"


def test_an_unsampled_parent_is_followed_and_not_recorded():
    clock = Clock()
    sender = Sender()
    tracing, processor, _service = recording(clock, sender)
    processor.start()
    trace = tracing.start("GET /x", f"00-{TRACE_ID}-{PARENT}-00")
    trace.end(200)
    trace_id, span_id, flags = parse_traceparent(trace.traceparent)
    assert (trace_id, flags) == (TRACE_ID, "00") and span_id != PARENT
    clock.advance(10)
    assert sender.batches == []


def test_batches_go_out_on_the_timer_or_at_once_when_full_and_one_at_a_time():
    clock = Clock()
    sender = Sender()
    tracing, processor, _service = recording(clock, sender, delay=5.0, max_batch=3,
                                             max_queue=5)
    processor.start()
    tracing.start("a").end()
    clock.advance(4.9)
    assert sender.batches == []
    clock.advance(0.1)
    assert [len(batch) for batch in sender.batches] == [1]
    for name in "bcdefgh":
        tracing.start(name).end()
    clock.advance(0)  # a full batch does not wait for the timer, but one is in flight
    assert len(sender.batches) == 1
    assert processor.counts["dropped"] == 2  # the queue holds 5
    sender.pending[0].callback(200)
    clock.advance(0)
    assert [len(batch) for batch in sender.batches] == [1, 3]
    sender.pending[1].callback(200)
    clock.advance(5)
    assert [len(batch) for batch in sender.batches] == [1, 3, 2]
    sender.pending[2].callback(200)
    assert processor.counts == {"exported": 6, "failed": 0, "dropped": 2}


def test_failures_are_counted_and_logged_once_per_outage(log_events):
    clock = Clock()
    sender = Sender()
    sender.url = "https://user:secret@collector:4318/v1/traces?key=k"
    tracing, processor, _service = recording(clock, sender, delay=1.0)
    processor.start()
    for answer in (lambda d: d.errback(ConnectionError("refused")), lambda d: d.callback(500),
                   lambda d: d.callback(204)):
        tracing.start("x").end()
        clock.advance(1)
        answer(sender.pending[-1])
    assert processor.counts == {"exported": 1, "failed": 2, "dropped": 0}
    texts = [event["log_format"].format(**event) for event in log_events
             if event.get("log_namespace") == "rig.tracing.export.ReactorBatchProcessor"]
    assert texts == [
        ("Span export to https://collector:4318/v1/traces failed (refused); spans are dropped"
         " until it answers"),
        "Span export to https://collector:4318/v1/traces works again",
    ]


def test_stopping_sends_the_queue_but_never_waits_longer_than_the_timeout():
    clock = Clock()
    sender = Sender()
    tracing, processor, _service = recording(clock, sender, delay=60.0, max_batch=2)
    processor.start()
    for name in "abc":
        tracing.start(name).end()
    clock.advance(0)
    sender.pending[0].callback(200)
    stopping = defer.ensureDeferred(processor.stop(timeout=3.0))
    assert [len(batch) for batch in sender.batches] == [2, 1]
    assert not stopping.called
    clock.advance(3.0)  # the collector never answers the last batch
    assert stopping.called
    assert clock.getDelayedCalls() == []


def test_exporters_from_settings_and_their_errors():
    assert export_targets(Settings()) == []
    assert build_tracing(Settings(), Clock())[1] is None
    settings = Settings.from_mapping({}, {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318/", "JAEGER_HOST": "jaeger",
        "ZIPKIN_ADDR": "http://zipkin:9411", "ZIPKIN_SERVICE_NAME": "z",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=a%20b"})
    assert [(t.kind, t.url, t.service_name) for t in export_targets(settings)] == [
        ("otlp", "http://otel:4318/v1/traces", "rig"),
        ("otlp", "http://jaeger:4318/v1/traces", "rig"),
        ("zipkin", "http://zipkin:9411/api/v2/spans", "z")]
    assert settings.otel_exporter_otlp_headers == (("api-key", "a b"),)
    assert "a b" not in repr(settings)
    jaeger = Settings.from_mapping({}, {"JAEGER_HOST": "::1", "JAEGER_PORT": "14318"})
    assert export_targets(jaeger)[0].url == "http://[::1]:14318/v1/traces"
    message = error_for(environ={"OTEL_EXPORTER_OTLP_HEADERS": "api-key"})
    assert message.startswith("OTEL_EXPORTER_OTLP_HEADERS: entry 1 is not")
    assert "api-key" not in message
    assert error_for(environ={"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}).startswith(
        "OTEL_EXPORTER_OTLP_PROTOCOL: only http/protobuf")
    assert error_for(environ={"OTEL_TRACES_SAMPLER_ARG": "2"}).startswith(
        "OTEL_TRACES_SAMPLER_ARG: must be a number from 0 to 1")
    assert error_for(environ={"OTEL_TRACES_SAMPLER": "sometimes"}).startswith(
        "OTEL_TRACES_SAMPLER: must be one of")
    assert error_for(environ={"JAEGER_PORT": "70000"}).startswith("JAEGER_PORT:")
    assert shown_url("http://u:p@h:1/v1/traces?k=1#f") == "http://h:1/v1/traces"


def test_a_ratio_sampler_records_about_that_share():
    clock = Clock()
    tracing, _service = build_tracing(Settings(
        otel_exporter_otlp_endpoint="http://c:4318", otel_traces_sampler="traceidratio",
        otel_traces_sampler_arg=0.25), clock)
    recorded = sum(tracing.start("x")._span.is_recording() for _ in range(2000))
    assert 350 < recorded < 650
