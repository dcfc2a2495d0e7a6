"""In-memory stand-ins for the processor's Kafka ports, for unit tests of the checkpoint logic only.

`FakeBroker` keeps committed records per topic partition and the group's committed offsets; a
transaction's records and offsets reach it only on commit, as with read_committed consumers. The
producer and consumer raise whatever `KafkaError` a test schedules, so every librdkafka error class
(retriable, abortable, fatal) can be driven through the loop. Integration tests use real Kafka.
"""

from __future__ import annotations

import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from payments.runtime.clients import DeliveryCallback, LoopClients, RebalanceCallback, WireHeaders
from payments.runtime.processor import Processor
from payments.runtime.store import MemoryStore, PartitionStore, StateStoreError, StateStores


@dataclass
class Stored:
    key: bytes | None
    value: bytes | None
    headers: WireHeaders | None


@dataclass
class FakeBroker:
    partitions: int = 3
    logs: dict[tuple[str, int], list[Stored]] = field(default_factory=lambda: defaultdict(list))
    group_offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    def append(self, topic: str, key: bytes | None, value: bytes | None, headers: WireHeaders | None = None,
               partition: int = -1) -> int:
        if partition < 0:
            partition = zlib.crc32(key or b"") % self.partitions
        self.logs[(topic, partition)].append(Stored(key, value, headers))
        return partition

    def records(self, topic: str) -> list[Stored]:
        return [record for (name, _), records in sorted(self.logs.items()) if name == topic for record in records]


class Failures:
    """Errors scheduled per method name, raised in order by the next calls of that method."""

    def __init__(self) -> None:
        self.scheduled: dict[str, list[KafkaError]] = defaultdict(list)

    def add(self, method: str, error: KafkaError, times: int = 1) -> None:
        self.scheduled[method].extend([error] * times)

    def check(self, method: str) -> None:
        if self.scheduled.get(method):
            raise KafkaException(self.scheduled[method].pop(0))


class FakeProducer:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.failures = Failures()
        self.open = False
        self.buffer: list[tuple[str, Stored, int]] = []
        self.reports: list[DeliveryCallback | None] = []  # the buffer's delivery callbacks
        self.pending_reports: list[tuple[DeliveryCallback, Message]] = []  # delivered, served by poll()
        self.offsets: list[TopicPartition] = []
        self.commits = 0
        self.aborts = 0
        self.full_for = 0  # produce() raises BufferError this many more times
        # A broker that refuses records for what they are: at produce() (as librdkafka's own size check
        # does) or at commit (as the broker does for a whole produce batch).
        self.refuse_on_produce: Callable[[str, Stored], bool] = lambda _topic, _record: False
        self.refuse_at_commit: Callable[[str, Stored], bool] = lambda _topic, _record: False

    def init_transactions(self, timeout: float) -> None:
        self.failures.check("init_transactions")

    def begin_transaction(self) -> None:
        self.failures.check("begin_transaction")
        assert not self.open, "a transaction is already open"
        self.open, self.buffer, self.offsets, self.reports = True, [], [], []

    def produce(self, topic: str, *, value: bytes | None = None, key: bytes | None = None, partition: int = -1,
                headers: WireHeaders | None = None, on_delivery: DeliveryCallback | None = None) -> None:
        assert self.open, "produce outside a transaction"
        if self.full_for:
            self.full_for -= 1
            raise BufferError("Local: Queue full")
        self.failures.check("produce")
        stored = Stored(key, value, headers)
        if self.refuse_on_produce(topic, stored):
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large"))
        self.buffer.append((topic, stored, partition))
        self.reports.append(on_delivery)

    def poll(self, timeout: float) -> int:
        served, self.pending_reports = self.pending_reports, []
        for callback, record in served:
            callback(None, record)
        return len(served)

    def send_offsets_to_transaction(self, positions: list[TopicPartition], group_metadata: object,
                                    timeout: float) -> None:
        self.failures.check("send_offsets_to_transaction")
        self.offsets = list(positions)

    def commit_transaction(self, timeout: float) -> None:
        self.failures.check("commit_transaction")
        if any(self.refuse_at_commit(topic, stored) for topic, stored, _ in self.buffer):
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large",
                                            txn_requires_abort=True))
        for (topic, stored, partition), report in zip(self.buffer, self.reports, strict=True):
            number = self.broker.append(topic, stored.key, stored.value, stored.headers, partition)
            if report is not None:
                offset = len(self.broker.logs[(topic, number)]) - 1
                self.pending_reports.append((report, Message(topic=topic, partition=number, offset=offset,
                                                             key=stored.key, value=stored.value)))
        for tp in self.offsets:
            self.broker.group_offsets[(tp.topic, tp.partition)] = tp.offset
        self.open, self.buffer, self.offsets = False, [], []
        self.commits += 1

    def abort_transaction(self, timeout: float) -> None:
        self.failures.check("abort_transaction")
        self.open, self.buffer, self.offsets = False, [], []
        self.aborts += 1

    def flush(self, timeout: float) -> int:
        self.failures.check("flush")  # librdkafka's flush() raises the fatal error of a fenced producer
        return 0


