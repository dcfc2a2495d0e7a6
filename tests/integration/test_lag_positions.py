"""The lag the health probe sees on real Kafka: a partition written in transactions ends with a commit
marker, one past the offset a consumer commits after its last record. The probe measures how far the
consumer has read (health.read_positions), so a partition read to its end shows no lag, and one with a
record left unread does."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from payments.runtime.health import read_positions
from payments.runtime.reader import end_offsets

pytestmark = pytest.mark.integration


def _write_in_a_transaction(bootstrap: str, topic: str, count: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"lag-{uuid.uuid4().hex}"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for _ in range(count):
        producer.produce(topic, b"v")
    producer.commit_transaction(30)


def test_a_partition_read_to_its_commit_marker_shows_no_lag_and_one_with_a_record_left_does(
        kafka_bootstrap: str) -> None:
    topic = f"lag-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})  # kept: a dropped client fails its futures
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    _write_in_a_transaction(kafka_bootstrap, topic, 3)
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"g-{topic}", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "auto.offset.reset": "earliest"})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        read: list[int] = []
        deadline = time.monotonic() + 30
        while len(read) < 3:
            assert time.monotonic() < deadline, f"read {read} of 3 records"
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                read.append(message.offset())
        committed = {(topic, 0): read[-1] + 1}  # what a loop commits after its last record
        end = end_offsets(kafka_bootstrap, [(topic, 0)])
        assert end[(topic, 0)] == committed[(topic, 0)] + 1, "no commit marker after the records"
        deadline = time.monotonic() + 30
        while read_positions(consumer, committed)[(topic, 0)] < end[(topic, 0)]:  # polls move past the marker
            assert time.monotonic() < deadline, "the consumer's position never passed the commit marker"
            consumer.poll(0.2)
        _write_in_a_transaction(kafka_bootstrap, topic, 1)
        end = end_offsets(kafka_bootstrap, [(topic, 0)])
        consumer.pause([TopicPartition(topic, 0)])  # a fetcher that delivers nothing
        consumer.poll(0.5)
        assert end[(topic, 0)] - read_positions(consumer, committed)[(topic, 0)] >= 1
    finally:
        consumer.close()
