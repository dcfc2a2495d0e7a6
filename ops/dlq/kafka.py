"""The edge of `payments dlq`: reading the dead-letter and audit topics, `projection_dead_letters`, and the
redrive transaction (its steps are in `execute_redrive`; ops.dlq says why the design holds).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final

import psycopg
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from ops.dlq.model import Audit, DlqError, Letter, Plan, Redrive, Selection, letter_of, payment_id_of, plan_redrive
from ops.registry import topology
from ops.settings import Settings
from payments.contracts.codec import Serde
from payments.contracts.topics import DLQ_REDRIVES
from payments.runtime.config import PRODUCER_MESSAGE_BYTES_MAX
from payments.runtime.connection import client_config
from payments.runtime.deadletter import original_headers
from payments.runtime.reader import committed_records, end_offsets, partitions_of
from payments.runtime.records import headers_of
from payments.runtime.retry import retry_kafka
from payments.runtime.topics import Topics, ensure_topics

TRANSACTIONAL_ID: Final = "payments-dlq-redrive"  # under the topic prefix: one per deployment
TRANSACTION_TIMEOUT_MS: Final = 60_000
KAFKA_CALL_TIMEOUT_S: Final = 30.0
CALL_ATTEMPTS_MAX: Final = 5  # of init_transactions() and commit_transaction() through retriable errors
READ_TIMEOUT_S: Final = 300.0
DB_CONNECT_TIMEOUT_S: Final = 5


def _letters(records: Iterable[Any], serde: Serde, topics: Topics,
             keep_value: Callable[[Letter], bool]) -> list[Letter]:
    letters = []
    for record in records:
        letter = letter_of(record.partition(), record.offset(), timestamp_ms=record.timestamp()[1],
                           key=record.key(), value=record.value(), headers=headers_of(record))
        letter = replace(letter, payment_id=payment_id_of(letter, serde, topics))
        letters.append(letter if keep_value(letter) else replace(letter, value=None))
    return letters


def read_letters(settings: Settings, keep_value: Callable[[Letter], bool] = lambda letter: False) -> list[Letter]:
    """Every committed record of the DLQ up to its current end; values only of those `keep_value` keeps."""
    dlq = settings.topics.dlq
    records = committed_records(settings.kafka, partitions_of(settings.kafka, [dlq]),
                                timeout_s=READ_TIMEOUT_S)
    return _letters(records, settings.serde(), settings.topics, keep_value)


def read_letter(settings: Settings, partition: int, offset: int) -> Letter:
    """The DLQ record at partition:offset, value kept (DlqError if there is no committed record there)."""
    dlq = settings.topics.dlq
    known = partitions_of(settings.kafka, [dlq])
    if (dlq, partition) not in known:
        raise DlqError(f"{dlq} has no partition {partition} (it has {len(known)})")
    first = end_offsets(settings.kafka, [(dlq, partition)], earliest=True)[(dlq, partition)]
    end = end_offsets(settings.kafka, [(dlq, partition)])[(dlq, partition)]
    if not first <= offset < end:
        raise DlqError(f"no dead letter at {partition}:{offset}: partition {partition} of {dlq} holds "
                       f"offsets {first} to {end - 1} (committed)")
    records = committed_records(settings.kafka, [(dlq, partition)], starts={(dlq, partition): offset},
                                ends={(dlq, partition): offset + 1}, timeout_s=KAFKA_CALL_TIMEOUT_S)
    found = _letters(records, settings.serde(), settings.topics, lambda letter: True)
    if not found:
        raise DlqError(f"no committed record at {partition}:{offset} of {dlq} (a transaction marker or an aborted "
                       f"record)")
    return found[0]


def audit_topic(settings: Settings) -> str:
    return settings.topics.name(DLQ_REDRIVES)


def read_redrives(settings: Settings) -> list[Redrive]:
    """Every committed audit record; none when the audit topic does not exist yet (nothing was ever redriven)."""
    topic = audit_topic(settings)
    admin = AdminClient(client_config(settings.kafka))
    metadata = retry_kafka(lambda: admin.list_topics(timeout=KAFKA_CALL_TIMEOUT_S).topics, "list_topics")
    if topic not in metadata:
        return []
    partitions = [(topic, partition) for partition in sorted(metadata[topic].partitions)]
    redrives = []
    for record in committed_records(settings.kafka, partitions, timeout_s=READ_TIMEOUT_S):
        value = record.value()
        if value is None:  # a tombstone: nobody writes them, but compaction would honour one
            continue
        try:
            redrives.append(Redrive.from_json(value))
        except (ValueError, KeyError, TypeError) as error:
            raise DlqError(f"audit record {record.partition()}:{record.offset()} of {topic} is unreadable "
                           f"({error}): fix or remove it before redriving") from None
    return redrives


def topics_known(settings: Settings) -> frozenset[str]:
    return frozenset(spec.name for spec in topology(settings.topics, settings.partitions))


@dataclass(frozen=True)
class ProjectionLetters:
    rows: list[dict[str, Any]]
    total: int
    problem: str | None = None  # why the rows could not be read (the database down, not migrated)


def projection_letters(database_url: str, selection: Selection, limit: int) -> ProjectionLetters:
    """Rows of `projection_dead_letters` that match, newest first, read in a read-only transaction."""
    where: list[str] = ["TRUE"]
    params: list[object] = []
    for column, wanted in (("error_class", selection.error_class), ("reason_code", selection.reason_code),
                           ("topic", selection.source_topic)):
        if wanted is not None:
            where.append(f"{column} = %s")
            params.append(wanted)
    if selection.since_ms is not None:
        where.append("created_at >= to_timestamp(%s::bigint / 1000.0)")
        params.append(selection.since_ms)
    condition = " AND ".join(where)
    query = (f'SELECT id, projection, topic, partition, "offset", record_key, octet_length(record_value), '
             f"error_class, reason_code, reason, created_at FROM projection_dead_letters WHERE {condition} "
             f"ORDER BY created_at DESC, id DESC LIMIT {int(limit)}")
    try:
        with psycopg.connect(database_url, connect_timeout=DB_CONNECT_TIMEOUT_S) as conn:
            conn.read_only = True
            total = conn.execute(f"SELECT count(*) FROM projection_dead_letters WHERE {condition}", params).fetchone()
            rows = conn.execute(query, params).fetchall()
    except psycopg.errors.UndefinedTable:
        return ProjectionLetters([], 0, "no projection_dead_letters table (run `payments db migrate`)")
    except psycopg.OperationalError as error:
        return ProjectionLetters([], 0, f"database not reachable: {str(error).strip().splitlines()[0]}")
    names = ("id", "projection", "topic", "partition", "offset", "key", "value_bytes", "error_class",
             "reason_code", "reason", "created_at")
    found = []
    for row in rows:
        item = dict(zip(names, row, strict=True))
        item["key"] = bytes(item["key"]).decode(errors="replace") if item["key"] is not None else None
        item["created_at"] = item["created_at"].isoformat()
        found.append(item)
    return ProjectionLetters(found, int(total[0]) if total else 0)


class _Delivery:
    """Collects the delivery reports of one transaction's records."""

    def __init__(self) -> None:
        self.positions: dict[int, tuple[int, int]] = {}
        self.errors: dict[int, KafkaError] = {}

    def callback(self, index: int) -> Callable[[KafkaError | None, Any], None]:
        def delivered(error: KafkaError | None, message: Any) -> None:
            if error is not None:
                self.errors[index] = error
            else:
                self.positions[index] = (message.partition(), message.offset())
        return delivered


