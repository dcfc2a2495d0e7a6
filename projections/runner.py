"""Kafka -> PostgreSQL, exactly once: the read-model change and the consumed offsets commit together.

A checkpoint is, in order:
  1. consume up to `batch_records_max` records (read_committed: aborted transactions never arrive);
  2. open ONE PostgreSQL transaction;
  3. lock this projection's rows of projection_offsets and check they still hold the positions this
     runner last stored or loaded; if not (a replay was swapped in, or another instance wrote), roll
     back, seek to the stored offsets and drop the batch: it is consumed again from there;
  4. per record: decode (failure -> a row in projection_dead_letters with the original bytes); then
     the decoded messages go to `projection.apply_batch` in one call when the projection has it
     (bounded statements per batch, executemany is pipelined), else to `projection.apply` one by
     one; both are idempotent per event id, so a replayed record is a no-op;
  5. upsert the next offset to read for every partition in the batch into projection_offsets;
  6. commit. Kafka's own group offsets are never committed: PostgreSQL is the only position of record.
On start and on every assignment the consumer seeks to the offsets stored in PostgreSQL. A batch is
bounded by `batch_records_max` records and its latency by `poll_timeout_ms`.

Database errors are translated at this edge (projections.errors) and each ends in one outcome:
  - DatabaseUnavailableError (connection lost or refused, server restarting): the transaction rolled
    back with its offsets, so the same batch is retried after a growing pause, on a new connection;
    past `db_retry_attempts_max` the runner is rebuilt (FatalProcessorError), which the process bounds;
  - ProjectionApplyError (the database refuses what a record makes, e.g. a constraint or an overflow):
    the batch is applied again one record at a time, each in a savepoint with deferred constraints
    checked at once, and a refused record goes to projection_dead_letters (`ProjectionApplyError`)
    in the same transaction as the rest: the partition keeps moving.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import psycopg
import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaRecord
from psycopg.types.json import Jsonb

from payments.contracts.codec import Serde
from payments.contracts.envelope import parse_headers
from payments.contracts.errors import ContractError
from payments.contracts.messages import Message
from payments.runtime.deadletter import reason_code_of
from payments.runtime.errors import FatalProcessorError
from payments.runtime.records import data_records, headers_of
from payments.runtime.topics import Topics
from projections.errors import DatabaseUnavailableError, ProjectionApplyError, translate

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class RecordMeta:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int


class Projection(Protocol):
    """A read model. `apply` runs inside the runner's transaction and must be idempotent per event."""

    name: str
    topics: tuple[str, ...]  # base topic names

    def apply(self, cur: psycopg.Cursor[tuple[object, ...]], message: Message, meta: RecordMeta) -> None: ...


@runtime_checkable
class BatchProjection(Projection, Protocol):
    """A projection that applies a whole batch of decoded records at once (in record order)."""

    def apply_batch(self, cur: psycopg.Cursor[tuple[object, ...]],
                    items: Sequence[tuple[Message, RecordMeta]]) -> None: ...


@dataclass(frozen=True)
class RunnerConfig:
    batch_records_max: int = 1000
    record_bytes_max: int = 512 * 1024  # a larger value is parked as OversizeRecord, as the Kafka services do
    poll_timeout_ms: int = 200
    db_retry_attempts_max: int = 8
    db_retry_backoff_max_s: float = 5.0


