"""`payments replay payment_status` on real Kafka and PostgreSQL: the batch projection writes what the
original per-event SQL wrote, the rebuild equals the live tables and a fresh fold, the swap keeps serving."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from ops.registry import PROJECTIONS
from payments.contracts.messages import Message, PaymentInitiated, PaymentRejected
from payments.runtime.topics import Topics
from projections.replay import checksum, replay, table_checksums
from projections.runner import RecordMeta
from projections.status import STATUS_BY_EVENT, PaymentStatusFold, PaymentStatusProjection
from tests.integration.test_projections import count, produce_events, running
from tests.support import serde, setup_topics, wait_for
from tests.unit.projections.test_status_fold import status_lifecycle

TABLES = ("payment_status", "payment_timeline")  # what migration 0004 creates
pytestmark = pytest.mark.integration
META = RecordMeta("payments.events", 0, 0, 0)


def scenario(payments: int, start: int = 0) -> list[Message]:
    return [event for i in range(start, start + payments) for event in status_lifecycle(i)]


def fold_checksums(events: list[Message]) -> dict[str, tuple[int, str]]:
    fold = PaymentStatusFold()
    for event in events:
        fold.apply(event, META)
    return {table: checksum(rows) for table, rows in fold.rows().items()}


def legacy_apply(cur: psycopg.Cursor[tuple[object, ...]], message: Message) -> None:
    """The projection's original per-event SQL (before apply_batch and the fold), kept as the reference."""
    data: dict[str, Any] = json.loads(message.model_dump_json())
    event_type = type(message).__name__
    event_id, payment_id, seq = data["event_id"], data["payment_id"], data["seq"]
    occurred_at = getattr(message, "occurred_at")  # noqa: B009
    cur.execute("""INSERT INTO payment_timeline (event_id, payment_id, seq, event_type, occurred_at, detail)
                   VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING""",
                (event_id, payment_id, seq, event_type, occurred_at, Jsonb(data)))
    if cur.rowcount == 0:
        return
    status = STATUS_BY_EVENT.get(event_type)
    if isinstance(message, PaymentInitiated):
        cur.execute("""INSERT INTO payment_status (payment_id, status, payer_account, payee_account, amount_minor,
                           currency, partner, last_seq, last_event_type, created_at, updated_at)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (payment_id) DO NOTHING""",
                    (payment_id, status, message.payer_account, message.payee_account, message.amount.amount_minor,
                     message.amount.currency, message.partner, seq, event_type, occurred_at, occurred_at))
        return
    if status is None:
        return
    reason = data.get("reason_code")
    if isinstance(message, PaymentRejected):
        if message.reason_code != "UNKNOWN_PAYMENT":
            cur.execute("""INSERT INTO payment_status (payment_id, status, last_seq, last_event_type, reason_code,
                               created_at, updated_at)
                           VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (payment_id) DO NOTHING""",
                        (payment_id, status, seq, event_type, reason, occurred_at, occurred_at))
        return
    cur.execute("""INSERT INTO payment_status (payment_id, status, last_seq, last_event_type, reason_code,
                       created_at, updated_at)
                   VALUES (%s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (payment_id) DO UPDATE SET
                       status = EXCLUDED.status, last_seq = EXCLUDED.last_seq,
                       last_event_type = EXCLUDED.last_event_type,
                       reason_code = COALESCE(EXCLUDED.reason_code, payment_status.reason_code),
                       updated_at = EXCLUDED.updated_at
                   WHERE payment_status.last_seq < EXCLUDED.last_seq""",
                (payment_id, status, seq, event_type, reason, occurred_at, occurred_at))


def legacy_checksums(database_url: str, events: list[Message]) -> dict[str, tuple[int, str]]:
    migration = resources.files("projections.migrations").joinpath("0004_payment_status.sql").read_text()
    with psycopg.connect(database_url) as conn, conn.transaction(), conn.cursor() as cur:
        cur.execute("CREATE SCHEMA legacy_status")
        cur.execute("SET LOCAL search_path TO legacy_status")
        cur.execute(migration.encode())
        for event in events:
            legacy_apply(cur, event)
    return table_checksums(database_url, "legacy_status", TABLES)


def test_replay_of_payment_status_equals_the_live_tables_the_original_sql_and_a_fold_then_swaps_in(
        kafka_bootstrap: str, database_url: str, topics: Topics) -> None:
    setup_topics(kafka_bootstrap, topics)
    events = scenario(1200)
    # Every 7th event again (a producer retry, a replayed batch) and a stale seq arriving late.
    events += events[::7]
    for start in range(0, len(events), 1000):
        produce_events(kafka_bootstrap, topics.events, events[start:start + 1000], transactional=True)
    unique = len({e.event_id for e in events})  # type: ignore[attr-defined]
    expected = fold_checksums(events)
    assert legacy_checksums(database_url, events) == expected, "the fold differs from the original SQL"

    with running(PaymentStatusProjection(), bootstrap=kafka_bootstrap, database_url=database_url, topics=topics):
        wait_for(lambda: count(database_url, "SELECT count(*) FROM payment_timeline") == unique, 90,
                 "the live status projection to catch up")
        live = table_checksums(database_url, "public", TABLES)
        assert live == expected, "the batch projection differs from the fold"

        progress = io.StringIO()
        result = replay(PROJECTIONS["payment_status"], bootstrap=kafka_bootstrap, database_url=database_url,
                        topics=topics, serde=serde(), out=progress)
        sys.stderr.write(f"\npayment_status replay: {result.records} records in {result.elapsed_s:.2f}s, "
                         f"{result.records_per_s:,.0f} records/s\n")
        assert result.records == len(events)
        assert result.checksums == live
        assert result.retired_schema is not None
        assert table_checksums(database_url, "public", TABLES) == live

        more = scenario(60, start=1200)
        produce_events(kafka_bootstrap, topics.events, more, transactional=True)
        everything = events + more
        wait_for(lambda: count(database_url, "SELECT count(*) FROM payment_timeline") == unique + len(more), 60,
                 "the live runner to continue after the swap")
    assert table_checksums(database_url, "public", TABLES) == fold_checksums(everything)


def test_replay_command_until_builds_the_earlier_payment_status_in_an_asof_schema(
        kafka_bootstrap: str, database_url: str, topics: Topics) -> None:
    setup_topics(kafka_bootstrap, topics)
    now = datetime.now(UTC)
    earlier, later = scenario(30), scenario(30, start=30)
    for batch, age in ((earlier, timedelta(hours=2)), (later, timedelta(hours=1))):
        produce_events(kafka_bootstrap, topics.events, batch, timestamp_ms=int((now - age).timestamp() * 1000))
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "DATABASE_URL": database_url,
           "PAYMENTS_TOPIC_PREFIX": topics.prefix}
    until = (now - timedelta(minutes=90)).isoformat()
    done = subprocess.run([sys.executable, "-m", "ops.cli", "replay", "payment_status", "--until", until],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    schema = done.stdout.rsplit("schema: ", 1)[1].strip()
    assert schema.startswith("asof_payment_status_")
    assert table_checksums(database_url, schema, TABLES) == fold_checksums(earlier)
    assert count(database_url, "SELECT count(*) FROM payment_status") == 0  # the live tables are untouched
