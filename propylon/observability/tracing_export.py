"""Where a Gateway's spans go: its settings resolved against this process's ``OTEL_*``
environment, and one OpenTelemetry SDK pipeline per destination.

Resolution (``resolve_tracing``): a field of ``Gateway.spec.tracing`` wins; an unset one falls
back to the OpenTelemetry environment variables of the proxy process, then to their defaults:
- endpoint: ``otlpEndpoint`` (``/v1/traces`` added when the URL has no path), else the
  exporter's own ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT``
  (+ ``/v1/traces``), else ``http://localhost:4318/v1/traces``;
- sampling: ``sampling``, else ``OTEL_TRACES_SAMPLER`` (``always_on``/``always_off`` and their
  ``parentbased_`` forms; the ratio samplers read ``OTEL_TRACES_SAMPLER_ARG``), else 1.0.
  A parent's sampled flag always decides for its trace (the gateway is parent-based);
- service name: ``serviceName``, else ``OTEL_SERVICE_NAME``, else ``propylon``;
- ``OTEL_SDK_DISABLED=true``: spans are not exported (trace context is still continued).
The exporter and batch processor read their own variables too (``OTEL_EXPORTER_OTLP_HEADERS``,
``_TIMEOUT``, ``_COMPRESSION``, ``_CERTIFICATE``, ``OTEL_BSP_MAX_QUEUE_SIZE``,
``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``, ``OTEL_RESOURCE_ATTRIBUTES``).

Pipelines (``TracerPipelines``): a ``SpanSink`` per (endpoint, service name) and process, kept
across configuration versions: the SDK's Resource (``service.name``, ``OTEL_RESOURCE_ATTRIBUTES``)
and a BatchSpanProcessor over the OTLP/HTTP exporter, which exports from the SDK's own thread;
the event loop only appends ended spans to a bounded deque, and a span that finds it full is
dropped and counted (``TRACING_COUNTERS``), so a collector that hangs or refuses costs neither
latency nor memory. At exit the pipelines get a bounded time to flush.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from propylon.ir import TracingIR
from propylon.observability.tracing_metrics import TRACING_COUNTERS

log = logging.getLogger("propylon.tracing")

DEFAULT_SERVICE_NAME = "propylon"
EXIT_FLUSH_SECONDS = 2.0  # what a stopping worker gives its exporters, all together
_RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")
_FIXED_SAMPLERS = {"always_on": 1.0, "parentbased_always_on": 1.0,
                   "always_off": 0.0, "parentbased_always_off": 0.0}


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """A Gateway's tracing as this process runs it."""

    endpoint: str | None  # None: the exporter resolves it from OTEL_EXPORTER_OTLP_*
    service_name: str
    ratio: float  # of new traces sampled (0.0-1.0)
    export: bool  # False under OTEL_SDK_DISABLED=true

    @property
    def key(self) -> tuple[str | None, str, bool]:
        """What a pipeline depends on (the ratio is the gateway's business)."""
        return self.endpoint, self.service_name, self.export


def resolve_tracing(spec: TracingIR, environ: Mapping[str, str] = os.environ
                    ) -> TracingSettings:
    endpoint = traces_url(spec.otlp_endpoint) if spec.otlp_endpoint else None
    service = spec.service_name or environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
    ratio = spec.sampling if spec.sampling is not None else env_ratio(environ)
    disabled = environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"
    return TracingSettings(endpoint, service, ratio, not disabled)


def traces_url(url: str) -> str:
    """An OTLP/HTTP endpoint as the exporter wants it: the full traces URL."""
    if urlsplit(url).path in ("", "/"):
        return url.rstrip("/") + "/v1/traces"
    return url


