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
  - DatabaseUnavailableError (connection lost or refused, server restarting, AdminShutdown): the
    transaction rolled back with its offsets, so the same batch is retried on a new connection after a
    growing pause (capped at `db_retry_backoff_max_s`), for as long as the database stays away, with a
    `database_unavailable` log line per attempt. A runner started while the database is down waits for
    it the same way (`waiting_for_database`). A database that does not answer at all (a stopped
    server) blocks the call: the watchdog ends the process after `db_call_deadline_s`;
  - ProjectionApplyError (the database refuses what a record makes, e.g. a constraint or an overflow):
    the batch is applied again one record at a time, each in a savepoint with deferred constraints
    checked at once, and a refused record goes to projection_dead_letters (`ProjectionApplyError`)
    in the same transaction as the rest: the partition keeps moving. Refused even then, outside any
    record (the offsets check or upsert, a dead-letter row), or when reading the stored offsets, it is
    a FatalProcessorError: the process rebuilds the runner from the stored offsets, and exits with
    code 3 when that keeps failing (payments.runtime.service; docs/operations.md, "Faults").
No psycopg error leaves `step` or `run` untranslated.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import psycopg
import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaRecord
from opentelemetry.trace import SpanKind
from psycopg.types.json import Jsonb

from payments.contracts.codec import Serde
from payments.contracts.envelope import parse_headers
from payments.contracts.errors import ContractError
from payments.contracts.messages import Message
from payments.runtime import metrics, tracing
from payments.runtime.connection import Kafka, client_config
from payments.runtime.deadletter import reason_code_of
from payments.runtime.errors import FatalProcessorError
from payments.runtime.health import Health, read_positions, start_lag_probe
from payments.runtime.reader import end_offsets_asker
from payments.runtime.records import data_records, headers_of
from payments.runtime.topics import Topics
from payments.runtime.watchdog import Watchdog
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
    db_retry_backoff_max_s: float = 5.0
    db_connect_timeout_s: int = 5
    db_call_deadline_s: float = 60.0  # one database transaction (a batch) may block this long: then the watchdog
    progress_bound_s: float = 120.0
    lag_check_s: float = 5.0  # how often a background thread asks the brokers for the input lag (/healthz)


