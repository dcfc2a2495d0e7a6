"""`payments replay orchestrator`: rebuild the orchestrator's changelog from `payments.events`.

The saga state of a payment is nothing but the fold of its events (`orchestrator.state.fold`), so a
lost or corrupted `<prefix>orchestrator.changelog` can be rebuilt from the event log. Run it with
the orchestrator stopped (it refuses while the orchestrator's consumer group has members, unless
`force`). In order:
  1. capture the read_committed end offsets (last stable offset) of `payments.events`;
  2. read the topic from offset zero up to them (read_committed: aborted transactions never count)
     and fold each payment's events, in seq order, with `orchestrator.state.apply`; an event that
     cannot follow the payment's state (a gap, a duplicate, an unknown type) is an error and
     nothing is written;
  2b. set aside the payments whose retention is over as of now (docs/saga.md, "Retention"): the
     orchestrator deletes those states, so they are neither compared nor written (a live snapshot
     of one is tombstoned);
  3. read the live changelog to its end and compare (latest value per key, decoded) with the fold:
     `missing` (no snapshot), `different`, `extra` (a snapshot of a payment without events), and
     `misplaced` (on another partition than the payment's events);
  4. unless `verify_only`: write every folded state (`OrchestratorLogic().encode_state`), plus a
     tombstone per `extra` key, to the changelog in bounded batches, ONE Kafka transaction per batch.
     A snapshot goes to the partition of the payment's events: every topic the orchestrator reads
     and writes is co-partitioned (same partition count, keyed by payment id, murmur2 partitioner),
     so that is the partition the processor itself snapshots to and restores from.
A crash in step 4 leaves some batches committed: running the replay again is safe (a snapshot is the
full state, compaction keeps the latest).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, TextIO

from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from orchestrator.config import SagaConfig
from orchestrator.errors import OrchestratorError
from orchestrator.saga import OrchestratorLogic
from orchestrator.state import RETIRABLE, SagaState, SagaStateError, apply
from payments.contracts.base import SagaEvent
from payments.contracts.codec import Serde
from payments.contracts.errors import ContractError
from payments.runtime.connection import Kafka, client_config
from payments.runtime.errors import KafkaCallError
from payments.runtime.reader import committed_records, partitions_of
from payments.runtime.topics import Topics

SERVICE = "orchestrator"
DifferenceKind = Literal["missing", "different", "extra", "misplaced"]
DESCRIBE_ATTEMPTS_MAX = 5


class OrchestratorReplayError(OrchestratorError):
    """The replay cannot run or found events it cannot fold: nothing was written."""


@dataclass(frozen=True)
class Difference:
    payment_id: str
    kind: DifferenceKind
    folded: SagaState | None
    live: SagaState | None

    def describe(self) -> str:
        if self.kind != "different" or self.folded is None or self.live is None:
            return f"{self.payment_id}: {self.kind}"
        folded, live = self.folded.model_dump(), self.live.model_dump()
        fields = {k: (live.get(k), folded.get(k)) for k in folded.keys() | live.keys() if folded.get(k) != live.get(k)}
        return f"{self.payment_id}: different (live, folded): {fields}"


@dataclass
class Folded:
    """Each payment's folded state and the partition its events are on."""

    states: dict[str, SagaState] = field(default_factory=dict)
    partitions: dict[str, int] = field(default_factory=dict)
    events: int = 0
    errors: dict[str, str] = field(default_factory=dict)  # payment id -> why its events cannot be folded


@dataclass
class OrchestratorReplayResult:
    payments: int
    events: int
    differences: list[Difference]
    read_s: float
    write_s: float = 0.0
    written: int = 0  # snapshots written (0 with verify_only)
    tombstones: int = 0
    transactions: int = 0
    retired: int = 0  # payments folded whose retention is over: not kept

    @property
    def payments_per_s(self) -> float:
        elapsed = self.read_s + self.write_s
        return self.payments / elapsed if elapsed > 0 else 0.0


# -- step 1 and 2: fold the events --------------------------------------------------------------


