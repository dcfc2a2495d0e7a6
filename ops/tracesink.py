"""A minimal OTLP/HTTP trace receiver for the demo: the services export spans to it (PAYMENTS_TRACES_EXPORTER=otlp,
OTEL_EXPORTER_OTLP_ENDPOINT), and `tree()` renders one trace in the terminal.

Not a collector: it keeps spans in memory, for one short run. Production sends OTLP to a real
collector (OpenTelemetry Collector, Jaeger, Tempo) at OTEL_EXPORTER_OTLP_ENDPOINT.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


@dataclass(frozen=True)
class SinkSpan:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    kind: str
    service: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def decode(body: bytes) -> list[SinkSpan]:
    """The spans of one OTLP/HTTP protobuf export request."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        service = str(resource.get("service.name", "?"))
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(SinkSpan(
                    trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                    parent_id=span.parent_span_id.hex() or None, name=span.name, kind=KINDS.get(span.kind, "?"),
                    service=service, start_ns=span.start_time_unix_nano, end_ns=span.end_time_unix_nano,
                    attributes={a.key: _value(a.value) for a in span.attributes}))
    return spans


class TraceSink:
    """Receives OTLP/HTTP protobuf exports on 127.0.0.1:`port` (POST /v1/traces) in a daemon thread."""

    def __init__(self, port: int) -> None:
        self.spans: list[SinkSpan] = []
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                try:
                    received = decode(body)
                except Exception:  # a malformed export: refuse it, keep serving
                    self.send_error(400)
                    return
                sink.add(received)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, name="trace-sink", daemon=True).start()

    def add(self, spans: list[SinkSpan]) -> None:
        with self._lock:
            self.spans.extend(spans)

    def trace(self, trace_id: str) -> list[SinkSpan]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def new_traceparent() -> tuple[str, str]:
    """A fresh W3C traceparent (sampled) and its trace id: the demo's role of an upstream client."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id


def tree(spans: list[SinkSpan], strip: str = "") -> list[str]:
    """One line per span, children indented under their parent, in start order: service, span, duration,
    and offset from the trace's first span (`strip`, a topic prefix, is left out of the names). Spans
    whose parent is not among them start the tree."""
    if not spans:
        return []
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[SinkSpan]] = {}
    for span in spans:
        parent = span.parent_id if span.parent_id in ids else None
        children.setdefault(parent, []).append(span)
    start = min(s.start_ns for s in spans)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in sorted(children.get(parent, []), key=lambda s: s.start_ns):
            took = (span.end_ns - span.start_ns) / 1e6
            at = (span.start_ns - start) / 1e6
            name = span.name.replace(strip, "") if strip else span.name
            if span.kind == "CLIENT":
                status = span.attributes.get("http.response.status_code", "?")
                name = f"{name} {span.attributes.get('url.full', '')} -> {status}"
            label = f"{'  ' * depth}{name} [{span.kind.lower()}]"
            lines.append(f"  +{at:7.1f} ms  {label:84} {took:6.1f} ms  {span.service}")
            walk(span.span_id, depth + 1)

    walk(None, 0)
    return lines
