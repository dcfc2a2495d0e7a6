"""The first slice end to end on real Kafka and PostgreSQL: command -> orchestrator -> event -> projection."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Producer

from ops.supervisor import ServiceProcess
from payments.contracts.envelope import build_headers
from payments.contracts.messages import PaymentInitiated
from payments.runtime.reader import end_offsets_asker, partitions_of
from payments.runtime.topics import Topics
from tests.support import (
    COMMAND_PATH,
    decode_all,
    make_initiate,
    produce,
    read_all,
    serde,
    service,
    setup_topics,
    wait_for,
)

pytestmark = pytest.mark.integration


def _count(database_url: str, sql: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def _initiated(bootstrap: str, topics: Topics) -> list[PaymentInitiated]:
    return [m for m in decode_all(read_all(bootstrap, topics.events)) if isinstance(m, PaymentInitiated)]


def _assert_positions_at_last_record(database_url: str, bootstrap: str, topic: str) -> None:
    """Stored next offset per partition == last committed data record + 1 (markers are skipped)."""
    last: dict[int, int] = {}
    for record in read_all(bootstrap, topic):
        last[record.partition] = max(record.offset, last.get(record.partition, -1))
    with psycopg.connect(database_url) as conn:
        stored = dict(conn.execute("SELECT partition, next_offset FROM projection_offsets WHERE topic = %s",
                                   (topic,)).fetchall())
    assert stored == {partition: offset + 1 for partition, offset in last.items()}


def _services(kafka_bootstrap: str, database_url: str, topics: Topics, tmp_path: Path, *args: str) -> ServiceProcess:
    return service(list(args), bootstrap=kafka_bootstrap, database_url=database_url, topics=topics, log_dir=tmp_path)


def test_initiated_payments_reach_payment_status_exactly_once(
        kafka_bootstrap: str, database_url: str, topics: Topics, tmp_path: Path) -> None:
    setup_topics(kafka_bootstrap, topics)
    commands = [make_initiate(amount_minor=100 + i) for i in range(20)]
    produce(kafka_bootstrap, topics.commands, commands, key_of=lambda m: m.payment_id)  # type: ignore[attr-defined]
    processes = [_services(kafka_bootstrap, database_url, topics, tmp_path, *args).start()
                 for args in [*([name] for name in COMMAND_PATH), ["projection", "payment_status"]]]
    try:
        wait_for(lambda: _count(database_url, "SELECT count(*) FROM payment_status") == 20, 60,
                 "20 payment rows")
    finally:
        for process in processes:
            assert process.stop() == 0, process.log_tail()

    events = _initiated(kafka_bootstrap, topics)
    assert Counter(e.payment_id for e in events) == Counter(c.payment_id for c in commands)
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT payment_id, status, amount_minor, currency FROM payment_status").fetchall()
    assert sorted(rows) == sorted((c.payment_id, "INITIATED", c.amount.amount_minor, "EUR") for c in commands)


def test_records_of_an_aborted_transaction_never_reach_postgres(
        kafka_bootstrap: str, database_url: str, topics: Topics, tmp_path: Path) -> None:
    setup_topics(kafka_bootstrap, topics)
    codec = serde()
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": f"abort-test-{uuid.uuid4()}"})
    producer.init_transactions(30)

    def event(payment_id: str) -> PaymentInitiated:
        return PaymentInitiated(
            event_id=str(uuid.uuid4()), payment_id=payment_id, seq=1, occurred_at=datetime.now(UTC),
            causation_id=str(uuid.uuid4()), payer_account="acc-a", payee_account="acc-b",
            amount=make_initiate().amount, partner="simbank", reference=None, idempotency_key="k",
            request_hash="h")

    def send(events: list[PaymentInitiated]) -> None:
        for e in events:
            producer.produce(topics.events, key=e.payment_id.encode(), value=codec.encode(e),
                             headers=build_headers(e, source="tests", traceparent=None))

    aborted = [event(str(uuid.uuid4())) for _ in range(10)]
    committed = [event(str(uuid.uuid4())) for _ in range(5)]
    producer.begin_transaction()
    send(aborted)
    producer.flush(30)  # the records are in the log, only the abort marker will hide them
    producer.abort_transaction(30)
    producer.begin_transaction()
    send(committed)
    producer.commit_transaction(30)

    projection = _services(kafka_bootstrap, database_url, topics, tmp_path, "projection", "payment_status").start()
    try:
        wait_for(lambda: _count(database_url, "SELECT count(*) FROM payment_status") >= 5, 60, "committed rows")
    finally:
        assert projection.stop() == 0, projection.log_tail()
    with psycopg.connect(database_url) as conn:
        ids = {row[0] for row in conn.execute("SELECT payment_id FROM payment_status")}
    assert ids == {e.payment_id for e in committed}
    assert not ids & {e.payment_id for e in aborted}
    # The committed records come after the aborted ones, so the projection read past them.
    _assert_positions_at_last_record(database_url, kafka_bootstrap, topics.events)


def test_projection_killed_mid_run_restarts_without_duplicates_or_gaps(
        kafka_bootstrap: str, database_url: str, topics: Topics, tmp_path: Path) -> None:
    setup_topics(kafka_bootstrap, topics)
    commands = [make_initiate(amount_minor=1 + i) for i in range(400)]
    produce(kafka_bootstrap, topics.commands, commands, key_of=lambda m: m.payment_id)  # type: ignore[attr-defined]
    command_path = [_services(kafka_bootstrap, database_url, topics, tmp_path, name).start() for name in COMMAND_PATH]
    try:
        wait_for(lambda: len(_initiated(kafka_bootstrap, topics)) == 400, 90, "400 PaymentInitiated events")
    finally:
        for process in command_path:
            assert process.stop() == 0, process.log_tail()

    # Small batches so the kill lands between and inside many database transactions.
    small_batches = {"PAYMENTS_PROJECTION_BATCH_MAX": "2"}
    projection = service(["projection", "payment_status"], bootstrap=kafka_bootstrap,
                                database_url=database_url, topics=topics, log_dir=tmp_path,
                                extra_env=small_batches).start()
    wait_for(lambda: _count(database_url, "SELECT count(*) FROM payment_timeline") >= 50, 60, "some progress",
             interval_s=0.01)  # the kill must land before the 200 batches are done
    projection.kill()
    partial = _count(database_url, "SELECT count(*) FROM payment_timeline")
    assert partial < 400, "the kill should land mid-run; make batches smaller if this fails"

    projection = service(["projection", "payment_status"], bootstrap=kafka_bootstrap,
                                database_url=database_url, topics=topics, log_dir=tmp_path,
                                extra_env=small_batches).start()
    try:
        wait_for(lambda: _count(database_url, "SELECT count(*) FROM payment_timeline") == 400, 90, "all 400 rows")
    finally:
        assert projection.stop() == 0, projection.log_tail()
    assert _count(database_url, "SELECT count(*) FROM payment_status") == 400
    assert _count(database_url, "SELECT count(DISTINCT payment_id) FROM payment_timeline") == 400
    _assert_positions_at_last_record(database_url, kafka_bootstrap, topics.events)


def test_orchestrator_killed_between_transactions_emits_one_initiated_per_command(
        kafka_bootstrap: str, database_url: str, topics: Topics, tmp_path: Path) -> None:
    setup_topics(kafka_bootstrap, topics)
    total = 2_000
    commands = [make_initiate(amount_minor=1 + i) for i in range(total)]
    # Small batches: many transactions, so the kill lands between (and inside) them.
    small = {"PAYMENTS_BATCH_MAX": "5"}
    intake = [service([name], bootstrap=kafka_bootstrap, database_url=database_url, topics=topics,
                      log_dir=tmp_path).start() for name in COMMAND_PATH[:-1]]
    orchestrator = service(["orchestrator"], bootstrap=kafka_bootstrap, database_url=database_url,
                                  topics=topics, log_dir=tmp_path, extra_env=small).start()
    # Progress is probed by the end offsets (one cheap call on a client connected before the commands go
    # out), not by reading the topic: the orchestrator is fast enough to finish everything while a full
    # read runs, or while a new client connects on a loaded machine (CI saw that once).
    events = partitions_of(kafka_bootstrap, [topics.events])
    ask = end_offsets_asker(kafka_bootstrap)
    ask(events)
    # Half the commands go out before the kill and half after it, so the kill always lands before the
    # run's end, however late a loaded machine lets this test see the first events (CI once saw all
    # 2,000 done by then, when everything went out at once).
    first, rest = commands[:total // 2], commands[total // 2:]
    produce(kafka_bootstrap, topics.commands, first, key_of=lambda m: m.payment_id)  # type: ignore[attr-defined]
    wait_for(lambda: sum(ask(events).values()) >= 40, 60, "some PaymentInitiated", interval_s=0.02)
    orchestrator.kill()
    before_restart = len(_initiated(kafka_bootstrap, topics))
    assert 0 < before_restart <= len(first)
    produce(kafka_bootstrap, topics.commands, rest, key_of=lambda m: m.payment_id)  # type: ignore[attr-defined]

    orchestrator = service(["orchestrator"], bootstrap=kafka_bootstrap, database_url=database_url,
                                  topics=topics, log_dir=tmp_path, extra_env=small).start()
    try:
        wait_for(lambda: len(_initiated(kafka_bootstrap, topics)) >= total, 120, f"{total} PaymentInitiated")
    finally:
        for process in (orchestrator, *intake):
            assert process.stop() == 0, process.log_tail()
    events = _initiated(kafka_bootstrap, topics)
    per_payment = Counter(e.payment_id for e in events)
    assert set(per_payment) == {c.payment_id for c in commands}
    assert set(per_payment.values()) == {1}, [p for p, n in per_payment.items() if n > 1][:5]
