"""Metrics and traces (OpenTelemetry) for every service process, set up once at the entry point.

Metrics: the instruments live in `payments.runtime.metrics` and are created from OpenTelemetry's global
API, so code records into them whether or not a process configured anything (unit tests: no-ops).
`configure_metrics` installs the SDK's MeterProvider with a Prometheus reader; the health server serves
the exposition on `/metrics` next to `/healthz` and `/readyz` (payments.runtime.health).

Traces: `configure_tracing` installs a TracerProvider whose exporter is chosen by configuration
(`otlp`: OTLP over HTTP to OTEL_EXPORTER_OTLP_ENDPOINT, `console`: JSON on stderr, `none`) and whose
sampler keeps `ratio` of the traces that start here, following a parent's decision otherwise
(ParentBased(TraceIdRatioBased)). Spans follow OpenTelemetry's messaging semantic conventions
(payments.runtime.tracing).
"""

from __future__ import annotations

import sys
from typing import Final, Literal

from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

Exporter = Literal["none", "console", "otlp"]
EXPORTERS: Final = ("none", "console", "otlp")
SERVICE_NAMESPACE: Final = "payments"
_configured: set[str] = set()


def resource(service: str, instance_id: str) -> Resource:
    return Resource.create({"service.name": service, "service.namespace": SERVICE_NAMESPACE,
                            "service.instance.id": instance_id})


def configure_metrics(service: str, instance_id: str) -> None:
    """The SDK's MeterProvider with a Prometheus reader (registered with prometheus_client's default
    registry, which `exposition()` renders). Once per process: a second call is a no-op."""
    if "metrics" in _configured:
        return
    metrics.set_meter_provider(MeterProvider(resource=resource(service, instance_id),
                                             metric_readers=[PrometheusMetricReader()]))
    _configured.add("metrics")


def exposition() -> tuple[bytes, str]:
    """The Prometheus text exposition of this process's metrics, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def configure_tracing(service: str, instance_id: str, exporter: Exporter, ratio: float,
                      span_exporter: SpanExporter | None = None) -> None:
    """The SDK's TracerProvider: `exporter` picks where spans go (`span_exporter` overrides it, for tests),
    `ratio` of root traces are kept. Once per process; `none` without an override installs nothing.
    Spans are exported in batches off the hot path; an override (a test's in-memory exporter) gets
    each span as it ends."""
    if "traces" in _configured or (exporter == "none" and span_exporter is None):
        return
    assert exporter in EXPORTERS, exporter
    assert 0.0 <= ratio <= 1.0, ratio
    provider = TracerProvider(resource=resource(service, instance_id), sampler=ParentBased(TraceIdRatioBased(ratio)))
    if span_exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(span_exporter))
        trace.set_tracer_provider(provider)
        _configured.add("traces")
        return
    if exporter == "otlp":
        # Loaded only when asked for: it brings protobuf and requests, which nothing else here needs.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

        span_exporter = OTLPSpanExporter()  # OTEL_EXPORTER_OTLP_ENDPOINT and friends, as the SDK reads them
    else:
        span_exporter = ConsoleSpanExporter(out=sys.stderr)
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)
    _configured.add("traces")
