"""Ledger and settlement-report projections on real Kafka and PostgreSQL: exactly once, balanced, refused when not."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Producer

from payments.contracts.envelope import build_headers
from payments.contracts.messages import Message
from payments.runtime.topics import Topics
from projections.ledger import LedgerFold, LedgerProjection
from projections.replay import checksum, table_checksums
from projections.report import SettlementReportProjection
from projections.runner import Projection, ProjectionRunner, RecordMeta, RunnerConfig
from tests.support import serde, service, setup_topics, wait_for
from tests.unit.projections.events import initiated, lifecycle, reserved, settlement

pytestmark = pytest.mark.integration

LEDGER_TABLES = ("ledger_payments", "ledger_accounts", "journal_entries", "postings", "account_balances",
                 "ledger_unposted")
META = RecordMeta("payments.events", 0, 0, 0)


# -- helpers shared with test_replay.py ----------------------------------------------------------


def produce_events(bootstrap: str, topic: str, messages: Iterable[Message], *, timestamp_ms: int | None = None,
                   transactional: bool = False, abort: bool = False) -> None:
    """Produce keyed by payment id; optionally with a fixed record timestamp, in one (aborted) transaction."""
    config: dict[str, object] = {"bootstrap.servers": bootstrap, "partitioner": "murmur2_random",
                                 "enable.idempotence": True, "linger.ms": 5}
    if transactional:
        config["transactional.id"] = f"test-{uuid.uuid4().hex}"
    producer = Producer(config)
    if transactional:
        producer.init_transactions(30)
        producer.begin_transaction()
    codec = serde()
    for message in messages:
        extra = {} if timestamp_ms is None else {"timestamp": timestamp_ms}
        producer.produce(topic, key=message.payment_id.encode(), value=codec.encode(message),
                         headers=build_headers(message, source="tests", traceparent=None), **extra)
    if transactional:
        if abort:
            producer.flush(30)
            producer.abort_transaction(30)
        else:
            producer.commit_transaction(30)
    assert producer.flush(30) == 0, "records left undelivered"


def scenario(payments: int, start: int = 0) -> list[Message]:
    return [event for i in range(start, start + payments) for event in lifecycle(i)]


def fold_of(events: Iterable[Message]) -> dict[str, tuple[int, str]]:
    fold = LedgerFold()
    for event in events:
        fold.apply(event, META)
    return {table: checksum(rows) for table, rows in fold.rows().items()}


def count(database_url: str, query: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def posting_event_count(events: Iterable[Message]) -> int:
    return sum(type(e).__name__ in {"FundsReserved", "FundsReleased", "FundsCommitted", "PaymentSettled",
                                    "PaymentRefunded"} for e in events)


@contextmanager
def running(projection: Projection, *, bootstrap: str, database_url: str, topics: Topics,
            batch_records_max: int = 500) -> Iterator[None]:
    """A live projection runner in a thread of this process, stopped on exit."""
    runner = ProjectionRunner(projection, bootstrap_servers=bootstrap, database_url=database_url, topics=topics,
                              serde=serde(), config=RunnerConfig(batch_records_max=batch_records_max))
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "projection runner did not stop"


def assert_every_entry_balanced(database_url: str, schema: str = "public") -> None:
    with psycopg.connect(database_url) as conn:
        conn.execute(f"SET search_path TO {schema}")
        unbalanced = conn.execute("""SELECT entry_id, currency, sum(amount_minor) FROM postings
                                     GROUP BY entry_id, currency HAVING sum(amount_minor) <> 0""").fetchall()
        short = conn.execute("""SELECT e.entry_id FROM journal_entries e LEFT JOIN postings p USING (entry_id)
                                GROUP BY e.entry_id HAVING count(p.entry_id) < 2""").fetchall()
        drift = conn.execute("""SELECT b.account, b.currency FROM account_balances b
                                LEFT JOIN (SELECT account, currency, sum(amount_minor) AS total FROM postings
                                           GROUP BY account, currency) p USING (account, currency)
                                WHERE b.balance_minor <> coalesce(p.total, 0)""").fetchall()
        per_currency = conn.execute("""SELECT currency, sum(balance_minor) FROM account_balances
                                       GROUP BY currency HAVING sum(balance_minor) <> 0""").fetchall()
    assert (unbalanced, short, drift, per_currency) == ([], [], [], [])


# -- tests ------------------------------------------------------------------------------------------


def test_ledger_killed_mid_batch_and_restarted_has_no_duplicate_and_no_gap(
        kafka_bootstrap: str, database_url: str, topics: Topics, tmp_path: Path) -> None:
    setup_topics(kafka_bootstrap, topics)
    events = scenario(500)
    produce_events(kafka_bootstrap, topics.events, events)
    expected_entries = posting_event_count(events)
    small_batches = {"PAYMENTS_PROJECTION_BATCH_MAX": "40"}
    projection = service(["projection", "ledger"], bootstrap=kafka_bootstrap, database_url=database_url,
                         topics=topics, log_dir=tmp_path, extra_env=small_batches).start()
    wait_for(lambda: count(database_url, "SELECT count(*) FROM journal_entries") >= 150, 60, "some entries")
    projection.kill()
    partial = count(database_url, "SELECT count(*) FROM journal_entries")
    assert partial < expected_entries, "the kill should land mid-run; make batches smaller if this fails"

    projection = service(["projection", "ledger"], bootstrap=kafka_bootstrap, database_url=database_url,
                         topics=topics, log_dir=tmp_path, extra_env=small_batches).start()
    try:
        wait_for(lambda: count(database_url, "SELECT count(*) FROM journal_entries") == expected_entries, 60,
                 f"{expected_entries} journal entries")
    finally:
        assert projection.stop() == 0, projection.log_tail()
    assert table_checksums(database_url, "public", LEDGER_TABLES) == fold_of(events)
    assert_every_entry_balanced(database_url)


def test_records_of_aborted_transactions_never_reach_the_ledger(
        kafka_bootstrap: str, database_url: str, topics: Topics) -> None:
    setup_topics(kafka_bootstrap, topics)
    committed, aborted, later = scenario(30), scenario(30, start=30), scenario(30, start=60)
    produce_events(kafka_bootstrap, topics.events, committed, transactional=True)
    produce_events(kafka_bootstrap, topics.events, aborted, transactional=True, abort=True)
    produce_events(kafka_bootstrap, topics.events, later, transactional=True)
    expected = committed + later
    with running(LedgerProjection(), bootstrap=kafka_bootstrap, database_url=database_url, topics=topics):
        wait_for(lambda: count(database_url, "SELECT count(*) FROM journal_entries") >= posting_event_count(expected),
                 60, "the committed entries")
    assert table_checksums(database_url, "public", LEDGER_TABLES) == fold_of(expected)
    aborted_ids = [e.payment_id for e in aborted]
    with psycopg.connect(database_url) as conn:
        seen = conn.execute("SELECT count(*) FROM journal_entries WHERE payment_id = ANY(%s)",
                            (aborted_ids,)).fetchone()
    assert seen == (0,)


def test_imbalanced_or_single_posting_entry_is_refused_at_commit(database_url: str) -> None:
    def write(postings: list[tuple[str, int]]) -> None:
        entry_id = uuid.uuid4()
        with psycopg.connect(database_url) as conn, conn.transaction():
            for account, _ in postings:
                conn.execute("""INSERT INTO ledger_accounts (account, currency, kind)
                                VALUES (%s, 'EUR', 'customer_available') ON CONFLICT DO NOTHING""", (account,))
            conn.execute("""INSERT INTO journal_entries (entry_id, source_event_id, payment_id, kind, occurred_at)
                            VALUES (%s, %s, 'p1', 'Manual', now())""", (entry_id, str(entry_id)))
            for line, (account, amount) in enumerate(postings, start=1):
                conn.execute("""INSERT INTO postings (entry_id, line, account, currency, amount_minor)
                                VALUES (%s, %s, %s, 'EUR', %s)""", (entry_id, line, account, amount))
            # Each statement above succeeded: the check is deferred to commit.

    with pytest.raises(psycopg.errors.CheckViolation, match="does not balance"):
        write([("customer:a:available", -100), ("customer:b:available", 50)])
    with pytest.raises(psycopg.errors.CheckViolation, match="at least 2"):
        write([("customer:a:available", 100)])
    write([("customer:a:available", -100), ("customer:b:available", 100)])  # a balanced entry commits
    assert count(database_url, "SELECT count(*) FROM journal_entries") == 1
    assert_every_entry_balanced(database_url)


def test_every_journal_entry_sums_to_zero_per_currency(
        kafka_bootstrap: str, database_url: str, topics: Topics) -> None:
    setup_topics(kafka_bootstrap, topics)
    events = scenario(120)
    produce_events(kafka_bootstrap, topics.events, events)
    produce_events(kafka_bootstrap, topics.events, events[:50])  # redelivered events are no-ops
    with running(LedgerProjection(), bootstrap=kafka_bootstrap, database_url=database_url, topics=topics,
                 batch_records_max=64):
        wait_for(lambda: count(database_url, "SELECT count(*) FROM projection_offsets WHERE projection = 'ledger'")
                 and count(database_url, "SELECT sum(next_offset) FROM projection_offsets") == len(events) + 50,
                 60, "every record applied")
    assert count(database_url, "SELECT count(DISTINCT currency) FROM postings") == 3
    assert table_checksums(database_url, "public", LEDGER_TABLES) == fold_of(events)
    assert_every_entry_balanced(database_url)


def test_settlement_report_totals_per_day_currency_partner_count_each_event_once(
        kafka_bootstrap: str, database_url: str, topics: Topics) -> None:
    setup_topics(kafka_bootstrap, topics)
    events = [settlement(f"p{i}", 100 + i, currency=("EUR", "USD")[i % 2], partner=("simbank", "bank2")[i % 3 % 2],
                         kind="REFUND" if i % 5 == 0 else "SETTLEMENT") for i in range(60)]
    produce_events(kafka_bootstrap, topics.settlements, events)
    produce_events(kafka_bootstrap, topics.settlements, events[:10])  # duplicates
    with running(SettlementReportProjection(), bootstrap=kafka_bootstrap, database_url=database_url, topics=topics):
        wait_for(lambda: count(database_url, "SELECT count(*) FROM settlement_report_applied") == 60, 60,
                 "60 settlement events")
        wait_for(lambda: count(database_url, "SELECT coalesce(sum(next_offset), 0) FROM projection_offsets") == 70,
                 60, "all 70 records consumed")
    settled = [e for e in events if e.kind == "SETTLEMENT"]
    refunds = [e for e in events if e.kind == "REFUND"]
    assert count(database_url, "SELECT sum(settled_count) FROM settlement_report") == len(settled)
    assert count(database_url, "SELECT sum(settled_minor) FROM settlement_report") == sum(
        e.amount.amount_minor for e in settled)
    assert count(database_url, "SELECT sum(refunded_minor) FROM settlement_report") == sum(
        e.amount.amount_minor for e in refunds)
    assert count(database_url, "SELECT count(*) FROM settlement_report") == 4  # 2 currencies x 2 partners


def test_a_record_the_database_refuses_is_dead_lettered_alone_and_the_partition_moves_on(
        kafka_bootstrap: str, database_url: str, topics: Topics) -> None:
    setup_topics(kafka_bootstrap, topics)
    whale = str(uuid.uuid4())
    # Two holds of 2**62 on one account: the second takes `held` past a bigint. PostgreSQL refuses it.
    huge = [initiated(whale, 2**62, payer="whale"), reserved(whale, 2**62, seq=2), reserved(whale, 2**62, seq=3)]
    ordinary = scenario(5)
    produce_events(kafka_bootstrap, topics.events, [*huge, *ordinary])
    with running(LedgerProjection(), bootstrap=kafka_bootstrap, database_url=database_url, topics=topics):
        wait_for(lambda: count(database_url, "SELECT count(*) FROM projection_dead_letters") == 1
                 and count(database_url, "SELECT count(*) FROM journal_entries") == 1 + posting_event_count(ordinary),
                 60, "the refused record parked and everything else applied")
    with psycopg.connect(database_url) as conn:
        (error_class, reason, value), = conn.execute(
            "SELECT error_class, reason, record_value FROM projection_dead_letters").fetchall()
    assert error_class == "ProjectionApplyError" and "out of range" in str(reason)
    assert serde().decode(bytes(value)) == huge[2]  # type: ignore[arg-type]
    assert_every_entry_balanced(database_url)
