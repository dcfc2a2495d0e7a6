"""Read the committed records of topic partitions, from a start to the end captured when reading begins.

One implementation for every "read it all" need: state restore from a changelog, replays and their
verification, inspection tools, tests and benchmarks. `read_committed` throughout, so aborted
transactional records are never returned, and the end is the last stable offset: a read never
waits on a transaction still open.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka import Message as KafkaRecord
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]  # no __all__ entry

from payments.runtime.connection import Kafka, client_config
from payments.runtime.errors import KafkaCallError, ReadTimeoutError
from payments.runtime.retry import kafka_error, retry_kafka

Partition = tuple[str, int]
CONSUME_BATCH_MAX = 2000
# A reader assigns partitions and commits nothing, but librdkafka still names a group: every principal that
# reads is granted this group prefix (ops.acls).
READER_GROUP_PREFIX = "reader-"
# Errors that say the client's idea of a partition's leader is out of date.
STALE_LEADER = frozenset({KafkaError.FENCED_LEADER_EPOCH, KafkaError.UNKNOWN_LEADER_EPOCH,
                          KafkaError.NOT_LEADER_FOR_PARTITION})
POLL_TIMEOUT_S = 0.1  # short: the last poll of a read returns empty only after it, once past the final commit marker


def partitions_of(bootstrap: Kafka, topics: Iterable[str]) -> list[Partition]:
    """Every partition of `topics`; KafkaCallError if the metadata cannot be had or a topic does not exist."""
    wanted = list(topics)
    admin = AdminClient(client_config(bootstrap))
    metadata = retry_kafka(lambda: admin.list_topics(timeout=10).topics, "list_topics")
    missing = [topic for topic in wanted if topic not in metadata]
    if missing:
        raise KafkaCallError(f"no such topic: {', '.join(missing)}")
    return [(topic, p) for topic in wanted for p in sorted(metadata[topic].partitions)]


def end_offsets(bootstrap: Kafka, partitions: Iterable[Partition], *, earliest: bool = False,
                committed_only: bool = True, admin: AdminClient | None = None) -> dict[Partition, int]:
    """The end of each partition: the last stable offset (read_committed), or with `committed_only=False`
    the high watermark; with `earliest=True` its first offset instead. A caller that asks again and again
    (the lag probe) passes its own `admin`, instead of a client made for each call.

    Transient errors (a new topic, a moving leader) are retried with a bound; past it, or for any
    other error, KafkaCallError."""
    wanted = [TopicPartition(topic, p) for topic, p in partitions]
    if not wanted:
        return {}
    client = admin or AdminClient(client_config(bootstrap))
    spec = OffsetSpec.earliest() if earliest else OffsetSpec.latest()  # type: ignore[no-untyped-call]
    isolation = IsolationLevel.READ_COMMITTED if committed_only else IsolationLevel.READ_UNCOMMITTED

    def list_offsets() -> dict[Partition, int]:
        nonlocal client
        futures = client.list_offsets({tp: spec for tp in wanted}, isolation_level=isolation, request_timeout=30)
        try:
            return {(tp.topic, tp.partition): int(future.result().offset) for tp, future in futures.items()}
        except KafkaException as error:
            if (cause := kafka_error(error)) is not None and cause.code() in STALE_LEADER:
                # librdkafka retries a ListOffsets with the leader epoch it had (confluentinc/librdkafka#4620):
                # after a leader moved, asking the same client again fails the same way. A new client asks
                # for fresh metadata.
                client = AdminClient(client_config(bootstrap))
            raise

    # Right after a topic is created or a leader moves: NOT_LEADER_FOR_PARTITION, UNKNOWN_LEADER_EPOCH, ...
    return retry_kafka(list_offsets, "list_offsets")


def committed_records(
    bootstrap: Kafka,
    partitions: Iterable[Partition],
    *,
    starts: dict[Partition, int] | None = None,
    ends: dict[Partition, int] | None = None,
    timeout_s: float = 300.0,
) -> Iterator[KafkaRecord]:
    """Yield every committed record with start <= offset < end, partition by partition in offset order.

    `starts` defaults to the beginning, `ends` to the end offsets captured now. Raises ReadTimeoutError
    when the ends are not reached within `timeout_s`.
    """
    wanted = list(partitions)
    ends = ends if ends is not None else end_offsets(bootstrap, wanted)
    starts = starts or {}
    pending = {tp for tp in wanted if ends[tp] > starts.get(tp, 0)}
    if not pending:
        return
    consumer = Consumer(client_config(bootstrap, {"group.id": f"{READER_GROUP_PREFIX}{uuid.uuid4().hex}",
                                                  "enable.auto.commit": False, "isolation.level": "read_committed"}))
    try:
        consumer.assign([TopicPartition(t, p, starts.get((t, p), OFFSET_BEGINNING)) for t, p in pending])
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise ReadTimeoutError(f"reading did not reach the end of {sorted(pending)} in {timeout_s:.0f}s")
            for record in consumer.consume(CONSUME_BATCH_MAX, POLL_TIMEOUT_S):
                topic, partition, offset = record.topic(), record.partition(), record.offset()
                if record.error() is not None or topic is None or partition is None or offset is None:
                    continue
                if offset < ends[(topic, partition)]:
                    yield record
            # The position moves past transaction markers and aborted records too, so it reaches the end.
            for tp in consumer.position([TopicPartition(t, p) for t, p in pending]):
                if tp.offset >= ends[(tp.topic, tp.partition)]:
                    pending.discard((tp.topic, tp.partition))
    finally:
        consumer.close()


def is_stable(bootstrap: Kafka, partitions: Iterable[Partition], *, admin: AdminClient | None = None) -> bool:
    """No transaction is open on the partitions now (last stable offset == high watermark). A caller that
    asks again and again passes its own `admin`."""
    wanted = list(partitions)
    admin = admin or AdminClient(client_config(bootstrap))
    return (end_offsets(bootstrap, wanted, admin=admin)
            == end_offsets(bootstrap, wanted, committed_only=False, admin=admin))


def end_offsets_asker(bootstrap: Kafka) -> Callable[[list[Partition]], dict[Partition, int]]:
    """`end_offsets` on one AdminClient kept for every call (a lag probe asks every few seconds)."""
    admin = AdminClient(client_config(bootstrap))
    return lambda partitions: end_offsets(bootstrap, partitions, admin=admin)


def topic_id(bootstrap: Kafka, topic: str, *, admin: AdminClient | None = None) -> str:
    """The id Kafka gave `topic` when it was created (KafkaCallError if it cannot be had)."""
    admin = admin or AdminClient(client_config(bootstrap))

    def describe() -> str:
        futures = admin.describe_topics(TopicCollection([topic]), request_timeout=30)
        return str(futures[topic].result().topic_id)

    return retry_kafka(describe, "describe_topics")