class ProjectionRunner:
    def __init__(self, projection: Projection, *, bootstrap_servers: str, database_url: str, topics: Topics,
                 serde: Serde, config: RunnerConfig | None = None) -> None:
        self.projection = projection
        self.serde = serde
        self.config = config or RunnerConfig()
        self._database_url = database_url
        self._topics = topics
        self._log = log.bind(projection=projection.name)
        try:
            self._conn = psycopg.connect(database_url)
        except psycopg.Error as error:
            raise FatalProcessorError(f"cannot connect to the database: {translate(error)}") from error
        # The next offsets this runner last stored or loaded (None: nothing stored): step 3's fence.
        self._positions: dict[tuple[str, int], int | None] = {}
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap_servers,
            "group.id": topics.group(f"projection-{projection.name}"),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "max.poll.interval.ms": 120_000,
            # A crashed runner's partitions move to a live one after this long (the 45 s default is slow).
            "session.timeout.ms": 10_000,
        })

    def run(self, stop: threading.Event) -> None:
        """Apply batches until `stop`. A Kafka or database error outside a batch's own retries (a rebalance
        callback reading the stored offsets, say) is fatal for this runner: the caller rebuilds it."""
        self.consumer.subscribe([self._topics.name(t) for t in self.projection.topics], on_assign=self._on_assign)
        try:
            while not stop.is_set():
                self.step()
        except (KafkaException, psycopg.Error) as error:
            raise FatalProcessorError(f"{type(error).__name__} outside a batch: {error}") from error
        finally:
            self.close()

    def step(self) -> int:
        records = data_records(
            self.consumer.consume(self.config.batch_records_max, self.config.poll_timeout_ms / 1000), self._log)
        if records:
            self._checkpoint(records)
        return len(records)

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Assign partitions directly (no group membership, e.g. a replay), starting at the stored offsets."""
        self._on_assign(self.consumer, partitions)

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self._conn.close()

    # -- checkpoint ---------------------------------------------------------------------------

    def _checkpoint(self, records: list[KafkaRecord]) -> None:
        isolate = False
        for attempt in range(1, self.config.db_retry_attempts_max + 1):
            try:
                self._apply_batch(records, isolate=isolate)
                return
            except _PositionMoved as moved:
                self._log.warning("projection_positions_moved", detail=str(moved))
                self._seek_to_stored(self.consumer.assignment())
                return
            except psycopg.Error as error:
                failure = translate(error)
                if isinstance(failure, ProjectionApplyError) and not isolate:
                    self._log.warning("projection_batch_refused", error=str(failure), records=len(records))
                    isolate = True  # find the record the database refuses; the rest goes through
                    continue
                if isinstance(failure, ProjectionApplyError):
                    raise  # refused outside any record (the offsets upsert itself): a bug, crash loudly
                self._log.warning("projection_batch_retry", attempt=attempt, error=str(failure))
                time.sleep(min(0.1 * 2**attempt, self.config.db_retry_backoff_max_s))
                self._reconnect()
        # Still unreachable: rebuild (new connection, positions from PostgreSQL), bounded by the process.
        raise FatalProcessorError(f"projection {self.projection.name}: database unavailable after "
                                  f"{self.config.db_retry_attempts_max} attempts")

    def _apply_batch(self, records: list[KafkaRecord], *, isolate: bool = False) -> None:
        """Steps 2-6 of the module docstring; with `isolate`, each record in its own savepoint."""
        positions: dict[tuple[str, int], int] = {}
        decoded: list[tuple[Message, RecordMeta]] = []
        with self._conn.transaction(), self._conn.cursor() as cur:
            self._check_positions(cur, {(r.topic(), r.partition()) for r in records})  # type: ignore[misc]
            for record in records:
                topic, partition, offset = record.topic(), record.partition(), record.offset()
                assert topic is not None and partition is not None and offset is not None
                meta = RecordMeta(topic, partition, offset, record.timestamp()[1])
                message = self._decode(cur, record, meta)
                if message is not None and isolate:
                    self._apply_isolated(cur, record, message, meta)
                elif message is not None:
                    decoded.append((message, meta))
                positions[(topic, partition)] = offset + 1
            if decoded:
                self._apply(cur, decoded)
            cur.executemany(
                """INSERT INTO projection_offsets (projection, topic, partition, next_offset, updated_at)
                   VALUES (%s, %s, %s, %s, now())
                   ON CONFLICT (projection, topic, partition)
                   DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()""",
                [(self.projection.name, t, p, o) for (t, p), o in positions.items()])
        self._positions.update(positions)

    def _check_positions(self, cur: psycopg.Cursor[tuple[object, ...]], partitions: set[tuple[str, int]]) -> None:
        cur.execute("""SELECT topic, partition, next_offset FROM projection_offsets
                       WHERE projection = %s ORDER BY topic, partition FOR UPDATE""", (self.projection.name,))
        stored = {(str(t), int(p)): int(o) for t, p, o in cur.fetchall()}  # type: ignore[call-overload]
        moved = {tp: (self._positions.get(tp), stored.get(tp)) for tp in partitions
                 if self._positions.get(tp) != stored.get(tp)}
        if moved:
            raise _PositionMoved(f"expected/stored next offsets differ: {moved}")

    def _apply(self, cur: psycopg.Cursor[tuple[object, ...]], items: list[tuple[Message, RecordMeta]]) -> None:
        if isinstance(self.projection, BatchProjection):
            self.projection.apply_batch(cur, items)
        else:
            for message, meta in items:
                self.projection.apply(cur, message, meta)

    def _apply_isolated(self, cur: psycopg.Cursor[tuple[object, ...]], record: KafkaRecord, message: Message,
                        meta: RecordMeta) -> None:
        """Apply one record in a savepoint, its deferred constraints checked at once; a refusal dead-letters it."""
        try:
            with self._conn.transaction():
                self._apply(cur, [(message, meta)])
                cur.execute("SET CONSTRAINTS ALL IMMEDIATE")  # fires this record's deferred checks now
                cur.execute("SET CONSTRAINTS ALL DEFERRED")
        except psycopg.Error as error:
            failure = translate(error)
            if isinstance(failure, DatabaseUnavailableError):
                raise
            self._dead_letter_row(cur, record, meta, error_class="ProjectionApplyError",
                                  reason_code="projection_apply_error", reason=str(failure))

    def _decode(self, cur: psycopg.Cursor[tuple[object, ...]], record: KafkaRecord,
                meta: RecordMeta) -> Message | None:
        """The record's message, or None after writing it to projection_dead_letters."""
        value = record.value()
        try:
            if value is None:
                raise _Unusable("EmptyRecord", "empty_record", "record has no value")
            if len(value) > self.config.record_bytes_max:
                raise _Unusable("OversizeRecord", "oversize_record",
                                f"value is {len(value)} bytes, limit {self.config.record_bytes_max}")
            parse_headers(headers_of(record))
            message = self.serde.decode(value)
        except _Unusable as unusable:
            self._dead_letter_row(cur, record, meta, error_class=unusable.error_class,
                                  reason_code=unusable.reason_code, reason=str(unusable))
            return None
        except ContractError as error:
            self._dead_letter_row(cur, record, meta, error_class=type(error).__name__,
                                  reason_code=reason_code_of(error.reason), reason=str(error))
            return None
        return message

    def _dead_letter_row(self, cur: psycopg.Cursor[tuple[object, ...]], record: KafkaRecord, meta: RecordMeta, *,
                         error_class: str, reason_code: str, reason: str) -> None:
        self._log.warning("projection_dead_letter", error_class=error_class, reason_code=reason_code,
                          topic=meta.topic, partition=meta.partition, offset=meta.offset, reason=reason[:500])
        headers = [[name, value.hex()] for name, value in headers_of(record)]
        cur.execute(
            """INSERT INTO projection_dead_letters (projection, topic, partition, "offset", record_key,
                   record_value, headers, error_class, reason_code, reason)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (projection, topic, partition, "offset") DO NOTHING""",
            (self.projection.name, meta.topic, meta.partition, meta.offset, record.key(), record.value(),
             Jsonb(headers), error_class, reason_code, reason))

    # -- positions ----------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = self._stored_offsets()
        for tp in partitions:
            tp.offset = stored.get((tp.topic, tp.partition), OFFSET_BEGINNING)
            self._positions[(tp.topic, tp.partition)] = stored.get((tp.topic, tp.partition))
        consumer.assign(partitions)
        self._log.info("projection_assigned",
                       partitions=[f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in partitions])

    def _seek_to_stored(self, partitions: list[TopicPartition]) -> None:
        stored = self._stored_offsets()
        for tp in partitions:
            self._positions[(tp.topic, tp.partition)] = stored.get((tp.topic, tp.partition))
            self.consumer.seek(TopicPartition(tp.topic, tp.partition,
                                              stored.get((tp.topic, tp.partition), OFFSET_BEGINNING)))

    def _stored_offsets(self) -> dict[tuple[str, int], int]:
        with self._conn.transaction():
            rows = self._conn.execute(
                "SELECT topic, partition, next_offset FROM projection_offsets WHERE projection = %s",
                (self.projection.name,)).fetchall()
        return {(str(topic), int(partition)): int(offset) for topic, partition, offset in rows}

    def _reconnect(self) -> None:
        # No rewind here: the same in-memory batch is retried, and the rolled-back transaction left
        # the stored offsets where they were. If the commit did land before the connection broke,
        # the retry is a no-op because `apply` is idempotent per event id.
        try:
            self._conn.close()
            self._conn = psycopg.connect(self._database_url)
        except psycopg.Error as error:
            self._log.warning("projection_reconnect_failed", error=str(translate(error)))



class _PositionMoved(Exception):
    """The stored offsets are not the ones this runner last saw: someone else moved them."""


class _Unusable(Exception):
    def __init__(self, error_class: str, reason_code: str, reason: str) -> None:
        super().__init__(reason)
        self.error_class = error_class
        self.reason_code = reason_code
