"""The exactly-once consume-transform-produce loop, written once for the orchestrator and every participant.

One transactional producer per instance; fencing of zombies after a rebalance comes from the consumer
group metadata passed to `send_offsets_to_transaction` (KIP-447), so `transactional.id` only has to be
unique per live instance.

A checkpoint (one Kafka transaction) is, in order:
  1. begin the transaction;
  2. for each consumed record (until `batch_time_budget_ms` is spent; the consumer is sought back to
     the first record not taken, which is read again after the commit): decode and validate it (bad
     input -> a dead-letter record), call the pure `decide` and encode its outgoing messages (an
     exception from either -> a `ProcessingError` dead letter, nothing of the record's decision is
     kept), produce them;
  3. fire due timers through the pure `fire_timers`, produce their messages (an exception -> logged,
     the timer fires again `timer_retry_ms` later);
  4. produce one snapshot per changed key to the compacted changelog (tombstone when deleted);
  5. send the consumed positions (next offset to read) with the group metadata;
  6. commit. Only then do the batch's state changes become the committed state.

librdkafka's error classes are followed exactly (docs/architecture.md §2):
  - retriable -> call the same API again (bounded, backoff);
  - txn_requires_abort -> abort, drop the batch's state changes, put the batch's timers back, seek every
    assigned partition to its committed position (the batch is read and decided again);
  - fatal (fenced), a retriable error past its bound, a failed abort, or any other Kafka error ->
    `FatalProcessorError`: the caller rebuilds the whole processor from committed Kafka state.

No single record can stop a partition (docs/contracts.md §8). A record whose outputs Kafka refuses
for what they are (too large, invalid) is *poisoned*: the transaction aborts, and when the record
comes round again it is dead-lettered instead of decided. A refusal at produce() names the record
at once; one reported at commit cannot name it (the broker refuses a whole produce batch), so the
failed batch is then read again one record per transaction until the refused record is found. A
dead letter is bounded in size (payments.runtime.deadletter), and if even that copy is refused a
minimal one (no value, no original headers) is sent instead.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import structlog
from confluent_kafka import (
    OFFSET_BEGINNING,
    TIMESTAMP_NOT_AVAILABLE,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from payments.contracts.codec import Serde
from payments.contracts.envelope import build_headers, forwarded_headers, parse_headers
from payments.contracts.errors import ContractError
from payments.runtime import metrics, tracing
from payments.runtime.calls import Calls
from payments.runtime.clients import LoopClients, WireHeaders
from payments.runtime.config import ProcessorConfig
from payments.runtime.deadletter import DeadLetter, reason_code_of
from payments.runtime.errors import FatalProcessorError, ServiceError
from payments.runtime.health import Health, read_positions, start_lag_probe
from payments.runtime.logic import (
    Calling,
    Completion,
    Decision,
    Incoming,
    InputRejected,
    Logic,
    Outcome,
    Outgoing,
    Parted,
    part_key,
    split_part_key,
)
from payments.runtime.records import data_records, headers_of
from payments.runtime.state import Key, PartitionedState
from payments.runtime.store import MemoryStore, PartitionStore, Record, StateStoreError, StoreCheckpoint
from payments.runtime.topics import Topics
from payments.runtime.watchdog import Watchdog

S = TypeVar("S")
log = structlog.get_logger(__name__)
Produced = tuple[str, bytes, bytes, list[tuple[str, bytes]]]  # topic, key, value, headers
Changes = dict[Key, Any]
Position = tuple[str, int, int]  # topic, partition, offset
RESTORE_PROGRESS_EVERY_S = 5.0
# Errors that are about the record itself (its size or shape), not about the broker or the network:
# retrying cannot help, so the record that caused them is dead-lettered.
RECORD_SPECIFIC_CODES = frozenset({
    KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD,
    KafkaError.INVALID_MSG, KafkaError.INVALID_MSG_SIZE, KafkaError._INVALID_ARG,
})


class UndeclaredOutputError(ServiceError):
    """A decision emitted to a topic its Logic does not declare in `output_topics` (a bug in the Logic)."""


class OutputTooLargeError(ServiceError):
    """A decision's output is larger than the loop may produce (`ProcessorConfig.output_bytes_max`)."""


class _Unproducible(Exception):
    """Kafka refused, for what it is, a record produced on behalf of the input at `position`."""

    def __init__(self, position: Position, dead_letter: DeadLetter) -> None:
        super().__init__(dead_letter.detail)
        self.position = position
        self.dead_letter = dead_letter

@dataclass
class _Restore:
    """Partitions assigned but not restored yet: paused while the main loop reads their changelog.

    Phases: `offsets` (the committed input positions; read_committed makes this wait for a previous
    owner's pending transactional commit), `stable` (no transaction open on the changelog partitions,
    or the previous owner's last snapshot could be missed), `local` (open each partition's local
    store and choose where to read from: its checkpoint when it is trusted, else the start), `read`
    (the changelog from there to the end captured in `local`, into the stores, a bounded slice per
    step so the loop keeps serving the group)."""

    partitions: list[int]
    started: float
    phase: str = "offsets"
    reader: Iterator[tuple[int, bytes, bytes | None]] | None = None
    stores: dict[int, PartitionStore] = field(default_factory=dict)
    earliest: dict[int, int] = field(default_factory=dict)  # the changelog's first offset per partition
    starts: dict[int, int] = field(default_factory=dict)  # the changelog offset each partition is read from
    ends: dict[int, int] = field(default_factory=dict)  # ... and up to
    topic_id: str = ""
    read: dict[int, list[Record]] = field(default_factory=dict)  # read this slice, not in the store yet
    records: int = 0
    reported: float = 0.0
    stable_asked: float = 0.0  # when the `stable` phase last asked the brokers (monotonic)

    def close(self, *, stores: bool = True) -> None:
        if self.reader is not None:
            close = getattr(self.reader, "close", None)
            if close is not None:
                close()  # a generator: runs its finally (closes the reader's consumer)
            self.reader = None
        if stores:
            for store in self.stores.values():
                store.close()
            self.stores.clear()


def utc_now() -> datetime:
    return datetime.now(UTC)