def fold_events(bootstrap: Kafka, topic: str, serde: Serde, *, timeout_s: float = 600.0,
                out: TextIO | None = None, logic: OrchestratorLogic | None = None) -> Folded:
    """Read `topic` from offset zero to the end offsets captured now; fold every payment's events."""
    folded = Folded()
    shown = time.monotonic()
    try:
        for record in committed_records(bootstrap, partitions_of(bootstrap, [topic]), timeout_s=timeout_s):
            partition, offset = record.partition(), record.offset()
            assert partition is not None and offset is not None
            _fold_record(folded, serde, partition, offset, record.value(), logic=logic)
            if out is not None and time.monotonic() - shown > 0.5:
                shown = time.monotonic()
                out.write(f"\rread {folded.events} events of {len(folded.states)} payments")
                out.flush()
    except KafkaCallError as error:
        raise OrchestratorReplayError(f"reading {topic}: {error}") from error
    if out is not None:
        out.write(f"\rread {folded.events} events of {len(folded.states)} payments\n")
    return folded


def _fold_record(folded: Folded, serde: Serde, partition: int, offset: int, value: bytes | None, *,
                 logic: OrchestratorLogic | None = None) -> None:
    if value is None:
        return
    try:
        event = serde.decode(value)
    except ContractError as error:
        folded.errors[f"<undecodable {partition}@{offset}>"] = str(error)
        return
    if not isinstance(event, SagaEvent):
        return
    folded.events += 1
    payment_id = event.payment_id
    if payment_id in folded.errors:
        return
    if folded.partitions.setdefault(payment_id, partition) != partition:
        folded.errors[payment_id] = f"events on partitions {folded.partitions[payment_id]} and {partition}"
        return
    state = folded.states.get(payment_id)
    if state is not None and event.seq == 1 and logic is not None:
        at = logic.next_deadline(state) if state.status in RETIRABLE else None
        if at is not None and at <= event.occurred_at:
            state = None  # the orchestrator had forgotten it: the id's next generation starts here
    try:
        folded.states[payment_id] = apply(state, event)
    except SagaStateError as error:
        folded.errors[payment_id] = f"{type(event).__name__}#{event.seq} at {partition}@{offset}: {error}"


# -- step 3: the live changelog -----------------------------------------------------------------


def read_changelog(bootstrap: Kafka, topic: str, *, timeout_s: float = 300.0) -> dict[str, tuple[int, bytes | None]]:
    """The latest committed value (None: a tombstone) and partition of every key of the changelog."""
    latest: dict[str, tuple[int, bytes | None]] = {}
    try:
        for record in committed_records(bootstrap, partitions_of(bootstrap, [topic]), timeout_s=timeout_s):
            key, partition = record.key(), record.partition()
            assert partition is not None
            if key is not None:
                latest[key.decode()] = (partition, record.value())
    except KafkaCallError as error:
        raise OrchestratorReplayError(f"reading {topic}: {error}") from error
    return latest


def live_states(bootstrap: Kafka, topic: str) -> dict[str, tuple[int, SagaState]]:
    """The changelog's current snapshot (partition, state) per payment; tombstoned keys are absent."""
    logic = OrchestratorLogic()
    return {key: (partition, logic.decode_state(value))
            for key, (partition, value) in read_changelog(bootstrap, topic).items() if value is not None}


def compare(folded: Folded, live: dict[str, tuple[int, SagaState]]) -> list[Difference]:
    differences: list[Difference] = []
    for payment_id in sorted(folded.states.keys() | live.keys()):
        state = folded.states.get(payment_id)
        partition, snapshot = live.get(payment_id, (None, None))
        if state is None:
            differences.append(Difference(payment_id, "extra", None, snapshot))
        elif snapshot is None:
            differences.append(Difference(payment_id, "missing", state, None))
        elif snapshot != state:
            differences.append(Difference(payment_id, "different", state, snapshot))
        elif partition != folded.partitions[payment_id]:
            differences.append(Difference(payment_id, "misplaced", state, snapshot))
    return differences


# -- step 4: write ------------------------------------------------------------------------------