class FakeConsumer:
    def __init__(self, broker: FakeBroker) -> None:
        self.broker = broker
        self.failures = Failures()
        self.positions: dict[tuple[str, int], int] = {}
        self.topics: list[str] = []
        self.callbacks: dict[str, RebalanceCallback] = {}
        self.next_assignment: list[tuple[str, int]] | None = None
        self.paused: set[tuple[str, int]] = set()
        self.assigned_by_callback = 0
        self.closed = False
        self.stalled = False
        self.markers = False  # each partition's log ends with a transaction's commit marker, read past at its end

    def subscribe(self, topics: list[str], on_assign: RebalanceCallback, on_revoke: RebalanceCallback,
                  on_lost: RebalanceCallback) -> None:
        self.topics = list(topics)
        self.callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}
        self.next_assignment = [(topic, p) for topic in topics for p in range(self.broker.partitions)]

    def rebalance(self, partitions: Sequence[int]) -> None:
        """The group gives this member `partitions` of every subscribed topic at the next consume()."""
        self.next_assignment = [(topic, p) for topic in self.topics for p in partitions]

    def consume(self, num_messages: int, timeout: float) -> list[Message]:
        self.failures.check("consume")
        if self.next_assignment is not None:
            self._deliver_rebalance(self.next_assignment)
            self.next_assignment = None
        if self.stalled:  # a fetcher stuck after a broker fault: nothing arrives, the watermarks still show lag
            return []
        batch: list[Message] = []
        for (topic, partition), position in sorted(self.positions.items()):
            if (topic, partition) in self.paused:
                continue
            for offset in range(position, len(self.broker.logs.get((topic, partition), []))):
                if len(batch) == num_messages:
                    return batch
                stored = self.broker.logs[(topic, partition)][offset]
                batch.append(Message(topic=topic, partition=partition, offset=offset, key=stored.key,
                                     value=stored.value, headers=stored.headers))
                self.positions[(topic, partition)] = offset + 1
        return batch

    def _deliver_rebalance(self, wanted: list[tuple[str, int]]) -> None:
        revoked = [TopicPartition(t, p) for (t, p) in self.positions if (t, p) not in wanted]
        if revoked:
            self.callbacks["revoke"](self, revoked)
            for tp in revoked:
                del self.positions[(tp.topic, tp.partition)]
        added = [TopicPartition(t, p) for (t, p) in wanted if (t, p) not in self.positions]
        for tp in added:
            self.positions[(tp.topic, tp.partition)] = self.broker.group_offsets.get((tp.topic, tp.partition), 0)
        if added:
            self.callbacks["assign"](self, added)

    def seek(self, partition: TopicPartition) -> None:
        self.failures.check("seek")
        assert (partition.topic, partition.partition) in self.positions, "seek on an unassigned partition"
        offset = 0 if partition.offset == OFFSET_BEGINNING else partition.offset
        self.positions[(partition.topic, partition.partition)] = offset

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Called from the assign callback: the partitions are in `positions` already (set before it runs)."""
        assert all((tp.topic, tp.partition) in self.positions for tp in partitions)
        self.assigned_by_callback += 1

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, p) for (t, p) in sorted(self.positions)]

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused.update((tp.topic, tp.partition) for tp in partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused.difference_update((tp.topic, tp.partition) for tp in partitions)

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        self.failures.check("committed")
        return [TopicPartition(tp.topic, tp.partition, self.broker.group_offsets.get((tp.topic, tp.partition), -1001))
                for tp in partitions]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """The next offset to fetch; with `markers`, one past a partition's end once it is read to the end (a
        read_committed consumer moves past the commit marker that ends a transaction)."""
        if self.closed:
            raise RuntimeError("Consumer closed")
        out = []
        for tp in partitions:
            position = self.positions.get((tp.topic, tp.partition), -1001)
            end = len(self.broker.logs.get((tp.topic, tp.partition), []))
            out.append(TopicPartition(tp.topic, tp.partition, position + 1 if self.markers and 0 < end == position
                                      else position))
        return out

    def consumer_group_metadata(self) -> object:
        return "group-metadata"

    def close(self) -> None:
        self.closed = True


class FakeChangelog:
    def __init__(self, broker: FakeBroker, topic: str) -> None:
        self.broker = broker
        self.topic = topic
        self.reads = 0
        self.stable_checks = 0
        self.unstable_checks = 0  # the first this many is_stable() calls say a transaction is still open
        self.record_delay_s = 0.0  # a slow changelog: each record takes this long to read
        self.id = "topic-1"  # another id: the topic was deleted and created again
        self.records_read = 0

    def is_stable(self, partitions: Sequence[int]) -> bool:
        self.stable_checks += 1
        return self.stable_checks > self.unstable_checks

    def bounds(self, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        return {p: (0, len(self.broker.logs.get((self.topic, p), []))) for p in partitions}

    def topic_id(self) -> str:
        return self.id

    def read(self, partitions: Sequence[int], timeout_s: float, *, starts: dict[int, int] | None = None,
             ends: dict[int, int] | None = None) -> Iterator[tuple[int, bytes, bytes | None]]:
        self.reads += 1
        for partition in partitions:
            records = self.broker.logs.get((self.topic, partition), [])
            start = (starts or {}).get(partition, 0)
            end = (ends or {}).get(partition, len(records))
            for stored in records[start:end]:
                assert stored.key is not None
                time.sleep(self.record_delay_s)
                self.records_read += 1
                yield partition, stored.key, stored.value


class MemoryStores:
    """Local stores that live as long as this object: a processor rebuilt in the same test finds what its
    predecessor wrote, as a restarted process finds its folder. `unusable`: partitions whose store cannot be
    opened (held by another process, say)."""

    def __init__(self) -> None:
        self.stores: dict[int, MemoryStore] = {}
        self.unusable: set[int] = set()

    def open(self, partition: int) -> PartitionStore:
        if partition in self.unusable:
            raise StateStoreError(f"store {partition} is locked")
        return self.stores.setdefault(partition, MemoryStore(durable=True))


def fake_clients(broker: FakeBroker, changelog_topic: str, stores: StateStores | None = None
                 ) -> tuple[LoopClients, FakeConsumer, FakeProducer]:
    consumer, producer = FakeConsumer(broker), FakeProducer(broker)
    clients = LoopClients(consumer, producer, FakeChangelog(broker, changelog_topic))
    if stores is not None:
        clients = LoopClients(consumer, producer, clients.changelog, clients.connection, stores)
    return clients, consumer, producer


def kafka_error(*, retriable: bool = False, abortable: bool = False, fatal: bool = False,
                code: int = KafkaError._TIMED_OUT) -> KafkaError:
    return KafkaError(code, "injected by the test", fatal=fatal, retriable=retriable, txn_requires_abort=abortable)


def restore_assigned(processor: Processor[Any], steps_max: int = 10) -> None:
    """Step `processor` until the partitions the fake group assigns it are restored (paused until then)."""
    for _ in range(steps_max):
        processor.step()
        if processor.state.partitions and processor._restore is None:
            return
    raise AssertionError(f"not restored after {steps_max} steps")
