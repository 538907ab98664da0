"""Which exporters the settings ask for, and the tracing built from them.

Exporters (any combination; none means no span is recorded, but every backend
still gets a ``traceparent``):

* OTLP over HTTP/protobuf at ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, or at
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` + ``/v1/traces``, as the OpenTelemetry
  specification defines them;
* Zipkin v2 JSON at ``ZIPKIN_ADDR`` (RIG's variable; a bare ``http://host:9411``
  gets ``/api/v2/spans``);
* Jaeger at ``JAEGER_HOST``: RIG spoke to the Jaeger agent's UDP port 6831,
  which current Jaeger versions have dropped; spans go to Jaeger's OTLP/HTTP
  receiver instead, port 4318 while ``JAEGER_PORT`` is an agent port (6831, 6832).
"""
import re
from urllib.parse import unquote, urlsplit

import attrs
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    TraceIdRatioBased,
)
from treq.client import HTTPClient
from twisted.application.service import Service
from twisted.internet import defer
from twisted.web.client import Agent, HTTPConnectionPool

from rig.auth.authority import OutboundHTTP
from rig.tracing.export import OTLPSender, ReactorBatchProcessor, ZipkinSender
from rig.tracing.tracer import Tracing

SAMPLERS = ("always_on", "always_off", "traceidratio", "parentbased_always_on",
            "parentbased_always_off", "parentbased_traceidratio")
JAEGER_AGENT_PORTS = (6831, 6832)
JAEGER_OTLP_PORT = 4318
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


def parse_pairs(value, *, what):
    """``key=value,key2=value2`` (values percent-decoded) as a tuple of pairs; errors name
    the entry's position, never its text (header values may be credentials)."""
    if isinstance(value, dict):
        items = [f"{key}={val}" for key, val in value.items()]
    elif isinstance(value, str):
        items = [item for item in value.split(",") if item.strip()]
    else:
        raise TypeError(f"must be a string of key=value pairs or a table ({what})")
    pairs = []
    for position, item in enumerate(items, 1):
        key, equals, text = item.partition("=")
        key, text = key.strip(), unquote(text.strip())
        if not equals or not _TOKEN.match(key) or "\r" in text or "\n" in text:
            raise ValueError(f"entry {position} is not a key=value pair ({what})")
        pairs.append((key, text))
    return tuple(pairs)


def otlp_headers(value):
    return parse_pairs(value, what="header names and values, comma-separated")


def resource_attributes(value):
    return parse_pairs(value, what="resource attributes")


def compression(value):
    text = str(value).strip().lower()
    if text not in ("none", "gzip"):
        raise ValueError(f"must be none or gzip, got {value!r}")
    return text


def protocol(value):
    text = str(value).strip().lower()
    if text != "http/protobuf":
        raise ValueError(f"only http/protobuf is supported, got {value!r}")
    return text


def sampler_name(value):
    text = str(value).strip().lower()
    if text not in SAMPLERS:
        raise ValueError(f"must be one of {', '.join(SAMPLERS)}, got {value!r}")
    return text


def ratio(value):
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"must be a number from 0 to 1, got {value!r}") from None
    if isinstance(value, bool) or not 0.0 <= number <= 1.0:
        raise ValueError(f"must be a number from 0 to 1, got {value!r}")
    return number


def zipkin_url(url):
    """RIG's ``ZIPKIN_ADDR`` may be the collector's base address or its span API."""
    if urlsplit(url).path in ("", "/"):
        return url.rstrip("/") + "/api/v2/spans"
    return url


@attrs.frozen
class ExportTarget:
    kind: str  # "otlp" or "zipkin"
    url: str
    service_name: str
    headers: tuple = attrs.field(default=(), repr=False)  # may hold credentials


def export_targets(settings):
    """The exporters *settings* configure, in a fixed order."""
    targets = []
    name = settings.otel_service_name
    if settings.otel_exporter_otlp_traces_endpoint:
        targets.append(ExportTarget("otlp", settings.otel_exporter_otlp_traces_endpoint,
                                    name or "rig", settings.otel_exporter_otlp_headers))
    elif settings.otel_exporter_otlp_endpoint:
        targets.append(ExportTarget(
            "otlp", settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces",
            name or "rig", settings.otel_exporter_otlp_headers))
    if settings.jaeger_host:
        port = settings.jaeger_port
        port = JAEGER_OTLP_PORT if port in JAEGER_AGENT_PORTS else port
        host = f"[{settings.jaeger_host}]" if ":" in settings.jaeger_host else settings.jaeger_host
        targets.append(ExportTarget("otlp", f"http://{host}:{port}/v1/traces",
                                    name or settings.jaeger_service_name))
    if settings.zipkin_addr:
        targets.append(ExportTarget("zipkin", zipkin_url(settings.zipkin_addr),
                                    name or settings.zipkin_service_name))
    return targets


def make_sampler(name, argument):
    root = {"always_on": ALWAYS_ON, "always_off": ALWAYS_OFF,
            "traceidratio": TraceIdRatioBased(argument)}[name.removeprefix("parentbased_")]
    return ParentBased(root) if name.startswith("parentbased_") else root


class TracingService(Service):
    """Starts the exporters' timers; on stop, sends what is queued (bounded by the
    export timeout) and closes their connections."""

    def __init__(self, processors, pool, timeout):
        self.processors = processors
        self._pool = pool
        self._timeout = timeout

    def startService(self):
        super().startService()
        for processor in self.processors:
            processor.start()

    def stopService(self):
        super().stopService()
        stopping = [defer.ensureDeferred(p.stop(self._timeout)) for p in self.processors]
        done = defer.DeferredList(stopping, consumeErrors=True)
        return done.addCallback(lambda _: self._pool.closeCachedConnections())


def build_tracing(settings, reactor, *, node=None):
    """``(Tracing, TracingService or None)`` for *settings*."""
    targets = export_targets(settings)
    if not targets:
        return Tracing(reactor), None
    attributes = dict(settings.otel_resource_attributes)
    attributes["service.name"] = targets[0].service_name
    if node is not None:
        attributes.setdefault("service.instance.id", node)
    provider = TracerProvider(
        sampler=make_sampler(settings.otel_traces_sampler, settings.otel_traces_sampler_arg),
        resource=Resource(attributes), shutdown_on_exit=False)
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 2
    http = OutboundHTTP(HTTPClient(Agent(reactor, pool=pool)),
                        timeout=settings.otel_exporter_otlp_timeout)
    processors = []
    for target in targets:
        if target.kind == "zipkin":
            sender = ZipkinSender(http.post_status, target.url, service_name=target.service_name)
        else:
            sender = OTLPSender(http.post_status, target.url,
                                headers=target.headers,
                                compression=settings.otel_exporter_otlp_compression)
        processor = ReactorBatchProcessor(
            reactor, sender, delay=settings.otel_bsp_schedule_delay,
            max_queue=settings.otel_bsp_max_queue_size,
            max_batch=settings.otel_bsp_max_export_batch_size)
        provider.add_span_processor(processor)
        processors.append(processor)
    return Tracing(reactor, provider), TracingService(processors, pool,
                                                      settings.otel_exporter_otlp_timeout)