def write_snapshots(bootstrap: Kafka, topic: str, records: list[tuple[int, str, bytes | None]], *,
                    transactional_id: str, batch_size: int = 1000, timeout_s: float = 30.0) -> int:
    """Produce (partition, key, value) records, `batch_size` per Kafka transaction; return the transactions.

    Any Kafka error aborts the open transaction and raises OrchestratorReplayError: the batches
    committed before it stay (a rerun rewrites them, which is safe), nothing of the failed one does.
    """
    producer = Producer(client_config(bootstrap, {"transactional.id": transactional_id, "enable.idempotence": True,
                                                  "partitioner": "murmur2_random", "linger.ms": 5}))
    transactions = 0
    try:
        producer.init_transactions(timeout_s)
        for start in range(0, len(records), batch_size):
            producer.begin_transaction()
            for partition, key, value in records[start:start + batch_size]:
                _produce(producer, topic, key.encode(), value, partition=partition, timeout_s=timeout_s)
            producer.commit_transaction(timeout_s)
            transactions += 1
    except (KafkaException, BufferError) as error:
        try:
            producer.abort_transaction(timeout_s)
        except KafkaException as abort_error:  # nothing open, or the producer is unusable: it is dropped anyway
            error.add_note(f"abort_transaction also failed: {abort_error}")
        raise OrchestratorReplayError(f"writing {topic} failed after {transactions} committed transaction(s) "
                                      f"(running the replay again is safe): {error}") from error
    return transactions


