"""Spans along a payment, following OpenTelemetry's messaging and HTTP semantic conventions.

The trace context travels in each record's W3C `traceparent` header (docs/contracts.md §1). A service
that consumes a record opens a CONSUMER span `process <topic>` under the record's context; each record
it produces gets a PRODUCER span `send <topic>` under that one, and carries the send span's context
onward, so one trace runs from the upstream command through every hop. The partner gateway's HTTP
call is a CLIENT span under the span of the command that asked for it (its context is kept with the
recorded call, so a call made after a restart still joins its payment's trace), and each projection
record's PostgreSQL transaction is a CONSUMER span under the record's context.

Until a process installs the SDK (payments.telemetry.configure_tracing, `PAYMENTS_TRACES_EXPORTER`),
`enabled()` is false and none of this runs: the loops forward the incoming traceparent unchanged.
A step a timer starts has no incoming record: it opens a trace of its own, with the state key (the payment
id in the orchestrator) as `payments.state_key`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Final

from opentelemetry import context, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACER: Final = trace.get_tracer("payments")
_PROPAGATOR: Final = TraceContextTextMapPropagator()
Attributes = Mapping[str, str | int]


def enabled() -> bool:
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def context_of(traceparent: str | None) -> context.Context | None:
    """The context a `traceparent` header names (None without one, or for a malformed one)."""
    if not traceparent:
        return None
    found = _PROPAGATOR.extract({"traceparent": traceparent})
    return found if trace.get_current_span(found).get_span_context().is_valid else None


def traceparent_of(span: Span) -> str | None:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


def kafka_attributes(operation: str, topic: str, *, partition: int | None = None, offset: int | None = None,
                     key: str | None = None, message_id: str | None = None, group: str | None = None,
                     payment_id: str | None = None) -> Attributes:
    """The messaging semantic conventions' attributes of a Kafka span."""
    found: dict[str, str | int] = {"messaging.system": "kafka", "messaging.operation.type": operation,
                                   "messaging.operation.name": operation, "messaging.destination.name": topic}
    if partition is not None:
        found["messaging.destination.partition.id"] = str(partition)
    if offset is not None:
        found["messaging.kafka.offset"] = offset
    if key is not None:
        found["messaging.kafka.message.key"] = key
    if payment_id is not None:
        found["payment.id"] = payment_id
    if message_id is not None:
        found["messaging.message.id"] = message_id
    if group is not None:
        found["messaging.consumer.group.name"] = group
    return found


@contextmanager
def processing(topic: str, traceparent: str | None, attributes: Attributes) -> Iterator[Span]:
    """A CONSUMER span `process <topic>` under the record's context, current while the block runs."""
    with TRACER.start_as_current_span(f"process {topic}", context=context_of(traceparent), kind=SpanKind.CONSUMER,
                                      attributes=attributes) as span:
        yield span


@contextmanager
def root(name: str, attributes: Attributes) -> Iterator[Span]:
    """An INTERNAL span that starts a trace of its own (a timer's step), current while the block runs."""
    with TRACER.start_as_current_span(name, context=context.Context(), kind=SpanKind.INTERNAL,
                                      attributes=attributes) as span:
        yield span


def sent(topic: str, key: str, message_id: str, payment_id: str) -> str | None:
    """A PRODUCER span `send <topic>` under the current span; the traceparent the produced record carries."""
    span = TRACER.start_span(f"send {topic}", kind=SpanKind.PRODUCER, attributes=kafka_attributes(
        "send", topic, key=key, message_id=message_id, payment_id=payment_id))
    span.end()
    return traceparent_of(span)


@contextmanager
def under(traceparent: str | None) -> Iterator[None]:
    """Make the context `traceparent` names current for the block (nothing without one)."""
    found = context_of(traceparent)
    if found is None:
        yield
        return
    token = context.attach(found)
    try:
        yield
    finally:
        context.detach(token)


@contextmanager
def http_client(method: str, url: str, server: str, headers: dict[str, str]) -> Iterator[Span]:
    """A CLIENT span `<method>` for one HTTP request under the current context; its traceparent goes into
    `headers`, so the partner can join the trace."""
    with TRACER.start_as_current_span(method, kind=SpanKind.CLIENT, attributes={
            "http.request.method": method, "url.full": url, "server.address": server}) as span:
        _PROPAGATOR.inject(headers)
        yield span