def redrive_producer(settings: Settings) -> Producer:
    return Producer(client_config(settings.kafka, {
        "transactional.id": f"{settings.topics.prefix}{TRANSACTIONAL_ID}",
        "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
        "enable.idempotence": True,
        "partitioner": "murmur2_random",  # a key lands where upstream's and our services' producers put it
        "message.max.bytes": PRODUCER_MESSAGE_BYTES_MAX,
    }))


def execute_redrive(settings: Settings, letters: list[Letter], selection: Selection, *, reason: str, who: str,
                    now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> tuple[Plan, list[Redrive]]:
    """Redrive the selected letters (their values kept) not redriven before; return the plan and the audit records.

    1. Make sure the audit topic exists (it is in the topology; a deployment older than it may lack it).
    2. init_transactions(): fences every other redrive run and settles what a crashed one left open.
    3. Read the audit to its end and plan again: what another run committed meanwhile is skipped now.
    4. Begin; produce each record to its source topic; flush, so each one's position is known.
    5. Produce the audit records naming those positions; commit. Any failure before the commit aborts:
       nothing is redriven. A commit whose outcome is unknown is settled by the next run's step 2.
    """
    spec = [item for item in topology(settings.topics, settings.partitions) if item.name == audit_topic(settings)]
    assert spec, "the audit topic is declared in the topology (ops.registry)"
    ensure_topics(settings.kafka, spec)
    producer = redrive_producer(settings)
    _retrying(lambda: producer.init_transactions(KAFKA_CALL_TIMEOUT_S), "could not start the redrive transaction")
    plan = plan_redrive(letters, selection, Audit.of(read_redrives(settings), settings.topics.dlq),
                        topics_known(settings))
    if not plan.redrive:
        return plan, []
    try:
        producer.begin_transaction()
        written = _produce_redrives(producer, plan.redrive, settings, reason=reason, who=who, when=now())
        _commit(producer)
    except KafkaException as error:
        _abort(producer, error.args[0])
        raise AssertionError("unreachable: _abort raises") from None
    except BufferError:  # the producer's queue is full: more than it holds in one transaction
        _abort(producer, KafkaError(KafkaError._QUEUE_FULL, "the producer queue is full", txn_requires_abort=True))
        raise AssertionError("unreachable: _abort raises") from None
    return plan, written


def _produce_redrives(producer: Producer, chosen: list[Letter], settings: Settings, *, reason: str, who: str,
                      when: datetime) -> list[Redrive]:
    delivery = _Delivery()
    for index, letter in enumerate(chosen):
        assert letter.source is not None and letter.value is not None, "a planned redrive has its record"
        producer.produce(letter.source[0], key=letter.key, value=letter.value,
                         headers=[*original_headers(letter.headers)], on_delivery=delivery.callback(index))
    if producer.flush(KAFKA_CALL_TIMEOUT_S) != 0 or delivery.errors or len(delivery.positions) != len(chosen):
        index, error = next(iter(delivery.errors.items()), (-1, KafkaError(KafkaError._TIMED_OUT, "flush")))
        failed = chosen[index].position if index >= 0 else "some records"
        raise KafkaException(KafkaError(error.code(), f"dlq {failed} was not delivered: {error.str()}",
                                        fatal=error.fatal(), txn_requires_abort=not error.fatal()))
    written = []
    for index, letter in enumerate(chosen):
        assert letter.source is not None
        partition, offset = delivery.positions[index]
        written.append(Redrive(settings.topics.dlq, letter.partition, letter.offset, *letter.source,
                               target_topic=letter.source[0], target_partition=partition, target_offset=offset,
                               who=who, when=when.isoformat(timespec="seconds"), reason=reason))
    for redrive in written:
        producer.produce(audit_topic(settings), key=redrive.key, value=redrive.to_json())
    return written


def _retrying(call: Callable[[], None], failed: str) -> None:
    """init_transactions(), asked again while its error is retriable (bounded): aborting what another run left
    open can take longer than one call's timeout on a busy cluster."""
    for attempt in range(1, CALL_ATTEMPTS_MAX + 1):
        try:
            call()
            return
        except KafkaException as error:
            if not error.args[0].retriable() or attempt == CALL_ATTEMPTS_MAX:
                raise DlqError(f"{failed}: {error.args[0]}; nothing was redriven") from None


def _commit(producer: Producer) -> None:
    """Commit, asking again while the error is retriable (bounded); anything else propagates."""
    for attempt in range(1, CALL_ATTEMPTS_MAX + 1):
        try:
            producer.commit_transaction(KAFKA_CALL_TIMEOUT_S)
            return
        except KafkaException as error:
            if not error.args[0].retriable() or attempt == CALL_ATTEMPTS_MAX:
                raise


def _abort(producer: Producer, error: KafkaError) -> None:
    """Map a failed transaction onto one clear DlqError (librdkafka's error classes), aborting when it can."""
    if error.fatal():  # fenced: another run initialised after this one and owns the redrive now
        raise DlqError(f"another redrive run started meanwhile and fenced this one ({error.str()}); nothing was "
                       f"redriven by this run: `payments dlq list` shows what the other did")
    if error.txn_requires_abort():
        with contextlib.suppress(KafkaException):  # if this fails, the next run's init_transactions() aborts it
            producer.abort_transaction(KAFKA_CALL_TIMEOUT_S)
        raise DlqError(f"the redrive transaction failed and was aborted ({error.str()}); nothing was redriven")
    raise DlqError(f"the redrive commit failed ({error.str()}): its outcome is unknown until the next run; "
                   f"`payments dlq redrive` again settles it and redrives only what is not redriven")