def _produce(producer: Producer, topic: str, key: bytes, value: bytes | None, *, partition: int,
             timeout_s: float) -> None:
    """Produce one record, waiting (bounded by `timeout_s`) while librdkafka's local queue is full."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            producer.produce(topic, key=key, value=value, partition=partition)
            return
        except BufferError:  # local queue full: let librdkafka deliver first
            if time.monotonic() > deadline:
                raise
            producer.poll(0.1)


def orchestrator_group_members(bootstrap: Kafka, group: str, *, timeout_s: float = 10.0) -> int:
    """How many members the orchestrator's consumer group has (0 when the group does not exist).

    Any other failure raises: "cannot tell" must never pass for "nobody is running".
    """
    admin = AdminClient(client_config(bootstrap))
    for attempt in range(1, DESCRIBE_ATTEMPTS_MAX + 1):
        try:
            description = admin.describe_consumer_groups([group], request_timeout=timeout_s)[group].result()
            return len(description.members)  # a group that does not exist is DEAD with no members
        except KafkaException as error:
            kafka_error: KafkaError = error.args[0]
            if kafka_error.code() == KafkaError.GROUP_ID_NOT_FOUND:
                return 0
            if not kafka_error.retriable() or attempt == DESCRIBE_ATTEMPTS_MAX:
                raise OrchestratorReplayError(
                    f"cannot tell whether the orchestrator is running (describing group {group} failed: "
                    f"{kafka_error}); stop it and pass --force") from error
            time.sleep(0.2 * attempt)  # NOT_COORDINATOR and the like while the coordinator moves or loads
    raise AssertionError("unreachable: the loop returns or raises")


def retire(folded: Folded, live: dict[str, tuple[int, SagaState]], logic: OrchestratorLogic,
           now: datetime) -> list[tuple[int, str]]:
    """Step 2b: drop from `folded` (and `live`) the payments whose retention is over; return the live
    snapshots of those as (partition, payment id), to be tombstoned."""
    retired = [pid for pid, state in folded.states.items()
               if state.status in RETIRABLE and (at := logic.next_deadline(state)) is not None and at <= now]
    stale: list[tuple[int, str]] = []
    for pid in retired:
        del folded.states[pid]
        if pid in live:
            stale.append((live.pop(pid)[0], pid))
    return stale


def replay_orchestrator(*, bootstrap: Kafka, topics: Topics, serde: Serde, verify_only: bool = False,
                        force: bool = False, batch_size: int = 1000, config: SagaConfig | None = None,
                        now: datetime | None = None, out: TextIO = sys.stderr) -> OrchestratorReplayResult:
    """Steps 1-4 of the module docstring. `config` gives the retention (the orchestrator's own)."""
    logic = OrchestratorLogic(config)
    changelog = topics.changelog(SERVICE)
    if not verify_only and not force:
        members = orchestrator_group_members(bootstrap, topics.group(SERVICE))
        if members:
            raise OrchestratorReplayError(f"the orchestrator is running ({members} member(s) in group "
                                          f"{topics.group(SERVICE)}); stop it first or pass --force")
    admin = AdminClient(client_config(bootstrap))
    metadata = admin.list_topics(timeout=10).topics
    counts = {name: len(metadata[name].partitions) for name in (topics.events, changelog) if name in metadata}
    if changelog not in counts:
        raise OrchestratorReplayError(f"topic {changelog} does not exist; create it first (any service start "
                                      "creates every topic)")
    if counts[changelog] != counts[topics.events]:
        raise OrchestratorReplayError(f"{changelog} has {counts[changelog]} partitions, {topics.events} "
                                      f"{counts[topics.events]}: co-partitioning requires equal counts")

    started = time.monotonic()
    folded = fold_events(bootstrap, topics.events, serde, out=out, logic=logic)
    if folded.errors:
        listed = "; ".join(f"{key}: {why}" for key, why in sorted(folded.errors.items())[:20])
        raise OrchestratorReplayError(f"{len(folded.errors)} payment(s) cannot be folded, nothing written: {listed}")
    live = live_states(bootstrap, changelog)
    folded_count = len(folded.states)
    stale = retire(folded, live, logic, now or datetime.now(UTC))
    result = OrchestratorReplayResult(payments=folded_count, events=folded.events,
                                      differences=compare(folded, live), read_s=time.monotonic() - started,
                                      retired=folded_count - len(folded.states))
    if verify_only:
        return result

    started = time.monotonic()
    records: list[tuple[int, str, bytes | None]] = [
        (folded.partitions[pid], pid, logic.encode_state(state)) for pid, state in folded.states.items()]
    extra = [d.payment_id for d in result.differences if d.kind == "extra"]
    records += [(live[pid][0], pid, None) for pid in extra]
    records += [(partition, pid, None) for partition, pid in stale]
    # A snapshot left on another partition is superseded there by a tombstone.
    records += [(live[d.payment_id][0], d.payment_id, None) for d in result.differences
                if d.kind == "misplaced" or (d.kind == "different"
                                             and live[d.payment_id][0] != folded.partitions[d.payment_id])]
    result.transactions = write_snapshots(bootstrap, changelog, records,
                                          transactional_id=f"{topics.group(SERVICE)}-replay", batch_size=batch_size)
    result.written, result.tombstones = len(folded.states), len(records) - len(folded.states)
    result.write_s = time.monotonic() - started
    return result


def run_command(*, bootstrap: Kafka, topics: Topics, serde: Serde, verify_only: bool, force: bool,
                config: SagaConfig | None = None) -> int:
    """`payments replay orchestrator [--verify] [--force]`; prints the outcome, returns the exit code
    (0 done or no differences, 1 failed, 2 --verify found differences)."""
    try:
        result = replay_orchestrator(bootstrap=bootstrap, topics=topics, serde=serde, verify_only=verify_only,
                                     force=force, config=config)
    except OrchestratorReplayError as error:
        print(f"payments replay orchestrator: {error}", file=sys.stderr)
        return 1
    print(f"folded {result.events} events into {result.payments} saga states in {result.read_s:.1f}s "
          f"({result.retired} past their retention, not kept)")
    for difference in result.differences[:50]:
        print(f"  {difference.describe()}")
    if len(result.differences) > 50:
        print(f"  ... and {len(result.differences) - 50} more")
    print(f"{len(result.differences)} difference(s) between the changelog and the fold")
    if verify_only:
        return 0 if not result.differences else 2
    print(f"wrote {result.written} snapshots and {result.tombstones} tombstones in {result.transactions} "
          f"transaction(s), {result.payments_per_s:,.0f} payments/s")
    return 0
