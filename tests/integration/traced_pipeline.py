"""Run every service, projection and the partner simulator in this one process with the OpenTelemetry SDK's
in-memory span exporter, send one payment as an upstream client would (inside a span of its own), wait
until it is settled and every read model has it, and print every finished span as JSON lines.

Run by tests/integration/test_tracing.py in a process of its own (a tracer provider is set once per
process, and the test session must not trace everything else):

    python -m tests.integration.traced_pipeline <bootstrap> <database_url> <work_dir>
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import uuid
from pathlib import Path

import psycopg
from confluent_kafka import Producer
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from consumers.partner.sim_server import serve as serve_partner
from ops.launch import build_processor
from ops.registry import PROJECTIONS, SERVICES
from ops.settings import Settings
from ops.supervisor import free_port
from payments.contracts.envelope import build_headers
from payments.runtime.health import Health
from payments.runtime.service import run_until_stopped
from payments.runtime.tracing import TRACER, kafka_attributes, traceparent_of
from payments.runtime.watchdog import Watchdog
from payments.telemetry import configure_tracing
from projections.runner import ProjectionRunner
from tests.support import make_initiate, serde, setup_topics, wait_for

TIMEOUT_S = 120


def main(bootstrap: str, database_url: str, work: Path) -> int:
    exporter = InMemorySpanExporter()
    configure_tracing("traced-pipeline", "0", "none", 1.0, span_exporter=exporter)
    prefix = f"tr{uuid.uuid4().hex[:8]}."
    settings = Settings.load({
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "DATABASE_URL": database_url, "PAYMENTS_TOPIC_PREFIX": prefix,
        "PAYMENTS_INSTANCE_ID": "traced", "PAYMENTS_STATE_DIR": str(work / "state"),
        "PAYMENTS_PARTNER_SIM_PORT": str(free_port()), "PAYMENTS_PARTNER_DATA_DIR": str(work / "partner"),
        "PAYMENTS_PARTNER_DECLINE_RATE": "0", "PAYMENTS_PARTNER_TIMEOUT_RATE": "0", "PAYMENTS_PARTNER_ERROR_RATE": "0",
        "PAYMENTS_PARTNER_LATENCY_MS": "1", "PAYMENTS_BATCH_MAX": "50"})
    # Production reply windows (30 s for risk): a step a timer retries opens a trace of its own (payments.runtime.
    # tracing), and with the 1.5 s a time scale of 0.05 gives, a loaded machine made the risk check's retry fire.
    topics = settings.topics
    setup_topics(bootstrap, topics)
    stop = threading.Event()
    threads = [threading.Thread(target=lambda: asyncio.run(serve_partner(
        settings.simulator(), "127.0.0.1", settings.partner_sim_port, stop)), name="partner-sim", daemon=True)]
    for name, spec in SERVICES.items():
        def build(spec=spec, name=name):  # type: ignore[no-untyped-def]
            return build_processor(spec, settings, Watchdog(name), Health())
        threads.append(threading.Thread(target=run_until_stopped, args=(build, stop, name), name=name, daemon=True))
    for name, projection in PROJECTIONS.items():
        def build_projection(projection=projection):  # type: ignore[no-untyped-def]
            return ProjectionRunner(projection.projection(), bootstrap_servers=bootstrap, database_url=database_url,
                                    topics=topics, serde=settings.serde())
        threads.append(threading.Thread(target=run_until_stopped, args=(build_projection, stop, name),
                                        name=f"projection-{name}", daemon=True))
    for thread in threads:
        thread.start()

    command = make_initiate(payer_account="acc-alice", payee_account="acc-bob")
    producer = Producer({"bootstrap.servers": bootstrap})
    # The upstream client's own span: the trace every hop must join.
    with TRACER.start_as_current_span(f"send {topics.commands}", kind=SpanKind.PRODUCER, attributes=kafka_attributes(
            "send", topics.commands, key=command.payment_id, message_id=command.command_id,
            payment_id=command.payment_id)) as span:
        headers = build_headers(command, source="upstream-test", traceparent=traceparent_of(span))
        producer.produce(topics.commands, key=command.payment_id.encode(), value=serde().encode(command),
                         headers=headers)
        assert producer.flush(30) == 0

    def projected() -> bool:
        with psycopg.connect(database_url) as conn:
            status = conn.execute("SELECT status FROM payment_status WHERE payment_id = %s",
                                  (command.payment_id,)).fetchone()
            posted = conn.execute("SELECT count(*) FROM journal_entries WHERE payment_id = %s",
                                  (command.payment_id,)).fetchone()
        return bool(status and status[0] == "SETTLED" and posted and posted[0] > 0)

    try:
        wait_for(projected, TIMEOUT_S, f"payment {command.payment_id} settled in every read model")
        # The settlement report projection applies the settlement event last: wait for its span too.
        wait_for(lambda: any(s.name == f"process {topics.settlements}" and s.kind == SpanKind.CONSUMER
                             for s in exporter.get_finished_spans()), 30, "the settlement events' consumers")
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    print(json.dumps({"payment_id": command.payment_id, "prefix": prefix}))
    for finished in exporter.get_finished_spans():
        context = finished.get_span_context()
        assert context is not None
        print(json.dumps({
            "name": finished.name, "kind": finished.kind.name, "trace_id": f"{context.trace_id:032x}",
            "span_id": f"{context.span_id:016x}",
            "parent_id": f"{finished.parent.span_id:016x}" if finished.parent is not None else None,
            "attributes": dict(finished.attributes or {}), "status": finished.status.status_code.name}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
