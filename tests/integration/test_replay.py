"""`payments replay` on real Kafka and PostgreSQL: rebuild beside the live projection, verify, swap, --until."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from ops.registry import PROJECTIONS
from payments.runtime.topics import Topics
from projections.ledger import LedgerProjection
from projections.replay import replay, swap_in, table_checksums
from tests.integration.test_projections import (
    LEDGER_TABLES,
    assert_every_entry_balanced,
    count,
    fold_of,
    posting_event_count,
    produce_events,
    running,
    scenario,
)
from tests.support import serde, setup_topics, wait_for
from tests.unit.projections.events import settlement

pytestmark = pytest.mark.integration


def _schemas(database_url: str, prefix: str) -> list[str]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s ORDER BY 1",
                            (prefix + "%",)).fetchall()
    return [str(row[0]) for row in rows]


def test_replay_equals_the_live_ledger_swaps_in_and_the_live_runner_continues(
        kafka_bootstrap: str, database_url: str, topics: Topics) -> None:
    setup_topics(kafka_bootstrap, topics)
    events = scenario(800)  # ~3,400 records, in transactions: the end offsets sit behind commit markers
    for start in range(0, len(events), 500):
        produce_events(kafka_bootstrap, topics.events, events[start:start + 500], transactional=True)
    with running(LedgerProjection(), bootstrap=kafka_bootstrap, database_url=database_url, topics=topics):
        wait_for(lambda: count(database_url, "SELECT count(*) FROM journal_entries") == posting_event_count(events),
                 60, "the live ledger to catch up")
        live = table_checksums(database_url, "public", LEDGER_TABLES)

        progress = io.StringIO()
        result = replay(PROJECTIONS["ledger"], bootstrap=kafka_bootstrap, database_url=database_url, topics=topics,
                        serde=serde(), out=progress)
        sys.stderr.write(f"\nreplay progress: {progress.getvalue().rsplit(chr(13), 1)[-1]}")
        assert "records/s" in progress.getvalue() and "ETA" in progress.getvalue()
        assert result.records == len(events)
        assert result.checksums == live, "the rebuild differs from the live projection"
        assert result.retired_schema is not None and _schemas(database_url, "retired_ledger_") == [
            result.retired_schema]
        assert _schemas(database_url, "replay_") == []  # the rebuilt tables are the live ones now
        assert table_checksums(database_url, "public", LEDGER_TABLES) == live
        assert table_checksums(database_url, result.retired_schema, LEDGER_TABLES) == live

        more = scenario(60, start=800)
        produce_events(kafka_bootstrap, topics.events, more, transactional=True)
        everything = events + more
        wait_for(lambda: count(database_url, "SELECT count(*) FROM journal_entries")
                 == posting_event_count(everything), 60, "the live runner to continue after the swap")
    assert table_checksums(database_url, "public", LEDGER_TABLES) == fold_of(everything)
    assert_every_entry_balanced(database_url)


def test_swapping_in_a_rebuild_that_is_behind_makes_the_live_runner_rewind_without_gap_or_duplicate(
        kafka_bootstrap: str, database_url: str, topics: Topics) -> None:
    setup_topics(kafka_bootstrap, topics)
    events = scenario(200)
    produce_events(kafka_bootstrap, topics.events, events, transactional=True)
    with running(LedgerProjection(), bootstrap=kafka_bootstrap, database_url=database_url, topics=topics):
        wait_for(lambda: count(database_url, "SELECT count(*) FROM journal_entries") == posting_event_count(events),
                 60, "the live ledger to catch up")
        result = replay(PROJECTIONS["ledger"], bootstrap=kafka_bootstrap, database_url=database_url, topics=topics,
                        serde=serde(), swap=False, out=io.StringIO())
        assert result.retired_schema is None and _schemas(database_url, "replay_ledger_") == [result.schema]
        # The live projection moves past the rebuild's end offsets before the swap.
        more = scenario(100, start=200)
        produce_events(kafka_bootstrap, topics.events, more, transactional=True)
        everything = events + more
        wait_for(lambda: count(database_url, "SELECT count(*) FROM journal_entries")
                 == posting_event_count(everything), 60, "the live ledger to apply the newer events")

        swap_in(database_url, "ledger", result.schema)
        assert count(database_url, "SELECT count(*) FROM journal_entries") == posting_event_count(events)
        more_still = scenario(20, start=300)
        produce_events(kafka_bootstrap, topics.events, more_still, transactional=True)
        everything += more_still
        wait_for(lambda: count(database_url, "SELECT count(*) FROM journal_entries")
                 == posting_event_count(everything), 60, "the live runner to rewind and catch up after the swap")
    assert table_checksums(database_url, "public", LEDGER_TABLES) == fold_of(everything)
    assert_every_entry_balanced(database_url)


def test_until_rebuilds_the_earlier_state_into_an_asof_schema_and_does_not_swap(
        kafka_bootstrap: str, database_url: str, topics: Topics) -> None:
    setup_topics(kafka_bootstrap, topics)
    now = datetime.now(UTC)
    earlier, later = scenario(40), scenario(40, start=40)
    for batch, age in ((earlier, timedelta(hours=2)), (later, timedelta(hours=1))):
        produce_events(kafka_bootstrap, topics.events, batch, timestamp_ms=int((now - age).timestamp() * 1000))

    result = replay(PROJECTIONS["ledger"], bootstrap=kafka_bootstrap, database_url=database_url, topics=topics,
                    serde=serde(), until=now - timedelta(minutes=90), out=io.StringIO())

    assert result.schema.startswith("asof_ledger_") and result.retired_schema is None
    assert table_checksums(database_url, result.schema, LEDGER_TABLES) == fold_of(earlier)
    assert count(database_url, "SELECT count(*) FROM journal_entries") == 0  # the live tables are untouched
    assert_every_entry_balanced(database_url, result.schema)


def test_replay_command_rebuilds_the_settlement_report_and_rolls_back_with_swap_in(
        kafka_bootstrap: str, database_url: str, topics: Topics) -> None:
    setup_topics(kafka_bootstrap, topics)
    events = [settlement(f"p{i}", 100 + i, kind="REFUND" if i % 4 == 0 else "SETTLEMENT") for i in range(200)]
    produce_events(kafka_bootstrap, topics.settlements, events)
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "DATABASE_URL": database_url,
           "PAYMENTS_TOPIC_PREFIX": topics.prefix}
    command = [sys.executable, "-m", "ops.cli", "replay", "settlement_report"]

    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert "records/s" in done.stderr and "swapped in" in done.stdout, (done.stdout, done.stderr)
    assert time.monotonic() - started < 60
    assert count(database_url, "SELECT sum(settled_count) + sum(refunded_count) FROM settlement_report") == 200
    retired = _schemas(database_url, "retired_settlement_report_")
    assert len(retired) == 1

    rollback = subprocess.run([*command, "--swap-in", retired[0]], env=env, capture_output=True, text=True,
                              timeout=60, check=False)
    assert rollback.returncode == 0, rollback.stderr
    assert count(database_url, "SELECT count(*) FROM settlement_report") == 0  # the old (empty) tables are back
    assert count(database_url, "SELECT count(*) FROM projection_offsets WHERE projection = 'settlement_report'") == 0
