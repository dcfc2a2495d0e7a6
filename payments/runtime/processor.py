"""The exactly-once consume-transform-produce loop, written once for the orchestrator and every participant.

One transactional producer per instance; fencing of zombies after a rebalance comes from the consumer
group metadata passed to `send_offsets_to_transaction` (KIP-447), so `transactional.id` only has to be
unique per live instance.

A checkpoint (one Kafka transaction) is, in order:
  1. begin the transaction;
  2. for each consumed record (until `batch_time_budget_ms` is spent; the rest is read again after the
     commit): decode and validate it (bad input -> a dead-letter record), call the
     pure `decide`, produce its outgoing messages;
  3. fire due timers through the pure `fire_timers`, produce their messages;
  4. produce one snapshot per changed key to the compacted changelog (tombstone when deleted);
  5. send the consumed positions (next offset to read) with the group metadata;
  6. commit. Only then do the batch's state changes become the in-memory state.
librdkafka error classes are followed exactly: retriable -> call again (bounded); abortable ->
abort, drop the batch's state changes, rewind the consumer to the committed positions; fatal (e.g.
fenced) -> `FatalProcessorError`, and the caller rebuilds the whole processor from committed state.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from payments.contracts.codec import Serde
from payments.contracts.envelope import build_headers, parse_headers
from payments.contracts.errors import ContractError
from payments.runtime.deadletter import DeadLetter
from payments.runtime.logic import Decision, Incoming, Logic, Outgoing
from payments.runtime.reader import ReadTimeoutError, committed_records, wait_until_stable
from payments.runtime.records import data_records, headers_of
from payments.runtime.topics import Topics

S = TypeVar("S")
log = structlog.get_logger(__name__)


class FatalProcessorError(RuntimeError):
    """The producer is fenced or otherwise unusable: rebuild the processor from committed state."""


@dataclass(frozen=True)
class ProcessorConfig:
    batch_records_max: int = 500
    poll_timeout_ms: int = 100
    transaction_timeout_ms: int = 10_000  # bounds how long a crashed instance's open transaction blocks readers
    # A batch stops taking records once this much time went into it (a slow partner call, say): the rest
    # is read again after the commit. Keeps every transaction well inside transaction_timeout_ms.
    batch_time_budget_ms: int = 4_000
    call_timeout_s: float = 30.0
    retriable_attempts_max: int = 10
    record_bytes_max: int = 512 * 1024
    restore_timeout_s: float = 120.0


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Pending(Generic[S]):
    """State changes of the open transaction, keyed by (partition, key). Merged only after commit."""

    states: dict[tuple[int, str], S | None]


class Processor(Generic[S]):
    def __init__(
        self,
        logic: Logic[S],
        *,
        bootstrap_servers: str,
        topics: Topics,
        serde: Serde,
        instance_id: str,
        config: ProcessorConfig | None = None,
        clock: Callable[[], datetime] = utc_now,
        extra_consumer_config: dict[str, Any] | None = None,
    ) -> None:
        self.logic = logic
        self.topics = topics
        self.serde = serde
        self.config = config or ProcessorConfig()
        self.clock = clock
        self._bootstrap = bootstrap_servers
        self._changelog = topics.changelog(logic.service)
        self._inputs = {topics.name(base): base for base in logic.input_topics}
        self._states: dict[int, dict[str, S]] = {}
        self._timers: list[tuple[datetime, int, str]] = []
        self._committed: dict[tuple[str, int], int] = {}
        self._log = log.bind(service=logic.service, instance=instance_id)
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap_servers,
            "group.id": topics.group(logic.service),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "partition.assignment.strategy": "range",  # co-partitioned inputs: same partition numbers together
            "max.poll.interval.ms": 60_000,
            "session.timeout.ms": 10_000,
            **(extra_consumer_config or {}),
        })
        self.producer = Producer({
            "bootstrap.servers": bootstrap_servers,
            "transactional.id": f"{topics.group(logic.service)}-{instance_id}",
            "transaction.timeout.ms": self.config.transaction_timeout_ms,
            "enable.idempotence": True,
            "partitioner": "murmur2_random",  # same partition for a key as Java producers upstream
            "linger.ms": 5,
        })
        self._call(lambda: self.producer.init_transactions(self.config.call_timeout_s), "init_transactions")

    # -- public -------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Process until `stop` is set; then close cleanly (leave the group, flush nothing half-done)."""
        self.consumer.subscribe(list(self._inputs), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)
        try:
            while not stop.is_set():
                self.step()
        finally:
            self.close()

    def step(self) -> int:
        """Consume one batch and checkpoint it. Returns the number of records handled."""
        records = self.consumer.consume(self.config.batch_records_max, self.config.poll_timeout_ms / 1000)
        records = data_records(records, self._log)
        now = self.clock()
        due = self._pop_due_timers(now)
        if not records and not due:
            return 0
        self._checkpoint(records, due, now)
        return len(records)

    def close(self) -> None:
        try:
            self.consumer.close()
        finally:
            self.producer.flush(5)

    def state_of(self, key: str) -> S | None:
        """The committed state of `key` if this instance owns it (for inspection and tests)."""
        for partition_states in self._states.values():
            if key in partition_states:
                return partition_states[key]
        return None

    # -- checkpoint ---------------------------------------------------------------------------

    def _checkpoint(self, records: list[Message], due: list[tuple[int, str]], now: datetime) -> None:
        pending: _Pending[S] = _Pending(states={})
        started = time.monotonic()
        try:
            self.producer.begin_transaction()
            for index, record in enumerate(records):
                if index and (time.monotonic() - started) * 1000 > self.config.batch_time_budget_ms:
                    self._log.info("batch_cut_short", processed=index, left=len(records) - index)
                    self._seek_to_first(records[index:])
                    records = records[:index]
                    break
                self._handle_record(record, pending, now)
            for partition, key in due:
                self._handle_timer(partition, key, pending, now)
            self._produce_snapshots(pending)
            positions = self._positions_after(records)
            if positions:
                self._call(lambda: self.producer.send_offsets_to_transaction(
                    positions, self.consumer.consumer_group_metadata(), self.config.call_timeout_s),
                    "send_offsets_to_transaction")
            self._call(lambda: self.producer.commit_transaction(self.config.call_timeout_s), "commit_transaction")
        except KafkaException as error:
            kafka_error: KafkaError = error.args[0]
            if kafka_error.fatal() or not kafka_error.txn_requires_abort():
                raise FatalProcessorError(str(kafka_error)) from error
            self._log.warning("transaction_aborted", error=str(kafka_error), records=len(records))
            self._call(lambda: self.producer.abort_transaction(self.config.call_timeout_s), "abort_transaction")
            self._rewind()
            return
        self._apply(pending)
        for tp in positions:
            self._committed[(tp.topic, tp.partition)] = tp.offset

    def _handle_record(self, record: Message, pending: _Pending[S], now: datetime) -> None:
        incoming_or_dead = self._decode(record)
        if isinstance(incoming_or_dead, DeadLetter):
            self._dead_letter(record, incoming_or_dead)
            return
        incoming = incoming_or_dead
        state = self._current(pending, incoming.partition, incoming.key)
        try:
            decision = self.logic.decide(state, incoming, now)
        except Exception as error:  # a bug must not stop the partition: park the record, alert on the DLQ
            self._log.exception("decide_failed", topic=incoming.topic, offset=incoming.offset)
            self._dead_letter(record, self._dead(record, "ProcessingError", f"{type(error).__name__}: {error}"))
            return
        self._emit(decision, incoming.partition, incoming.key, pending, incoming.envelope.traceparent)

    def _handle_timer(self, partition: int, key: str, pending: _Pending[S], now: datetime) -> None:
        state = self._current(pending, partition, key)
        if state is None:
            return
        deadline = self.logic.next_deadline(state)
        if deadline is None or deadline > now:  # the timer was cancelled or moved by a later message
            return
        self._emit(self.logic.fire_timers(key, state, now), partition, key, pending, None)

    def _emit(self, decision: Decision[S], partition: int, key: str, pending: _Pending[S],
              traceparent: str | None) -> None:
        pending.states[(partition, key)] = decision.state
        for outgoing in decision.outgoing:
            self._produce(outgoing, traceparent)

    def _produce(self, outgoing: Outgoing, traceparent: str | None) -> None:
        value = self.serde.encode(outgoing.message)
        headers = build_headers(outgoing.message, source=self.logic.service, traceparent=traceparent)
        self._produce_raw(self.topics.name(outgoing.destination), outgoing.key.encode(), value, headers)

    def _produce_raw(self, topic: str, key: bytes | None, value: bytes | None,
                     headers: list[tuple[str, bytes]] | None, partition: int | None = None) -> None:
        kwargs: dict[str, Any] = {"key": key, "value": value, "headers": headers}
        if partition is not None:
            kwargs["partition"] = partition
        for _ in range(self.config.retriable_attempts_max):
            try:
                self.producer.produce(topic, **kwargs)
                return
            except BufferError:  # local queue full: let librdkafka deliver, then try again
                self.producer.poll(0.1)
        raise KafkaException(KafkaError(KafkaError._QUEUE_FULL, "producer queue stayed full", txn_requires_abort=True))

    def _produce_snapshots(self, pending: _Pending[S]) -> None:
        for (partition, key), state in pending.states.items():
            value = None if state is None else self.logic.encode_state(state)
            self._produce_raw(self._changelog, key.encode(), value, None, partition=partition)

    # -- decoding and dead letters ------------------------------------------------------------

    def _decode(self, record: Message) -> Incoming | DeadLetter:  # noqa: PLR0911 - one return per failure class
        value = record.value()
        key = record.key()
        if value is None:
            return self._dead(record, "EmptyRecord", "record has no value")
        if len(value) > self.config.record_bytes_max:
            return self._dead(record, "OversizeRecord",
                              f"value is {len(value)} bytes, limit {self.config.record_bytes_max}")
        if not key:
            return self._dead(record, "MissingKey", "record has no key; payment-keyed topics need the payment id")
        try:
            envelope = parse_headers(headers_of(record))
            message = self.serde.decode(value)
            key_text = key.decode()
        except ContractError as error:
            return self._dead(record, type(error).__name__, str(error))
        except UnicodeDecodeError as error:
            return self._dead(record, "UndecodableKey", str(error))
        if self.logic.key_of(message) != key_text:
            return self._dead(record, "KeyMismatch",
                              f"key {key_text!r} differs from the message's id {self.logic.key_of(message)!r}")
        topic = record.topic()
        partition = record.partition()
        offset = record.offset()
        assert topic is not None and partition is not None and offset is not None
        return Incoming(topic=self._inputs.get(topic, topic), partition=partition, offset=offset,
                        key=key_text, message=message, envelope=envelope)

    def _dead(self, record: Message, error_class: str, reason: str) -> DeadLetter:
        topic, partition, offset = record.topic(), record.partition(), record.offset()
        assert topic is not None and partition is not None and offset is not None
        return DeadLetter(error_class, reason, topic, partition, offset)

    def _dead_letter(self, record: Message, dead: DeadLetter) -> None:
        self._log.warning("dead_lettered", error_class=dead.error_class, reason=dead.reason,
                          topic=dead.source_topic, partition=dead.source_partition, offset=dead.source_offset)
        self._produce_raw(self.topics.dlq, record.key(), record.value(), dead.headers(headers_of(record)))

    # -- state, timers, positions -------------------------------------------------------------

    def _current(self, pending: _Pending[S], partition: int, key: str) -> S | None:
        if (partition, key) in pending.states:
            return pending.states[(partition, key)]
        return self._states.get(partition, {}).get(key)

    def _apply(self, pending: _Pending[S]) -> None:
        for (partition, key), state in pending.states.items():
            if partition not in self._states:
                continue  # revoked meanwhile: the new owner restores it from the changelog
            if state is None:
                self._states[partition].pop(key, None)
            else:
                self._states[partition][key] = state
                self._schedule(partition, key, state)

    def _schedule(self, partition: int, key: str, state: S) -> None:
        deadline = self.logic.next_deadline(state)
        if deadline is not None:
            heapq.heappush(self._timers, (deadline, partition, key))

    def _pop_due_timers(self, now: datetime) -> list[tuple[int, str]]:
        due: list[tuple[int, str]] = []
        while self._timers and self._timers[0][0] <= now and len(due) < self.config.batch_records_max:
            _, partition, key = heapq.heappop(self._timers)
            if key in self._states.get(partition, {}) and (partition, key) not in due:
                due.append((partition, key))
        return due

    @staticmethod
    def _positions_after(records: list[Message]) -> list[TopicPartition]:
        """The next offset to read per partition: last consumed offset + 1."""
        last: dict[tuple[str, int], int] = {}
        for record in records:
            topic, partition, offset = record.topic(), record.partition(), record.offset()
            assert topic is not None and partition is not None and offset is not None
            last[(topic, partition)] = max(offset, last.get((topic, partition), -1))
        return [TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in last.items()]

    def _seek_to_first(self, unprocessed: list[Message]) -> None:
        """Make the consumer return `unprocessed` again: seek each partition to its first such offset."""
        first: dict[tuple[str, int], int] = {}
        for record in unprocessed:
            topic, partition, offset = record.topic(), record.partition(), record.offset()
            assert topic is not None and partition is not None and offset is not None
            first.setdefault((topic, partition), offset)
        for (topic, partition), offset in first.items():
            self.consumer.seek(TopicPartition(topic, partition, offset))

    def _rewind(self) -> None:
        """After an abort: read again from the last committed position of every assigned partition."""
        for tp in self.consumer.assignment():
            offset = self._committed.get((tp.topic, tp.partition), OFFSET_BEGINNING)
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    # -- rebalance ----------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Committed offsets first: with read_committed librdkafka waits until a previous owner's
        # pending transactional offset commit is resolved, so the changelog read next is complete.
        committed = consumer.committed(partitions, timeout=self.config.restore_timeout_s)
        for tp in committed:
            if tp.offset >= 0:
                self._committed[(tp.topic, tp.partition)] = tp.offset
        numbers = sorted({tp.partition for tp in partitions} - set(self._states))
        # The offsets are stable, but the previous owner's commit marker may still be on its way to the
        # changelog partition: restore only once no transaction is open there, or the last snapshot is missed.
        if numbers and not wait_until_stable(self._bootstrap, [(self._changelog, p) for p in numbers],
                                             2 * self.config.transaction_timeout_ms / 1000):
            self._log.warning("changelog_transaction_still_open", partitions=numbers)
        for partition in numbers:
            self._states[partition] = {}
        for partition, key, state in self._restore(numbers):
            self._states[partition][key] = state
            self._schedule(partition, key, state)
        self._log.info("partitions_assigned", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions],
                       restored=sum(len(self._states[p]) for p in numbers))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # consume() runs outside any transaction, so nothing is in flight here: drop the state only.
        for tp in partitions:
            self._states.pop(tp.partition, None)
            self._committed.pop((tp.topic, tp.partition), None)
        self._log.info("partitions_revoked", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    def _restore(self, partitions: list[int]) -> Iterator[tuple[int, str, S]]:
        """Read the changelog partitions to their end (last stable offset); yield the live states."""
        latest: dict[tuple[int, str], bytes | None] = {}
        try:
            for record in committed_records(self._bootstrap, [(self._changelog, p) for p in partitions],
                                            timeout_s=self.config.restore_timeout_s):
                record_key, partition = record.key(), record.partition()
                assert record_key is not None and partition is not None, "changelog records are keyed"
                latest[(partition, record_key.decode())] = record.value()
        except ReadTimeoutError as error:
            raise FatalProcessorError(f"changelog restore failed: {error}") from error
        for (partition, key), value in latest.items():
            if value is not None:
                yield partition, key, self.logic.decode_state(value)

    # -- helpers ------------------------------------------------------------------------------

    def _call(self, call: Callable[[], object], what: str) -> None:
        """Run a transactional API call, retrying while librdkafka says the error is retriable."""
        for attempt in range(1, self.config.retriable_attempts_max + 1):
            try:
                call()
                return
            except KafkaException as error:
                kafka_error: KafkaError = error.args[0]
                if not kafka_error.retriable() or attempt == self.config.retriable_attempts_max:
                    raise
                self._log.info("retrying_transactional_call", call=what, attempt=attempt, error=str(kafka_error))
                time.sleep(min(0.05 * 2**attempt, 2.0))