def env_ratio(environ: Mapping[str, str]) -> float:
    """The sampling ratio the OTEL_TRACES_SAMPLER(_ARG) variables ask for (1.0 unset)."""
    sampler = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if sampler in _FIXED_SAMPLERS:
        return _FIXED_SAMPLERS[sampler]
    if sampler and sampler not in _RATIO_SAMPLERS:
        log.warning("OTEL_TRACES_SAMPLER=%s is not supported here; sampling every trace",
                    sampler)
        return 1.0
    arg = environ.get("OTEL_TRACES_SAMPLER_ARG", "").strip()
    if not arg:
        return 1.0
    try:
        ratio = float(arg)
    except ValueError:
        ratio = -1.0
    if not 0.0 <= ratio <= 1.0:
        log.warning("OTEL_TRACES_SAMPLER_ARG=%r is not a ratio in [0, 1]; sampling every "
                    "trace", arg)
        return 1.0
    return ratio


class CountingExporter(OTLPSpanExporter):
    """The OTLP/HTTP exporter, counting what it delivered and what it gave up on."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = super().export(spans)
        if result is SpanExportResult.SUCCESS:
            TRACING_COUNTERS.exported += len(spans)
        else:
            TRACING_COUNTERS.export_failed += len(spans)
        return result


class BoundedSpanProcessor(BatchSpanProcessor):
    """The SDK's batch processor; a span that finds its queue full is counted and dropped
    here (the SDK would drop the oldest one and log each time)."""

    def __init__(self, exporter: OTLPSpanExporter) -> None:
        super().__init__(exporter)
        batch = getattr(self, "_batch_processor", None)
        # private parts of the SDK's BatchProcessor; without them the SDK still bounds it
        self._pending: Any = getattr(batch, "_queue", None)
        self._capacity: int = getattr(batch, "_max_queue_size", 0)

    def on_end(self, span: ReadableSpan) -> None:
        pending = self._pending
        if pending is not None and len(pending) >= self._capacity:
            TRACING_COUNTERS.queue_full += 1
            return
        super().on_end(span)


class SpanSink:
    """Where one pipeline's finished spans go: its resource and scope (which every span
    carries), and its batch processor (None: spans are dropped, export is off)."""

    __slots__ = ("processor", "resource", "scope")

    def __init__(self, resource: Resource, processor: BoundedSpanProcessor | None) -> None:
        self.resource = resource
        self.scope = InstrumentationScope("propylon", _version())
        self.processor = processor

    def emit(self, span: ReadableSpan) -> None:
        processor = self.processor
        if processor is not None:
            processor.on_end(span)


class TracerPipelines:
    """The span pipelines of this process, one per ``TracingSettings.key``. With
    ``export=False`` (a compilation that only checks a configuration, a benchmark) sinks
    are made without exporters or threads."""

    def __init__(self, export: bool = True) -> None:
        self.export = export
        self.sinks: dict[tuple[str | None, str, bool], SpanSink] = {}
        self._exit_hook = False

    def sink(self, settings: TracingSettings) -> SpanSink:
        sink = self.sinks.get(settings.key)
        if sink is None:
            sink = self.sinks[settings.key] = self._sink(settings)
        return sink

    def _sink(self, settings: TracingSettings) -> SpanSink:
        resource = Resource.create({SERVICE_NAME: settings.service_name})
        if not (self.export and settings.export):
            return SpanSink(resource, None)
        processor = BoundedSpanProcessor(CountingExporter(endpoint=settings.endpoint))
        if not self._exit_hook:
            self._exit_hook = True
            atexit.register(self.shutdown, EXIT_FLUSH_SECONDS)
        return SpanSink(resource, processor)

    def shutdown(self, timeout: float) -> None:
        """Flush and stop every pipeline, giving up after ``timeout`` seconds (a hung
        collector must not hold a stopping worker)."""
        processors = [s.processor for s in self.sinks.values() if s.processor is not None]
        self.sinks.clear()
        if not processors:
            return

        def shut() -> None:
            for processor in processors:
                processor.shutdown()

        done = threading.Thread(target=shut, name="propylon-tracing-exit", daemon=True)
        done.start()
        done.join(timeout)


def _version() -> str:
    try:
        return importlib.metadata.version("propylon")
    except importlib.metadata.PackageNotFoundError:
        return "0"
