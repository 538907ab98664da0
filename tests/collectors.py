"""Span receivers for the tracing tests: real HTTP servers on loopback that decode what
the gateway exports, as an OpenTelemetry Collector (OTLP/HTTP protobuf) and a Zipkin
server (v2 JSON) would."""
import gzip
import json

import attrs
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from twisted.internet import defer, reactor
from twisted.web import resource, server

from rig.testing import eventually


@attrs.define
class ReceivedSpan:
    """What the tests compare, whichever format it came in (ids as lower-case hex)."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    service: str
    attributes: dict
    start_ns: int
    end_ns: int


class _Receiver(resource.Resource):
    isLeaf = True
    path = b"/"
    status = 200  # what the collector answers (a test may make it refuse)

    def __init__(self):
        super().__init__()
        self.spans = []
        self.requests = []  # (path, headers) of every export request
        self.port = reactor.listenTCP(0, server.Site(self), interface="127.0.0.1")

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port.getHost().port}"

    def render_POST(self, request):
        body = request.content.read()
        self.requests.append((request.path, {
            name.decode().lower(): values[0].decode()
            for name, values in request.requestHeaders.getAllRawHeaders()}))
        if request.getHeader(b"content-encoding") == b"gzip":
            body = gzip.decompress(body)
        if request.path == self.path and self.status == 200:
            self.spans.extend(self.decode(body))
        request.setResponseCode(self.status if request.path == self.path else 404)
        return b"{}"

    async def wait_for(self, predicate, timeout=10.0):
        """The received spans that match *predicate*, once there is at least one."""
        await eventually(reactor, lambda: [s for s in self.spans if predicate(s)],
                         seconds=timeout, what="the spans")
        return [span for span in self.spans if predicate(span)]

    async def stop(self):
        await defer.maybeDeferred(self.port.stopListening)


class OTLPReceiver(_Receiver):
    path = b"/v1/traces"

    @staticmethod
    def decode(body):
        message = ExportTraceServiceRequest.FromString(body)
        spans = []
        for resource_spans in message.resource_spans:
            service = next((a.value.string_value for a in resource_spans.resource.attributes
                            if a.key == "service.name"), "")
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    attributes = {}
                    for attribute in span.attributes:
                        value = attribute.value
                        attributes[attribute.key] = getattr(value, value.WhichOneof("value"))
                    spans.append(ReceivedSpan(
                        span.trace_id.hex(), span.span_id.hex(),
                        span.parent_span_id.hex() or None, span.name,
                        span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_").lower(),
                        service, attributes, span.start_time_unix_nano,
                        span.end_time_unix_nano))
        return spans


class ZipkinReceiver(_Receiver):
    path = b"/api/v2/spans"

    @staticmethod
    def decode(body):
        return [ReceivedSpan(
            span["traceId"], span["id"], span.get("parentId"), span["name"],
            span.get("kind", "").lower(), span["localEndpoint"]["serviceName"],
            span.get("tags", {}), span["timestamp"] * 1000,
            (span["timestamp"] + span.get("duration", 0)) * 1000) for span in json.loads(body)]
