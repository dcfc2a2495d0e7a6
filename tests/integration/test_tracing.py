"""One trace per payment, read back from the SDK's in-memory exporter, on real Kafka and PostgreSQL.

tests/integration/traced_pipeline.py runs every service, projection and the partner simulator in one
process of its own with the in-memory exporter, sends one payment inside an upstream span, and prints
the spans; this test checks the chain: one trace, connected from the upstream span through every
service's CONSUMER span, the PRODUCER spans between them, the partner HTTP call and each projection's
PostgreSQL transaction, with the messaging semantic conventions' attributes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ops.registry import PROJECTIONS, SERVICES
from projections.migrate import migrate

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_one_payment_is_one_connected_trace_through_every_service_the_partner_and_the_projections(
        kafka_bootstrap: str, database_url: str, tmp_path: Path) -> None:
    migrate(database_url)
    run = subprocess.run([sys.executable, "-m", "tests.integration.traced_pipeline", kafka_bootstrap, database_url,
                          str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-6000:]
    (tmp_path / "spans.jsonl").write_text(run.stdout)  # kept with the test's folder, to read after a failure
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    header, spans = lines[0], lines[1:]
    payment_id, prefix = header["payment_id"], header["prefix"]

    roots = [s for s in spans if s["name"] == f"send {prefix}payments.commands" and s["parent_id"] is None]
    assert len(roots) == 1, [s["name"] for s in spans if s["parent_id"] is None]
    trace_id = roots[0]["trace_id"]
    ours = [s for s in spans if s["trace_id"] == trace_id]
    # Every span of the payment is in the upstream client's trace ...
    strays = [s["name"] for s in spans if s["attributes"].get("payment.id") == payment_id
              and s["trace_id"] != trace_id and not s["name"].startswith("timer ")]
    assert not strays, f"spans of {payment_id} outside its trace: {strays}"
    # ... and the trace is one tree: every span's parent is in it.
    ids = {s["span_id"] for s in ours}
    orphans = [s["name"] for s in ours if s["parent_id"] is not None and s["parent_id"] not in ids]
    assert not orphans, f"spans whose parent is missing: {orphans}"

    consumers = [s for s in ours if s["kind"] == "CONSUMER"]
    groups = {s["attributes"]["messaging.consumer.group.name"].removeprefix(prefix) for s in consumers}
    expected = set(SERVICES) | {f"projection-{name}" for name in PROJECTIONS}
    assert expected <= groups, f"no CONSUMER span of {sorted(expected - groups)} in the trace"
    for span in consumers:
        attributes = span["attributes"]
        assert attributes["messaging.system"] == "kafka" and attributes["messaging.operation.type"] == "process"
        assert attributes["messaging.destination.name"].startswith(prefix)
        assert isinstance(attributes["messaging.kafka.offset"], int)
        assert attributes["messaging.kafka.message.key"]  # the payment id, or the intake's idempotency scope
        assert attributes["payment.id"] == payment_id
    projection_spans = [s for s in consumers if s["attributes"].get("db.system.name") == "postgresql"]
    assert {s["attributes"]["messaging.consumer.group.name"].removeprefix(prefix) for s in projection_spans} == {
        f"projection-{name}" for name in PROJECTIONS}

    producers = [s for s in ours if s["kind"] == "PRODUCER"]
    sent_to = {s["attributes"]["messaging.destination.name"].removeprefix(prefix) for s in producers}
    assert {"payments.commands", "payments.events", "payments.settlements"} <= sent_to, sent_to
    by_id = {s["span_id"]: s for s in ours}
    # Each hop's CONSUMER span (but the first) is under the PRODUCER span of the record it consumed.
    assert all(by_id[s["parent_id"]]["kind"] == "PRODUCER" for s in consumers), [
        (s["name"], by_id[s["parent_id"]]["name"]) for s in consumers if by_id[s["parent_id"]]["kind"] != "PRODUCER"]

    calls = [s for s in ours if s["kind"] == "CLIENT"]
    submit = [s for s in calls if s["attributes"]["http.request.method"] == "POST"]
    assert len(submit) == 1, [s["name"] for s in calls]
    assert submit[0]["attributes"]["url.full"].endswith("/v1/transfers")
    assert 200 <= submit[0]["attributes"]["http.response.status_code"] < 300
    parent = by_id[submit[0]["parent_id"]]
    assert parent["kind"] == "CONSUMER" and parent["attributes"]["messaging.consumer.group.name"] == f"{prefix}partner"