class Processor(Generic[S]):
    def __init__(
        self,
        logic: Logic[S],
        *,
        clients: LoopClients,
        topics: Topics,
        serde: Serde,
        instance_id: str,
        config: ProcessorConfig | None = None,
        clock: Callable[[], datetime] = utc_now,
        watchdog: Watchdog | None = None,
        health: Health | None = None,
        calls: Calls | None = None,
    ) -> None:
        self.logic = logic
        # A Logic that calls out (payments.runtime.calls) comes with the runner that makes its calls.
        self._calls = calls
        self._calling: Calling[S] | None = None
        if calls is not None:
            assert hasattr(logic, "calls") and hasattr(logic, "complete"), f"{logic.service} does not call out"
            self._calling = logic  # type: ignore[assignment]
        # A Logic whose state is snapshotted in parts (payments.runtime.logic.Parted).
        self._parted: Parted[S] | None = logic if hasattr(logic, "encode_parts") else None  # type: ignore[assignment]
        self._completions: list[Completion] = []  # results taken from the runner, not committed yet
        self._completion_retry: dict[tuple[int, str, str], datetime] = {}  # complete() raised: not before
        self._paused = False
        self._full_since: float | None = None  # since when the call runner has had no room
        self.topics = topics
        self.serde = serde
        self.config = config or ProcessorConfig()
        self.clock = clock
        # Without a started watchdog the guards are only declarations (unit tests); ops.launch starts one.
        self.watchdog = watchdog or Watchdog(logic.service)
        self.health = health or Health(self.config.progress_bound_s)
        self.consumer = clients.consumer
        self.producer = clients.producer
        self._connection = clients.connection
        self._changelog_reader = clients.changelog
        self._changelog = topics.changelog(logic.service)
        self._inputs = {topics.name(base): base for base in logic.input_topics}
        self._outputs = frozenset(logic.output_topics)
        # Held as snapshot bytes with the recently used keys decoded; a Logic in parts keeps its objects.
        codec = None if self._parted is not None else (logic.encode_state, logic.decode_state)
        self.state: PartitionedState[S] = PartitionedState(logic.next_deadline, codec=codec,
                                                           cached=self.config.state_cache_keys)
        self._encoded: dict[Key, bytes] = {}  # this checkpoint's snapshots, kept as the state's bytes
        self._committed: dict[tuple[str, int], int] = {}  # next offset to read, as committed
        self._read: dict[tuple[str, int], int] = {}  # the consumer's positions, taken by the loop when idle
        self._poison: dict[Position, DeadLetter] = {}  # input records to dead-letter instead of deciding
        self._isolate: dict[tuple[str, int], int] = {}  # one record per transaction below these offsets
        self._restore: _Restore | None = None  # partitions assigned, paused until their state is restored
        self._stores_factory = clients.stores
        self._stores: dict[int, PartitionStore] = {}  # durable local stores of the owned partitions
        self._changelog_id = ""  # the changelog topic's id, as found by the last restore
        self._store_writes: dict[int, list[Record]] = {}  # this checkpoint's changelog records, per partition
        self._delivered: dict[int, int] = {}  # the highest changelog offset delivered, per partition
        self._end_offsets = clients.end_offsets
        self._log = log.bind(service=logic.service, instance=instance_id)
        # Metrics (payments.runtime.metrics): counted as a checkpoint goes, recorded once it committed.
        self._labels = {"service": logic.service}
        self._group = topics.group(logic.service)
        self._watch_decisions(logic)
        self._dead_counts: dict[tuple[str, str, str], int] = {}
        self._register_metrics()
        try:
            self._call(lambda: self.producer.init_transactions(self.config.call_timeout_s), "init_transactions")
        except KafkaException as error:
            raise FatalProcessorError(f"init_transactions failed: {error.args[0]}") from error

    def _watch_decisions(self, logic: Logic[S]) -> None:
        """What a Logic reports of its committed decisions: terminal outcomes (`outcomes`), and notes it
        counts itself (payments.runtime.logic.Observing)."""
        self._outcomes_of: Callable[[Decision[S]], tuple[Outcome, ...]] | None = getattr(logic, "outcomes", None)
        self._outcomes: list[Outcome] = []
        self._observe: Callable[[list[object]], None] | None = getattr(logic, "observe", None)
        self._notes: list[object] = []

    def _register_metrics(self) -> None:
        state, labels = self.state, self._labels
        metrics.GAUGES.register(metrics.TIMERS_PENDING, self.logic.service, lambda: [(state.timers_pending, labels)])
        metrics.GAUGES.register(metrics.STATE_KEYS, self.logic.service, lambda: [(len(state), labels)])
        metrics.TRANSACTIONS_ABORTED.add(0, labels)  # the series exists from the start: rate() works at once

    # -- public -------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Process until `stop` is set; then close cleanly (leave the group, nothing half-done).

        A Kafka error that escapes a checkpoint (from `consume`, a rebalance callback or a seek) is
        fatal for this processor: the caller rebuilds it from committed state.
        """
        self.consumer.subscribe(list(self._inputs), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)
        probe_stop = threading.Event()
        if self._end_offsets is not None:  # liveness counts lag (payments.runtime.health)
            probe_stop = start_lag_probe(self.health, self.config.lag_check_s, self._owned_positions,
                                         self._end_offsets)
        try:
            while not stop.is_set():
                self.step()
        except KafkaException as error:
            raise FatalProcessorError(f"Kafka error outside a checkpoint: {error.args[0]}") from error
        except ServiceError as error:
            if isinstance(error, FatalProcessorError):
                raise
            raise FatalProcessorError(f"{type(error).__name__}: {error}") from error
        finally:
            probe_stop.set()
            self.close()

    def step(self) -> int:
        """Consume one batch and checkpoint it. Returns the number of records handled."""
        if self._calls is not None:
            self._completions.extend(self._calls.take())
        take, timeout_ms = self._flow()
        records = []
        if take:
            with self.watchdog.guard("consume", self.config.consume_deadline_s):
                records = data_records(self.consumer.consume(take, timeout_ms / 1000), self._log)
        if self._restore is not None:  # assigned by that consume() or earlier: a slice of the restore
            self._advance_restore()
        elif self._calls is not None:
            self._completions.extend(self._calls.take())
        self.health.consumed(len(records))
        if take and not records and self._restore is None:  # idle: where the consumer stands, for the lag probe
            self._read = read_positions(self.consumer, {(topic, p): self._committed.get((topic, p), 0)
                                                        for topic in self._inputs for p in self.state.partitions})
        now = self.clock()
        due = self.state.pop_due(now, self.config.batch_records_max)
        busy = records or due or self._due_completions(now)
        handled = self._checkpoint(records, due, now) if busy else 0
        self.health.iterated()
        return handled

    def _owned_positions(self) -> dict[tuple[str, int], int]:
        """How far the loop has read each owned, restored input partition: the committed next offset, or the
        consumer's position as the loop last took it when idle, where that is further (0 when neither is
        known). Called by the lag probe's thread: it reads what the loop recorded, never the consumer."""
        owned = sorted(self.state.partitions)
        committed, read = dict(self._committed), dict(self._read)
        return {(topic, p): max(committed.get((topic, p), 0), read.get((topic, p), 0))
                for topic in self._inputs for p in owned}

    def close(self) -> None:
        """Leave the group, flush what is queued, close the stores and the call runner. Never raises: close()
        runs on the way out of run(), often because of a fatal error, and must not replace that error (a
        fenced producer's flush() raises _FENCED again). The consumer closes first: leaving the group runs
        the revoke callback, which hands the revoked calls back to the runner while it still runs."""
        with self.watchdog.guard("close", self.config.call_deadline_s):
            if self._restore is not None:
                self._restore.close()
            steps: tuple[tuple[str, Callable[[], object]], ...] = (
                ("consumer_close", self.consumer.close), ("producer_flush", lambda: self.producer.flush(5)),
                ("calls_close", self._calls.close if self._calls is not None else lambda: None),
                ("stores_close", self._close_stores))
            for what, call in steps:
                try:
                    call()
                except KafkaException as error:  # a fenced or disconnected client: nothing left to save
                    self._log.warning("close_failed", call=what, error=str(error.args[0]))
                except Exception as error:  # anything else is a bug, logged; the error that ended run() stands
                    self._log.exception("close_failed", call=what, error=repr(error))

    def _close_stores(self) -> None:
        for store in self._stores.values():
            store.close()
        self._stores.clear()

    def state_of(self, key: str) -> S | None:
        """The committed state of `key` if this instance owns it (for inspection and tests)."""
        return self.state.find(key)

    # -- checkpoint ---------------------------------------------------------------------------

    def _checkpoint(self, records: list[Message], due: list[Key], now: datetime) -> int:
        """Steps 1-6 of the module docstring; returns the records committed (0 after an abort)."""
        if self._connection.lost.is_set():  # nothing of this batch is produced yet: start over, clean
            raise FatalProcessorError("every broker connection was lost: rebuilding the clients before the next "
                                      "transaction (librdkafka #5456, #5511)")
        changes: Changes = {}
        self._encoded = {}
        self._store_writes = {}
        self._outcomes = []
        self._notes = []
        self._dead_counts = {}
        started = time.monotonic()
        isolating = self._isolating()
        if isolating:  # looking for a record Kafka refused at commit: one record per transaction, timers wait
            self._seek_to_first(records[1:])
            records = records[:1]
            self.state.rearm(due)
            due = []
        completions = [] if isolating else self._due_completions(now)
        try:
            with self.watchdog.guard("begin_transaction", self.config.call_deadline_s):
                self.producer.begin_transaction()
            records = self._handle_records(records, changes, now, started)
            for partition, key in due:
                self._handle_timer(partition, key, changes, now)
            completions = [c for c in completions if self._handle_completion(c, changes, now)]
            self._produce_snapshots(changes)
            positions = self._positions_after(records)
            if positions:
                self._call(lambda: self.producer.send_offsets_to_transaction(
                    positions, self.consumer.consumer_group_metadata(), self.config.call_timeout_s),
                    "send_offsets_to_transaction")
            self._commit()
        except _Unproducible as refused:
            self._poisoned(refused.position, refused.dead_letter)
            self._abort(due, f"refused at produce: {refused}", len(records))
            return 0
        except KafkaException as error:
            kafka_error: KafkaError = error.args[0]
            if kafka_error.fatal() or kafka_error.code() not in RECORD_SPECIFIC_CODES:
                self._after_failed_transaction(kafka_error, due, len(records))
            elif isolating:
                self._poison_refused(records[0], kafka_error)
                self._abort(due, str(kafka_error), len(records))
            else:
                self._isolate.update({(t, p): o + 1 for (t, p, o) in map(_position, records)})
                self._log.warning("batch_isolated", error=str(kafka_error), records=len(records))
                self._abort(due, str(kafka_error), len(records))
            return 0
        self._write_stores()
        self.state.commit(changes, self._encoded)
        for tp in positions:
            self._committed[(tp.topic, tp.partition)] = tp.offset
        self._forget_poison()
        self._start_calls(completions, changes)
        self.health.committed()
        self._record_metrics(records)
        return len(records)

    def _commit(self) -> None:
        committing = time.monotonic()
        self._call(lambda: self.producer.commit_transaction(self.config.call_timeout_s), "commit_transaction")
        metrics.TRANSACTION_COMMIT.record(time.monotonic() - committing, self._labels)

    def _record_metrics(self, records: list[Message]) -> None:
        """What the committed checkpoint did, into the metrics (never raises: metrics must not stop the loop)."""
        by_topic: dict[str, int] = {}
        for record in records:
            topic = self._inputs.get(record.topic() or "", "")
            by_topic[topic] = by_topic.get(topic, 0) + 1
        for topic, count in by_topic.items():
            metrics.RECORDS_PROCESSED.add(count, {**self._labels, "topic": topic})
        for (topic, error_class, reason_code), count in self._dead_counts.items():
            metrics.RECORDS_DEAD_LETTERED.add(count, {**self._labels, "topic": topic, "error_class": error_class,
                                                      "reason_code": reason_code})
        if self._observe is not None and self._notes:
            try:
                self._observe(self._notes)
            except Exception:  # a Logic's metrics must never stop the loop
                self._log.exception("observe_failed", notes=len(self._notes))
        for outcome in self._outcomes:
            labels = {"outcome": outcome.outcome, "reason_code": outcome.reason_code}
            metrics.PAYMENT_OUTCOMES.add(1, labels)
            if outcome.duration_s is not None:
                metrics.SAGA_DURATION.record(max(0.0, outcome.duration_s), {"outcome": outcome.outcome})
            if outcome.since_publish_s is not None:  # the client's clock: a skewed one is clamped at 0
                metrics.PAYMENT_LATENCY.record(max(0.0, outcome.since_publish_s), {"outcome": outcome.outcome})

    def _after_failed_transaction(self, error: KafkaError, due: list[Key], records: int) -> None:
        if error.fatal() or not error.txn_requires_abort():
            raise FatalProcessorError(str(error))
        self._abort(due, str(error), records)

    def _abort(self, due: list[Key], why: str, records: int) -> None:
        """Abort the open transaction, put the batch's timers back, and read the batch again."""
        self._log.warning("transaction_aborted", error=why, records=records)
        metrics.TRANSACTIONS_ABORTED.add(1, self._labels)
        try:
            self._call(lambda: self.producer.abort_transaction(self.config.call_timeout_s), "abort_transaction")
        except KafkaException as abort_error:
            raise FatalProcessorError(f"abort_transaction failed: {abort_error.args[0]}") from abort_error
        self.state.rearm(due)
        self._rewind()

    # -- calls out (payments.runtime.calls) -----------------------------------------------------

    def _flow(self) -> tuple[int, int]:
        """How many records to take and how long to wait for them. With a call runner: no more records than
        it has room for calls, the partitions paused while it has none (resumed once a quarter is free),
        and a short wait while calls are out, so their results are committed soon after they arrive.

        Calls start only after the checkpoint that records them commits, so taking `room` records never
        puts more than the runner's limit out. Calls recovered after a restore can exceed it (room goes
        negative): no record is taken until they drain, and the runner makes at most `limit` at once."""
        if self._calls is None:
            return self.config.batch_records_max, self.config.poll_timeout_ms
        room = self._calls.room()
        if room > 0:
            self._full_since = None
        elif self._full_since is None:
            self._full_since = time.monotonic()
        if room <= 0 and not self._paused and time.monotonic() - (self._full_since or 0) < self.config.calls_full_s:
            # Full for a moment: wait for a result rather than read. Not reading leaves the prefetched
            # records where they are (pausing would drop them and cost a fetch round trip to resume).
            self._calls.wait(self.config.calls_poll_ms / 1000)
            return 0, 0
        if room <= 0 or (self._paused and room < self._resume_room):
            if not self._paused:  # full for long: pause, and keep consuming to serve the group
                self._log.info("input_paused", reason="call limit reached", room=room)
            self._paused = True
            self.consumer.pause(self.consumer.assignment())  # every step: partitions assigned since, too
        elif self._paused:
            self.consumer.resume(self._restored_assignment())
            self._paused = False
            self._log.info("input_resumed", room=room)
        wait_ms = self.config.calls_poll_ms if self._calls.busy() else self.config.poll_timeout_ms
        return max(1, min(self.config.batch_records_max, room)), wait_ms

    @property
    def _resume_room(self) -> int:
        limit = getattr(self._calls, "limit", 1)
        return max(1, int(limit) // 4)

    def _due_completions(self, now: datetime) -> list[Completion]:
        return [c for c in self._completions if self._completion_retry.get(c.ident, now) <= now]

    def _handle_completion(self, completion: Completion, changes: Changes, now: datetime) -> bool:
        """Apply one call result; False if `complete` raised (a bug: it is tried again timer_retry_ms later)."""
        assert self._calling is not None
        key = (completion.partition, completion.key)
        if completion.partition not in self.state.partitions:
            return True  # revoked meanwhile: the new owner recovers the call
        state = self._current(changes, *key)
        call = None if state is None else next(
            (c for c in self._calling.calls(state) if c.call_id == completion.call_id), None)
        if state is None or call is None:
            return True  # answered already (a second run of the call): nothing to do
        try:
            # Under the context recorded with the call (its command's span), when the call has one.
            with tracing.under(getattr(call.request, "traceparent", None) if tracing.enabled() else None):
                decision = self._calling.complete(state, completion, now)
                produced = self._encode(decision.outgoing, None)
        except Exception:
            retry_at = now + timedelta(milliseconds=self.config.timer_retry_ms)
            self._log.exception("complete_failed", key=completion.key, call_id=completion.call_id,
                                retry_at=retry_at.isoformat())
            self._completion_retry[completion.ident] = retry_at
            return False
        self._apply(decision, state, key, produced, changes=changes, blame=None)
        return True

    def _start_calls(self, completed: list[Completion], changes: Changes) -> None:
        """After a commit: settle the results it applied, start the calls its states recorded."""
        if self._calls is None:
            return
        assert self._calling is not None
        done = {c.ident for c in completed}
        self._completions = [c for c in self._completions if c.ident not in done]
        for ident in done:
            self._completion_retry.pop(ident, None)
        self._calls.settled(completed)
        for (partition, key), state in changes.items():
            if state is not None:
                for call in self._calling.calls(state):
                    self._calls.start(partition, key, call, recovered=False)

    # -- poison records -----------------------------------------------------------------------

    def _poisoned(self, position: Position, dead_letter: DeadLetter) -> None:
        if dead_letter.minimal and self._poison.get(position) == dead_letter:
            raise FatalProcessorError(f"{self.logic.service}: even a minimal dead letter for {position} was "
                                      f"refused: check max.message.bytes of {self.topics.dlq}")
        self._poison[position] = dead_letter
        self._log.warning("record_poisoned", topic=position[0], partition=position[1], offset=position[2],
                          reason_code=dead_letter.reason_code, minimal=dead_letter.minimal)

    def _poison_refused(self, record: Message, error: KafkaError) -> None:
        """The single record of an isolated transaction was refused at commit: dead-letter it next time."""
        position = _position(record)
        earlier = self._poison.get(position)
        if earlier is not None:  # its dead letter was refused too: send a minimal one
            self._poisoned(position, earlier.as_minimal())
            return
        self._poisoned(position, self._dead(record, "UnproducibleRecord", "unproducible_record",
                                            f"Kafka refused what this record produced: {error}"))

    def _isolating(self) -> bool:
        for partition, end in list(self._isolate.items()):
            if self._committed.get(partition, -1) >= end:
                del self._isolate[partition]
        return bool(self._isolate)

    def _forget_poison(self) -> None:
        for position in [p for p in self._poison if self._committed.get((p[0], p[1]), -1) > p[2]]:
            del self._poison[position]

    def _handle_records(self, records: list[Message], changes: Changes, now: datetime,
                        started: float) -> list[Message]:
        """Handle records until the time budget is spent; return those handled (the rest is read again)."""
        for index, record in enumerate(records):
            if index and (time.monotonic() - started) * 1000 > self.config.batch_time_budget_ms:
                self._log.info("batch_cut_short", processed=index, left=len(records) - index)
                self._seek_to_first(records[index:])
                return records[:index]
            self._handle_record(record, changes, now)
        return records

    def _handle_record(self, record: Message, changes: Changes, now: datetime) -> None:
        poisoned = self._poison.get(_position(record))
        if poisoned is not None:
            self._dead_letter(record, poisoned)
            return
        incoming = self._decode(record)
        if isinstance(incoming, DeadLetter):
            self._dead_letter(record, incoming)
            return
        if not tracing.enabled():
            self._decide(record, incoming, changes, now)
            return
        topic = self.topics.name(incoming.topic)
        attributes = tracing.kafka_attributes("process", topic, partition=incoming.partition, offset=incoming.offset,
                                              key=incoming.key, message_id=incoming.envelope.id, group=self._group,
                                              payment_id=incoming.message.payment_id)
        with tracing.processing(topic, incoming.envelope.traceparent, attributes) as span:
            # What the Logic sees (and records, like a partner call) is this span's context.
            traced = replace(incoming.envelope, traceparent=tracing.traceparent_of(span))
            self._decide(record, replace(incoming, envelope=traced), changes, now)

    def _decide(self, record: Message, incoming: Incoming, changes: Changes, now: datetime) -> None:
        # Every log line about this record names its payment and step (and, with tracing, its trace and span).
        with structlog.contextvars.bound_contextvars(payment_id=incoming.message.payment_id,
                                                     step=type(incoming.message).__name__):
            self._decide_record(record, incoming, changes, now)

    def _decide_record(self, record: Message, incoming: Incoming, changes: Changes, now: datetime) -> None:
        current = self._current(changes, incoming.partition, incoming.key)
        try:
            decision = self.logic.decide(current, incoming, now)
            produced = self._encode(decision.outgoing, incoming.envelope.traceparent)
        except InputRejected as rejected:  # bad input the Logic recognised: upstream's problem, not ours
            self._dead_letter(record, self._dead(record, rejected.error_class, rejected.reason_code, rejected.detail))
            return
        except Exception as error:  # a bug or an unencodable output must not stop the partition: park the record
            self._log.exception("decide_failed", topic=incoming.topic, offset=incoming.offset)
            self._dead_letter(record, self._dead(record, "ProcessingError", "processing_error",
                                                 f"{type(error).__name__}: {error}"))
            return
        self._apply(decision, current, (incoming.partition, incoming.key), produced, changes=changes,
                    blame=_position(record))

    def _handle_timer(self, partition: int, key: str, changes: Changes, now: datetime) -> None:
        with structlog.contextvars.bound_contextvars(state_key=key, step="timer"):  # a payment, or an account
            if not tracing.enabled():
                self._fire_timer(partition, key, changes, now)
                return
            with tracing.root(f"timer {self.logic.service}", {"payments.state_key": key}):
                self._fire_timer(partition, key, changes, now)

    def _fire_timer(self, partition: int, key: str, changes: Changes, now: datetime) -> None:
        state = self._current(changes, partition, key)
        if state is None:
            return
        deadline = self.logic.next_deadline(state)
        if deadline is None or deadline > now:  # the timer was cancelled or moved by a later message
            return
        try:
            decision = self.logic.fire_timers(key, state, now)
            produced = self._encode(decision.outgoing, None)
        except Exception:  # a bug: no record to park, so try again later instead of in a hot loop
            retry_at = now + timedelta(milliseconds=self.config.timer_retry_ms)
            self._log.exception("timer_failed", partition=partition, key=key, retry_at=retry_at.isoformat())
            self.state.retry_at((partition, key), retry_at)
            return
        self._apply(decision, state, (partition, key), produced, changes=changes, blame=None)

    def _apply(self, decision: Decision[S], current: S | None, key: Key, produced: list[Produced], *,
               changes: Changes, blame: Position | None) -> None:
        if decision.state is not current:  # an unchanged state needs no snapshot
            changes[key] = decision.state
        if self._outcomes_of is not None and decision.outgoing:
            self._outcomes += self._outcomes_of(decision)
        self._notes += decision.notes
        for topic, out_key, value, headers in produced:
            self._produce_raw(topic, out_key, value, headers, blame=blame)

    def _encode(self, outgoing: tuple[Outgoing, ...], traceparent: str | None) -> list[Produced]:
        """Every outgoing message as a record, or an exception before anything is produced."""
        produced: list[Produced] = []
        for message in outgoing:
            if message.destination not in self._outputs:
                raise UndeclaredOutputError(f"{self.logic.service} emitted to {message.destination}, "
                                            f"not among its output_topics {sorted(self._outputs)}")
            produced.append(self._record_of(message, traceparent))
        return produced

    def _record_of(self, message: Outgoing, traceparent: str | None) -> Produced:
        content_type = self.serde.content_type
        if tracing.enabled():  # a send span under the current one, whose context the record carries on
            traceparent = tracing.sent(self.topics.name(message.destination), message.key,
                                       message.message.message_id, message.message.payment_id)
        if message.envelope is not None:
            envelope = message.envelope if traceparent is None else replace(message.envelope, traceparent=traceparent)
            headers = forwarded_headers(envelope, message.message, content_type=content_type)
        else:
            headers = build_headers(message.message, source=self.logic.service, traceparent=traceparent,
                                    content_type=content_type)
        key, value = message.key.encode(), self.serde.encode(message.message)
        size = len(key) + len(value) + sum(len(name) + len(header) for name, header in headers)
        if size > self.config.output_bytes_max:
            raise OutputTooLargeError(f"{type(message.message).__name__} to {message.destination} is {size} bytes, "
                                      f"limit {self.config.output_bytes_max}")
        return self.topics.name(message.destination), key, value, headers

    def _produce_raw(self, topic: str, key: bytes | None, value: bytes | None,
                     headers: list[tuple[str, bytes]] | None, *, partition: int = -1,
                     blame: Position | None = None,
                     on_delivery: Callable[[KafkaError | None, Message], None] | None = None) -> None:
        """Produce one record in the open transaction. A refusal for what the record is raises _Unproducible
        when an input record is to blame (`blame`), so that input is dead-lettered on the next pass."""
        wire: WireHeaders | None = None if headers is None else [*headers]
        for _ in range(self.config.retriable_attempts_max):
            try:
                if on_delivery is None:
                    self.producer.produce(topic, value=value, key=key, partition=partition, headers=wire)
                else:
                    self.producer.produce(topic, value=value, key=key, partition=partition, headers=wire,
                                          on_delivery=on_delivery)
                return
            except BufferError:  # local queue full: let librdkafka deliver, then try again
                self.producer.poll(0.1)
            except KafkaException as error:
                kafka_error: KafkaError = error.args[0]
                if blame is None or kafka_error.code() not in RECORD_SPECIFIC_CODES:
                    raise
                raise _Unproducible(blame, DeadLetter(
                    "UnproducibleRecord", "unproducible_record", f"Kafka refused a record produced for it on "
                    f"{topic}: {kafka_error}", *blame)) from error
        raise KafkaException(KafkaError(KafkaError._QUEUE_FULL, "producer queue stayed full", txn_requires_abort=True))

    def _produce_snapshots(self, changes: Changes) -> None:
        # Encoding a state the Logic built cannot fail short of a bug in its model: that is fatal here.
        for (partition, key), state in changes.items():
            try:
                if self._parted is not None:  # only the parts changed since the committed state
                    before = self.state.get(partition, key)
                    records = [(part_key(key, part).encode(), data)
                               for part, data in self._parted.encode_parts(before, state).items()]
                else:
                    value = None if state is None else self.logic.encode_state(state)
                    if value is not None:
                        self._encoded[(partition, key)] = value
                    records = [(key.encode(), value)]
            except Exception as error:
                raise FatalProcessorError(f"{self.logic.service}: encoding the state of {key!r} failed "
                                          f"({type(error).__name__}: {error}): a bug in its model") from error
            for record_key, value in records:
                self._produce_raw(self._changelog, record_key, value, None, partition=partition,
                                  on_delivery=self._changelog_delivered)
            if partition in self._stores:
                self._store_writes.setdefault(partition, []).extend(records)

    def _changelog_delivered(self, error: KafkaError | None, record: Message) -> None:
        """Delivery report of a changelog record: the highest offset per partition, for the local stores."""
        partition, offset = record.partition(), record.offset()
        if error is None and partition is not None and offset is not None and offset >= 0:
            self._delivered[partition] = max(offset, self._delivered.get(partition, -1))

    def _write_stores(self) -> None:
        """After a commit: its changelog records into the local stores, and each store's checkpoint moved past
        the highest offset delivered (a delivery report not served yet leaves the checkpoint lower, which
        only costs reading those records again; see payments.runtime.store). A store that fails is dropped:
        its partition is restored from the changelog next time."""
        if not self._store_writes:
            return
        self.producer.poll(0)  # serve the delivery reports of the committed records
        now = time.time()
        for partition, records in self._store_writes.items():
            store = self._stores.get(partition)
            if store is None:
                continue
            delivered = self._delivered.get(partition)
            checkpoint = None if delivered is None else StoreCheckpoint(delivered + 1, self._changelog_id, now)
            try:
                store.write(records, checkpoint)
            except StateStoreError as error:
                self._drop_store(partition, str(error))
        self._store_writes = {}

    def _drop_store(self, partition: int, why: str) -> None:
        self._log.warning("state_store_dropped", partition=partition, error=why)
        store = self._stores.pop(partition, None)
        if store is not None:
            try:
                store.wipe()
                store.close()
            except StateStoreError as error:
                self._log.warning("state_store_wipe_failed", partition=partition, error=str(error))

    # -- decoding and dead letters ------------------------------------------------------------

    def _decode(self, record: Message) -> Incoming | DeadLetter:  # noqa: PLR0911 - one return per failure class
        value = record.value()
        key = record.key()
        if value is None:
            return self._dead(record, "EmptyRecord", "empty_record", "record has no value")
        if len(value) > self.config.record_bytes_max:
            return self._dead(record, "OversizeRecord", "oversize_record",
                              f"value is {len(value)} bytes, limit {self.config.record_bytes_max}")
        if not key:
            return self._dead(record, "MissingKey", "missing_key",
                              "record has no key; it must be the payment id (the account id on funds.commands)")
        try:
            envelope = parse_headers(headers_of(record))
            message = self.serde.decode(value)
            key_text = key.decode()
        except ContractError as error:
            return self._dead(record, type(error).__name__, reason_code_of(error.reason), str(error))
        except UnicodeDecodeError as error:
            return self._dead(record, "UndecodableKey", "undecodable_key", str(error))
        expected = self.logic.key_of(message, envelope)
        if expected != key_text:
            return self._dead(record, "KeyMismatch", "key_mismatch",
                              f"key {key_text[:200]!r} differs from the message's {expected!r}")
        topic, partition, offset = _position(record)
        kind, timestamp_ms = record.timestamp()
        return Incoming(topic=self._inputs.get(topic, topic), partition=partition, offset=offset,
                        key=key_text, message=message, envelope=envelope,
                        timestamp_ms=timestamp_ms if kind != TIMESTAMP_NOT_AVAILABLE else None)

    @staticmethod
    def _dead(record: Message, error_class: str, reason_code: str, detail: str) -> DeadLetter:
        return DeadLetter(error_class, reason_code, detail, *_position(record))

    def _dead_letter(self, record: Message, dead: DeadLetter) -> None:
        self._log.warning("dead_lettered", error_class=dead.error_class, reason_code=dead.reason_code,
                          detail=dead.detail[:500], topic=dead.source_topic, partition=dead.source_partition,
                          offset=dead.source_offset, minimal=dead.minimal)
        key, value, headers = dead.record(record.key(), record.value(), headers_of(record), self.config.dead_letters)
        count_key = (self._inputs.get(dead.source_topic, dead.source_topic), dead.error_class, dead.reason_code)
        self._dead_counts[count_key] = self._dead_counts.get(count_key, 0) + 1
        try:
            self._produce_raw(self.topics.dlq, key, value, headers, blame=_position(record))
        except _Unproducible as refused:  # the bounded copy was refused too: next time, a minimal one
            raise _Unproducible(refused.position, dead.as_minimal()) from refused

    # -- state and positions ------------------------------------------------------------------

    def _current(self, changes: Changes, partition: int, key: str) -> S | None:
        if (partition, key) in changes:
            state: S | None = changes[(partition, key)]
            return state
        return self.state.get(partition, key)

    @staticmethod
    def _positions_after(records: list[Message]) -> list[TopicPartition]:
        """The next offset to read per partition: last consumed offset + 1."""
        last: dict[tuple[str, int], int] = {}
        for record in records:
            topic, partition, offset = _position(record)
            last[(topic, partition)] = max(offset, last.get((topic, partition), -1))
        return [TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in last.items()]

    def _seek_to_first(self, unprocessed: list[Message]) -> None:
        """Make the consumer return `unprocessed` again: seek each partition to its first such offset."""
        first: dict[tuple[str, int], int] = {}
        for record in unprocessed:
            topic, partition, offset = _position(record)
            first.setdefault((topic, partition), offset)
        for (topic, partition), offset in first.items():
            self.consumer.seek(TopicPartition(topic, partition, offset))

    def _rewind(self) -> None:
        """After an abort: read again from the last committed position of every assigned partition."""
        for tp in self._restored_assignment():
            offset = self._committed.get((tp.topic, tp.partition), OFFSET_BEGINNING)
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    def _restored_assignment(self) -> list[TopicPartition]:
        """The assigned partitions whose state is restored (the others stay paused until it is)."""
        restoring = set(self._restore.partitions) if self._restore is not None else set()
        return [tp for tp in self.consumer.assignment() if tp.partition not in restoring]

    # -- rebalance ----------------------------------------------------------------------------

    def _on_assign(self, consumer: object, partitions: list[TopicPartition]) -> None:
        """Take the partitions paused: their state is restored by the main loop (`_advance_restore`), not
        here, so a long restore never holds up the rebalance or the poll interval. The assignment is made
        here, before the pause, so the pause applies to it."""
        self.consumer.assign(partitions)
        numbers = sorted({tp.partition for tp in partitions} - self.state.partitions)
        self._log.info("partitions_assigned", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions],
                       restoring=numbers)
        if not numbers:  # nothing new to restore (or nothing assigned at all): ready as it is
            if self._restore is None:
                self._log.info("partitions_restored", partitions=[], records=0, keys=0, seconds=0.0)
            return
        self.consumer.pause([tp for tp in partitions if tp.partition in numbers])
        if self._restore is not None:  # a restore under way starts over with the new partitions too
            self._restore.close()
            numbers = sorted({*numbers, *self._restore.partitions})
        self._restore = _Restore(numbers, time.monotonic())
        self.health.restoring = True

    def _advance_restore(self) -> None:
        """One slice of the restore under way (`_Restore`); once complete, the partitions are taken over and
        resumed. Past `restore_timeout_s` in all: fatal (the processor is rebuilt)."""
        job = self._restore
        assert job is not None
        elapsed = time.monotonic() - job.started
        if elapsed > self.config.restore_timeout_s:
            limit = self.config.restore_timeout_s
            raise FatalProcessorError(f"restoring partitions {job.partitions} took over {limit:.0f}s "
                                      f"(phase {job.phase}, {job.records} records)")
        if job.phase == "offsets" and not self._fetch_committed(job):
            return
        if job.phase == "stable" and not self._changelog_stable(job, elapsed):
            return
        if job.phase == "local":
            self._open_stores(job)
            job.phase = "read"
        if not self._read_changelog_slice(job):
            return
        self._restore = None
        keys = 0
        # Decoding a restore makes millions of objects that mostly live on: the cyclic collector would walk
        # the growing heap again and again (half of a 1.5-million-part restore's time). Off while decoding,
        # then one collection for what the decoding left in cycles (a decoded saga dropped for its bytes).
        collecting = gc.isenabled()
        gc.disable()
        try:
            for partition in job.partitions:
                store = job.stores[partition]
                states, raw = self._stored_states(store)
                keys += self.state.assign(partition, states, raw)
                self._recover_calls(partition, self.state.items(partition))
                if store.durable:
                    self._stores[partition] = store
                else:
                    store.close()
        finally:
            if collecting:
                gc.enable()
                gc.collect()
        job.stores.clear()
        resumed = [tp for tp in self.consumer.assignment() if tp.partition in job.partitions]
        if not self._paused:  # paused for calls: _flow resumes them with the rest
            self.consumer.resume(resumed)
        for tp in resumed:  # librdkafka #2190: a pause right after assign can lose the start position
            committed = self._committed.get((tp.topic, tp.partition), OFFSET_BEGINNING)
            self.consumer.seek(TopicPartition(tp.topic, tp.partition, committed))
        self.health.partitions = len(self.state.partitions)
        self.health.restoring = False
        self._log.info("partitions_restored", partitions=job.partitions, records=job.records,
                       keys=keys, from_offsets={p: job.starts.get(p, 0) for p in job.partitions},
                       seconds=round(time.monotonic() - job.started, 3))

    def _changelog_stable(self, job: _Restore, elapsed: float) -> bool:
        """True (and on to the `local` phase) once no transaction is open on the job's changelog partitions.
        Asked at most every `stable_ask_interval_ms`: the loop steps every batch wait, and each question is
        two ListOffsets round trips to the leaders."""
        now = time.monotonic()
        if now - job.stable_asked < self.config.stable_ask_interval_ms / 1000:
            return False
        job.stable_asked = now
        if self._changelog_reader.is_stable(job.partitions):
            job.phase = "local"
        elif elapsed > 2 * self.config.transaction_timeout_ms / 1000:
            # Its producer is gone or fenced: the coordinator aborts it, its records never count.
            self._log.warning("changelog_transaction_still_open", partitions=job.partitions)
            job.phase = "local"
        return job.phase == "local"

    def _open_stores(self, job: _Restore) -> None:
        """Each partition's local store, and the offset to read its changelog from: the store's checkpoint
        when it is trusted (payments.runtime.store), else the start (the store wiped)."""
        bounds = self._changelog_reader.bounds(job.partitions)
        job.topic_id = self._changelog_reader.topic_id()
        self._changelog_id = job.topic_id
        max_age_s = self.config.store_checkpoint_age_max_s
        for partition in job.partitions:
            earliest, end = bounds[partition]
            job.earliest[partition] = earliest
            job.ends[partition] = end
            job.starts[partition] = earliest
            store = self._open_store(partition)
            job.stores[partition] = store
            try:
                checkpoint = store.checkpoint()
                why = "no checkpoint" if checkpoint is None else checkpoint.trusted(
                    earliest=earliest, end=end, topic_id=job.topic_id, now_s=time.time(), max_age_s=max_age_s)
                if why is None:
                    assert checkpoint is not None
                    job.starts[partition] = checkpoint.offset
                elif store.durable:
                    self._log.info("state_store_rebuilt", partition=partition, reason=why)
                    store.wipe()
            except StateStoreError as error:
                self._log.warning("state_store_unusable", partition=partition, error=str(error))
                store.close()
                job.stores[partition] = MemoryStore()

    def _open_store(self, partition: int) -> PartitionStore:
        try:
            return self._stores_factory.open(partition)
        except StateStoreError as error:  # locked by another process, a disk error: restore without one
            self._log.warning("state_store_unusable", partition=partition, error=str(error))
            return MemoryStore()

    def _stored_states(self, store: PartitionStore) -> tuple[Iterator[tuple[str, S]], dict[str, bytes] | None]:
        """A restored partition's states, decoded one at a time as they are taken (so a restore never holds
        them all decoded at once), and the snapshot bytes the state keeps (None for a Logic in parts)."""
        if self._parted is None:
            raw = {key.decode(): value for key, value in store.items()}
            decode = self.logic.decode_state
            return ((key, decode(value)) for key, value in raw.items()), raw
        grouped: dict[str, dict[str, bytes]] = {}
        for raw_key, value in store.items():
            name, part = split_part_key(raw_key.decode())
            grouped.setdefault(name, {})[part] = value
        parted = self._parted
        decoded = ((name, parted.decode_parts(parts)) for name, parts in grouped.items())
        return ((name, state) for name, state in decoded if state is not None), None

    def _fetch_committed(self, job: _Restore) -> bool:
        """The committed positions of the job's input partitions; False to try again next step (timed out:
        a previous owner's transactional commit is still pending)."""
        wanted = [tp for tp in self.consumer.assignment() if tp.partition in job.partitions]
        try:
            with self.watchdog.guard("committed", self.config.call_deadline_s):
                committed = self.consumer.committed(wanted, timeout=self.config.call_timeout_s)
        except KafkaException as error:
            kafka_error: KafkaError = error.args[0]
            if kafka_error.code() != KafkaError._TIMED_OUT and not kafka_error.retriable():
                raise
            self._log.info("committed_offsets_pending", partitions=job.partitions, error=str(kafka_error))
            return False
        for tp in committed:
            if tp.offset >= 0:
                self._committed[(tp.topic, tp.partition)] = tp.offset
        job.phase = "stable"
        return True

    def _read_changelog_slice(self, job: _Restore) -> bool:
        """Read the changelog for up to `restore_slice_ms` into the stores; True once it is read to the end
        captured in `_open_stores` (then each store's checkpoint is that end)."""
        if job.reader is None:
            pending = [p for p in job.partitions if job.starts[p] < job.ends[p]]
            job.reader = iter(self._changelog_reader.read(pending, self.config.restore_timeout_s,
                                                          starts={p: job.starts[p] for p in pending},
                                                          ends={p: job.ends[p] for p in pending}))
        until = time.monotonic() + self.config.restore_slice_ms / 1000
        done = True
        reader = job.reader
        try:
            for partition, key, value in reader:
                job.read.setdefault(partition, []).append((key, value))
                job.records += 1
                if time.monotonic() > until:
                    done = False
                    break
        except ServiceError as error:
            raise FatalProcessorError(f"changelog restore failed: {error}") from error
        self._flush_read(job, done=done)
        if job.reader is None:  # a store failed: the read starts over
            return False
        if done:
            return True
        now = time.monotonic()
        if now - job.reported >= RESTORE_PROGRESS_EVERY_S:
            job.reported = now
            self._log.info("restore_progress", partitions=job.partitions, records=job.records,
                           seconds=round(now - job.started, 1))
        return False

    def _flush_read(self, job: _Restore, *, done: bool) -> None:
        """What this slice read into the stores (in offset order: a tombstone deletes what came before); at the
        end, with each store's checkpoint at the captured end."""
        now = time.time()
        for partition in job.partitions:
            records = job.read.pop(partition, [])
            if not records and not done:
                continue
            checkpoint = StoreCheckpoint(job.ends[partition], job.topic_id, now) if done else None
            store = job.stores[partition]
            try:
                store.write(records, checkpoint)
            except StateStoreError as error:  # read this partition again from its start, into memory
                self._log.warning("state_store_unusable", partition=partition, error=str(error))
                store.close()
                job.stores[partition] = MemoryStore()
                job.starts[partition] = job.earliest[partition]
                job.close(stores=False)  # the others read again from where they started: nothing lost
                job.read.clear()
                return

    def _recover_calls(self, partition: int, states: Iterator[tuple[str, S]]) -> None:
        """Calls recorded but not answered when the partition was last owned may have been made already:
        the performer finds out before it acts (recovered=True)."""
        if self._calls is None:
            return
        assert self._calling is not None
        recovered = 0
        for key, state in states:
            for call in self._calling.calls(state):
                self._calls.start(partition, key, call, recovered=True)
                recovered += 1
        if recovered:
            self._log.info("calls_recovered", partition=partition, calls=recovered)

    def _on_revoke(self, consumer: object, partitions: list[TopicPartition]) -> None:
        # consume() runs outside any transaction, so nothing is in flight here: drop the state only.
        if self._calls is not None:
            numbers = {tp.partition for tp in partitions}
            self._calls.revoke(numbers)
            self._completions = [c for c in self._completions if c.partition not in numbers]
        if self._restore is not None:
            revoked = {tp.partition for tp in partitions}
            if revoked & set(self._restore.partitions):  # start over with what is left, if anything
                self._restore.close()
                left = [p for p in self._restore.partitions if p not in revoked]
                self._restore = _Restore(left, time.monotonic()) if left else None
                self.health.restoring = self._restore is not None
        for number in {tp.partition for tp in partitions}:  # the local store stays on disk for a next owner here
            store = self._stores.pop(number, None)
            if store is not None:
                store.close()
            self._delivered.pop(number, None)
        for tp in partitions:
            self.state.revoke(tp.partition)
            self._committed.pop((tp.topic, tp.partition), None)
            self._read.pop((tp.topic, tp.partition), None)
            self._isolate.pop((tp.topic, tp.partition), None)
        self._poison = {p: d for p, d in self._poison.items() if (p[0], p[1]) in self._committed}
        self.health.partitions = len(self.state.partitions)
        self._log.info("partitions_revoked", partitions=[f"{tp.topic}[{tp.partition}]" for tp in partitions])

    # -- helpers ------------------------------------------------------------------------------

    def _call(self, call: Callable[[], object], what: str) -> None:
        """Run a transactional API call, retrying while librdkafka says the error is retriable."""
        for attempt in range(1, self.config.retriable_attempts_max + 1):
            try:
                with self.watchdog.guard(what, self.config.call_deadline_s):
                    call()
                return
            except KafkaException as error:
                kafka_error: KafkaError = error.args[0]
                if not kafka_error.retriable() or attempt == self.config.retriable_attempts_max:
                    raise
                self._log.info("retrying_transactional_call", call=what, attempt=attempt, error=str(kafka_error))
                time.sleep(min(0.05 * 2**attempt, 2.0))


def _position(record: Message) -> tuple[str, int, int]:
    topic, partition, offset = record.topic(), record.partition(), record.offset()
    assert topic is not None and partition is not None and offset is not None, "a consumed record has a position"
    return topic, partition, offset