class ProjectionRunner:
    def __init__(self, projection: Projection, *, bootstrap_servers: Kafka, database_url: str, topics: Topics,
                 serde: Serde, config: RunnerConfig | None = None, watchdog: Watchdog | None = None,
                 health: Health | None = None) -> None:
        self.projection = projection
        self.serde = serde
        self.config = config or RunnerConfig()
        self.watchdog = watchdog or Watchdog(f"projection-{projection.name}")
        self.health = health or Health(self.config.progress_bound_s)
        self._database_url = database_url
        self._bootstrap_servers = bootstrap_servers
        self._topics = topics
        self._log = log.bind(projection=projection.name)
        self._labels = {"service": f"projection-{projection.name}"}
        self._dead_counts: dict[tuple[str, str, str], int] = {}  # this batch's dead letters, recorded once committed
        self._batch_counts: dict[str, int] = {}  # this batch's records per base topic, the same
        self._applied_ms = 0  # the newest record timestamp committed (for the lag in seconds)
        metrics.GAUGES.register(metrics.PROJECTION_LAG_SECONDS, projection.name, self._lag_seconds)
        self._stop = threading.Event()  # run() replaces it; a replay's runner is never stopped this way
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        # The next offsets this runner last stored or loaded (None: nothing stored): step 3's fence.
        self._positions: dict[tuple[str, int], int | None] = {}
        self._read: dict[tuple[str, int], int] = {}  # the consumer's positions, taken by the loop when idle
        self.consumer = Consumer(client_config(bootstrap_servers, {
            "group.id": topics.group(f"projection-{projection.name}"),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "max.poll.interval.ms": 120_000,
            # A crashed runner's partitions move to a live one after this long (the 45 s default is slow).
            "session.timeout.ms": 10_000,
        }))

    def run(self, stop: threading.Event) -> None:
        """Apply batches until `stop`. A Kafka or database error outside a batch's own retries (a rebalance
        callback reading the stored offsets, say) is fatal for this runner: the caller rebuilds it."""
        self._stop = stop
        self.consumer.subscribe([self._topics.name(t) for t in self.projection.topics], on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_revoke)
        # Liveness counts lag: records in Kafka past what the database stored, and no commit, is unhealthy.
        probe_stop = start_lag_probe(self.health, self.config.lag_check_s, self._stored_positions,
                                     end_offsets_asker(self._bootstrap_servers))
        try:
            while not stop.is_set():
                self.step()
        except (KafkaException, psycopg.Error) as error:
            raise FatalProcessorError(f"{type(error).__name__} outside a batch: {error}") from error
        finally:
            probe_stop.set()
            self.close()

    def _stored_positions(self) -> dict[tuple[str, int], int]:
        """The stored next offsets, or the consumer's position as the loop last took it when idle where that
        is further (past the commit marker that ends a partition written in transactions:
        health.read_positions). Called by the lag probe's thread: it never touches the consumer."""
        read = dict(self._read)
        return {tp: max(offset or 0, read.get(tp, 0)) for tp, offset in dict(self._positions).items()}

    def step(self) -> int:
        with self.watchdog.guard("consume", self.config.db_call_deadline_s + self.config.poll_timeout_ms / 1000):
            records = data_records(
                self.consumer.consume(self.config.batch_records_max, self.config.poll_timeout_ms / 1000), self._log)
        self.health.consumed(len(records))
        if records:
            self._checkpoint(records)
        else:  # idle: where the consumer stands, for the lag probe
            self._read = read_positions(self.consumer, {tp: o or 0 for tp, o in self._positions.items()})
        self.health.iterated()
        return len(records)

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Assign partitions directly (no group membership, e.g. a replay), starting at the stored offsets."""
        self._on_assign(self.consumer, partitions)

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            if self._conn is not None:
                self._conn.close()

    # -- checkpoint ---------------------------------------------------------------------------

    def _checkpoint(self, records: list[KafkaRecord]) -> None:
        isolate = False
        attempt = 0
        while True:
            attempt += 1
            try:
                self._dead_counts, self._batch_counts = {}, {}
                started = time.monotonic()
                with self.watchdog.guard("database_transaction", self.config.db_call_deadline_s):
                    self._apply_batch(records, isolate=isolate)
                metrics.TRANSACTION_COMMIT.record(time.monotonic() - started, self._labels)
                self.health.committed()
                self._record_metrics()
                if tracing.enabled():
                    self._trace(records, time.time_ns() - int((time.monotonic() - started) * 1e9))
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
                    # Each record was applied alone and the batch was still refused: what failed is the
                    # runner's own bookkeeping (the offsets check or upsert, a dead-letter row), which no
                    # record explains and no dead letter can park. Rebuild from the stored offsets.
                    raise FatalProcessorError(
                        f"projection {self.projection.name}: the database refused a batch of {len(records)} "
                        f"records even record by record, so outside any record (its offsets or dead-letter "
                        f"bookkeeping): {failure}") from error
                # The batch and its offsets rolled back together: the same batch is retried as it is.
                self._log.warning("database_unavailable", attempt=attempt, error=str(failure), records=len(records))
                self._drop_connection()
                if self._stop.wait(min(0.2 * 2 ** min(attempt, 10), self.config.db_retry_backoff_max_s)):
                    raise FatalProcessorError("stopped while the database was unavailable") from error

    def _record_metrics(self) -> None:
        """What the committed batch did (counted by _apply_batch), into the metrics."""
        for topic, count in self._batch_counts.items():
            metrics.RECORDS_PROCESSED.add(count, {**self._labels, "topic": topic})
        for (topic, error_class, reason_code), count in self._dead_counts.items():
            metrics.RECORDS_DEAD_LETTERED.add(count, {**self._labels, "topic": topic, "error_class": error_class,
                                                      "reason_code": reason_code})

    def _trace(self, records: list[KafkaRecord], started_ns: int) -> None:
        """One CONSUMER span per committed record, under the record's own context, spanning the PostgreSQL
        transaction that applied it (a batch holds many payments: each joins its own trace)."""
        ended_ns = time.time_ns()
        group = self._topics.group(f"projection-{self.projection.name}")
        for record in records:
            traceparent = next((value.decode(errors="replace") for name, value in headers_of(record)
                                if name == "traceparent"), None)
            raw_key = record.key()
            key = raw_key.decode(errors="replace") if raw_key else None
            attributes = {**tracing.kafka_attributes(  # the projections' topics are keyed by the payment id
                "process", record.topic() or "", partition=record.partition(), offset=record.offset(), key=key,
                group=group, payment_id=key),
                "db.system.name": "postgresql", "db.operation.name": "COMMIT", "db.batch.size": len(records)}
            span = tracing.TRACER.start_span(f"process {record.topic()}", context=tracing.context_of(traceparent),
                                             kind=SpanKind.CONSUMER, attributes=attributes,
                                             start_time=started_ns)
            span.end(end_time=ended_ns)

    def _lag_seconds(self) -> list[tuple[float, metrics.Labels]]:
        """How old the newest applied record is while records wait behind it (0 when caught up)."""
        waiting = sum(self.health.lag_by_partition.values()) > 0
        age = time.time() - self._applied_ms / 1000 if waiting and self._applied_ms > 0 else 0.0
        return [(max(0.0, age), self._labels)]

    def _apply_batch(self, records: list[KafkaRecord], *, isolate: bool = False) -> None:
        """Steps 2-6 of the module docstring; with `isolate`, each record in its own savepoint."""
        positions: dict[tuple[str, int], int] = {}
        decoded: list[tuple[Message, RecordMeta]] = []
        conn = self._db()
        with conn.transaction(), conn.cursor() as cur:
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
                base = self._topics.base(topic)
                self._batch_counts[base] = self._batch_counts.get(base, 0) + 1
                self._applied_ms = max(self._applied_ms, meta.timestamp_ms)
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
            with self._db().transaction():
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
        count_key = (self._topics.base(meta.topic), error_class, reason_code)
        self._dead_counts[count_key] = self._dead_counts.get(count_key, 0) + 1
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
        self.health.partitions += len(partitions)
        self._log.info("projection_assigned",
                       partitions=[f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:  # another instance reads them now: their lag is not this one's
            self._positions.pop((tp.topic, tp.partition), None)
            self._read.pop((tp.topic, tp.partition), None)
        self.health.partitions = max(0, self.health.partitions - len(partitions))

    def _seek_to_stored(self, partitions: list[TopicPartition]) -> None:
        stored = self._stored_offsets()
        for tp in partitions:
            self._positions[(tp.topic, tp.partition)] = stored.get((tp.topic, tp.partition))
            self.consumer.seek(TopicPartition(tp.topic, tp.partition,
                                              stored.get((tp.topic, tp.partition), OFFSET_BEGINNING)))

    def _stored_offsets(self) -> dict[tuple[str, int], int]:
        """What PostgreSQL holds, waiting for it through connection loss (a rebalance needs the answer)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                with self.watchdog.guard("read_offsets", self.config.db_call_deadline_s):
                    conn = self._db()
                    with conn.transaction():
                        rows = conn.execute(
                            "SELECT topic, partition, next_offset FROM projection_offsets WHERE projection = %s",
                            (self.projection.name,)).fetchall()
                return {(str(topic), int(partition)): int(offset)  # type: ignore[call-overload]
                        for topic, partition, offset in rows}
            except psycopg.Error as error:
                failure = translate(error)
                if not isinstance(failure, DatabaseUnavailableError):
                    raise FatalProcessorError(f"projection {self.projection.name}: reading the stored offsets "
                                              f"failed: {failure}") from error
                self._log.warning("database_unavailable", attempt=attempt, error=str(failure))
                self._drop_connection()
                if self._stop.wait(min(0.2 * 2 ** min(attempt, 10), self.config.db_retry_backoff_max_s)):
                    raise FatalProcessorError("stopped while the database was unavailable") from error

    def _db(self) -> psycopg.Connection[tuple[object, ...]]:
        """The connection, made now if there is none; a database that is down is waited for.

        No rewind is needed after a lost connection: the in-memory batch is retried as it is, and the
        rolled-back transaction left the stored offsets where they were. If a commit did land before
        the connection broke, the retry is a no-op because `apply` is idempotent per event id.
        """
        attempt = 0
        while self._conn is None:
            attempt += 1
            try:
                self._conn = psycopg.connect(self._database_url, connect_timeout=self.config.db_connect_timeout_s)
            except psycopg.Error as error:
                failure = translate(error)
                if not isinstance(failure, DatabaseUnavailableError):  # e.g. a malformed DATABASE_URL
                    raise FatalProcessorError(f"projection {self.projection.name}: connecting to the database "
                                              f"failed: {failure}") from error
                self._log.warning("waiting_for_database", attempt=attempt, error=str(failure))
                if self._stop.wait(min(0.2 * 2 ** min(attempt, 10), self.config.db_retry_backoff_max_s)):
                    raise FatalProcessorError("stopped while waiting for the database") from error
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):  # a broken connection: nothing to close cleanly
                self._conn.close()
            self._conn = None



class _PositionMoved(Exception):
    """The stored offsets are not the ones this runner last saw: someone else moved them."""


class _Unusable(Exception):
    def __init__(self, error_class: str, reason_code: str, reason: str) -> None:
        super().__init__(reason)
        self.error_class = error_class
        self.reason_code = reason_code
