"""The Kafka side of the exactly-once loop as ports, and their confluent-kafka adapters.

The processor talks to a consumer, a transactional producer and a changelog reader through these
protocols, so its checkpoint logic runs under unit test against in-memory fakes
(`tests/unit/runtime/fakes.py`) and in production against librdkafka. The real `Consumer` and
`Producer` satisfy the protocols as they are; records are `confluent_kafka.Message` either way.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from payments.runtime.config import ProcessorConfig
from payments.runtime.connection import Kafka, client_config
from payments.runtime.reader import committed_records, end_offsets, end_offsets_asker, is_stable, topic_id
from payments.runtime.store import NoStores, StateStores

RebalanceCallback = Callable[[Any, list[TopicPartition]], None]
WireHeaders = list[tuple[str, str | bytes | None]]  # what librdkafka's produce() takes
DeliveryCallback = Callable[[KafkaError | None, Message], None]  # served by poll(), flush() and commit
EndOffsets = Callable[[list[tuple[str, int]]], dict[tuple[str, int], int]]


class LoopConsumer(Protocol):
    def subscribe(self, topics: list[str], on_assign: RebalanceCallback, on_revoke: RebalanceCallback,
                  on_lost: RebalanceCallback) -> None: ...

    def consume(self, num_messages: int, timeout: float) -> list[Message]: ...

    def seek(self, partition: TopicPartition) -> None: ...

    def assign(self, partitions: list[TopicPartition]) -> None: ...

    def assignment(self) -> list[TopicPartition]: ...

    def pause(self, partitions: list[TopicPartition]) -> None: ...

    def resume(self, partitions: list[TopicPartition]) -> None: ...

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]: ...

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]: ...

    def consumer_group_metadata(self) -> object: ...

    def close(self) -> None: ...


class TransactionalProducer(Protocol):
    def init_transactions(self, timeout: float) -> None: ...

    def begin_transaction(self) -> None: ...

    def produce(self, topic: str, *, value: bytes | None = None, key: bytes | None = None, partition: int = -1,
                headers: WireHeaders | None = None, on_delivery: DeliveryCallback | None = None) -> None: ...

    def poll(self, timeout: float) -> int: ...

    def send_offsets_to_transaction(self, positions: list[TopicPartition], group_metadata: object,
                                    timeout: float) -> None: ...

    def commit_transaction(self, timeout: float) -> None: ...

    def abort_transaction(self, timeout: float) -> None: ...

    def flush(self, timeout: float) -> int: ...


class ChangelogReader(Protocol):
    """Reads a service's changelog partitions for restore (read_committed, up to their current end)."""

    def is_stable(self, partitions: Sequence[int]) -> bool:
        """No transaction is open on the partitions now (one check; the loop asks again on its next step)."""
        ...

    def bounds(self, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        """Per partition: its first offset and its end (the last stable offset), as of now."""
        ...

    def topic_id(self) -> str:
        """The changelog topic's id: a topic deleted and created again under the same name has another."""
        ...

    def read(self, partitions: Sequence[int], timeout_s: float, *, starts: dict[int, int] | None = None,
             ends: dict[int, int] | None = None) -> Iterator[tuple[int, bytes, bytes | None]]:
        """(partition, key, value or None for a tombstone) of every committed record from `starts` (default:
        the beginning) to `ends` (default: the end as of now), in offset order per partition."""
        ...


class ConnectionWatch:
    """Set when librdkafka reports that every broker connection is down (`_ALL_BROKERS_DOWN`, through the
    clients' `error_cb`, served by consume() and poll()).

    A client that lived through that is not trusted with another transaction: after a broker restart,
    librdkafka 2.16 can keep a coordinator that no longer exists and block `send_offsets_to_transaction`
    forever (#5456, #5511). The loop rebuilds its clients instead (seen in tests/faults: every service
    hung once after a broker restart before this; the watchdog stays as the backstop).
    """

    def __init__(self) -> None:
        self.lost = threading.Event()

    def on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self.lost.set()


@dataclass(frozen=True)
class LoopClients:
    consumer: LoopConsumer
    producer: TransactionalProducer
    changelog: ChangelogReader
    connection: ConnectionWatch = field(default_factory=ConnectionWatch)
    stores: StateStores = field(default_factory=NoStores)  # local copies of the changelog (payments.runtime.store)
    # The end (last stable offset) of input partitions, asked from a background thread for liveness; None: lag
    # is not measured (unit tests without one).
    end_offsets: EndOffsets | None = None


class KafkaChangelogReader:
    """One AdminClient for all its questions. A restore asks `is_stable` at every loop step while a
    transaction is open on the changelog (up to twice the transaction timeout); with a client made for
    each question, a service restoring through a broker outage made about 80 clients a second, each
    with its threads and its connections to every broker (seen in the chaos run: the busy services
    starved a restarting broker of CPU for minutes)."""

    def __init__(self, kafka: Kafka, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self._admin: AdminClient | None = None

    @property
    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(client_config(self.kafka))
        return self._admin

    def is_stable(self, partitions: Sequence[int]) -> bool:
        return is_stable(self.kafka, [(self.topic, p) for p in partitions], admin=self.admin)

    def bounds(self, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        wanted = [(self.topic, p) for p in partitions]
        earliest = end_offsets(self.kafka, wanted, earliest=True, admin=self.admin)
        ends = end_offsets(self.kafka, wanted, admin=self.admin)
        return {p: (earliest[(self.topic, p)], ends[(self.topic, p)]) for p in partitions}

    def topic_id(self) -> str:
        return topic_id(self.kafka, self.topic, admin=self.admin)

    def read(self, partitions: Sequence[int], timeout_s: float, *, starts: dict[int, int] | None = None,
             ends: dict[int, int] | None = None) -> Iterator[tuple[int, bytes, bytes | None]]:
        for record in committed_records(
                self.kafka, [(self.topic, p) for p in partitions], timeout_s=timeout_s,
                starts=None if starts is None else {(self.topic, p): o for p, o in starts.items()},
                ends=None if ends is None else {(self.topic, p): o for p, o in ends.items()}):
            key, partition = record.key(), record.partition()
            assert key is not None and partition is not None, "changelog records are keyed"
            yield partition, key, record.value()


def kafka_clients(kafka: Kafka, *, group: str, transactional_id: str, changelog_topic: str,
                  config: ProcessorConfig, consumer_overrides: dict[str, Any] | None = None,
                  stores: StateStores | None = None) -> LoopClients:
    """The librdkafka clients of one processor instance."""
    connection = ConnectionWatch()
    consumer = Consumer(client_config(kafka, {
        "error_cb": connection.on_error,
        "group.id": group,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "partition.assignment.strategy": "range",  # co-partitioned inputs: same partition numbers together
        "max.poll.interval.ms": config.max_poll_interval_ms,
        "session.timeout.ms": config.session_timeout_ms,
        **(consumer_overrides or {}),
    }))
    producer = Producer(client_config(kafka, {
        "error_cb": connection.on_error,
        "transactional.id": transactional_id,
        "transaction.timeout.ms": config.transaction_timeout_ms,
        "enable.idempotence": True,
        "partitioner": "murmur2_random",  # same partition for a key as Java producers upstream
        "linger.ms": 5,
        "message.max.bytes": config.message_bytes_max,
        # A transaction begun right after the previous commit finds the coordinator still writing that
        # commit's markers and is told CONCURRENT_TRANSACTIONS; librdkafka retries after retry.backoff.ms,
        # 100 ms by default, which made send_offsets_to_transaction take ~100 ms every checkpoint
        # (confluent-kafka-python #967). The Java producer backs off 20 ms here (KAFKA-5477); so do we.
        # Later retries still back off exponentially, up to retry.backoff.max.ms (1 s).
        "retry.backoff.ms": config.retry_backoff_ms,
    }))
    return LoopClients(consumer, producer, KafkaChangelogReader(kafka, changelog_topic), connection,
                       stores or NoStores(), end_offsets_asker(kafka))
