"""Bad input on real Kafka: undecodable records go to the dead-letter topic, invalid commands are rejected.

Either way the partition keeps moving, nothing is lost, and the service keeps running.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from ops.supervisor import ServiceProcess
from payments.contracts.envelope import build_headers
from payments.contracts.messages import InitiatePayment, Message, PaymentInitiated, PaymentRejected
from payments.money import Money
from payments.runtime.deadletter import DeadLetter, original_headers
from payments.runtime.topics import Topics
from tests.support import (
    decode_all,
    make_initiate,
    produce,
    read_all,
    serde,
    service,
    setup_topics,
    wait_for,
    wait_for_records,
)

pytestmark = pytest.mark.integration


def _send_raw(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]],
              ) -> list[tuple[int, int]]:
    """Produce records exactly as given; return (partition, offset) of each."""
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random",
                         "message.max.bytes": 2_000_000})
    positions: dict[int, tuple[int, int]] = {}

    def delivered(index: int):  # type: ignore[no-untyped-def]
        def callback(error, message):  # type: ignore[no-untyped-def]
            assert error is None, error
            positions[index] = (message.partition(), message.offset())
        return callback

    for index, (key, value, headers) in enumerate(records):
        producer.produce(topic, key=key, value=value, headers=headers, on_delivery=delivered(index))
    assert producer.flush(30) == 0
    return [positions[i] for i in range(len(records))]


def test_undecodable_records_are_dead_lettered_and_the_partition_keeps_moving(
        kafka_bootstrap: str, database_url: str, topics: Topics, tmp_path: Path) -> None:
    setup_topics(kafka_bootstrap, topics)
    codec = serde()
    valid = make_initiate()
    key = valid.payment_id.encode()  # same key: every bad record sits on the valid command's partition
    headers = build_headers(valid, source="tests", traceparent=None)
    encoded = codec.encode(valid)
    unknown_fingerprint = b"\xc3\x01" + bytes(range(8)) + encoded[10:]
    bad = [
        (key, b"\x00\x01 not avro at all", headers, "UndecodableRecordError"),
        (key, unknown_fingerprint, headers, "UnknownSchemaError"),
        (key, encoded, [h for h in headers if h[0] != "ce_type"], "MissingHeaderError"),
        (key, os.urandom(600 * 1024), headers, "OversizeRecord"),
        (None, encoded, headers, "MissingKey"),
        (b"someone-else", encoded, headers, "KeyMismatch"),
    ]
    positions = _send_raw(kafka_bootstrap, topics.commands, [(k, v, h) for k, v, h, _ in bad])
    orchestrator = service(["orchestrator"], bootstrap=kafka_bootstrap, database_url=database_url, topics=topics,
                           log_dir=tmp_path).start()
    try:
        produce(kafka_bootstrap, topics.commands, [valid], key_of=lambda m: m.payment_id)  # type: ignore[attr-defined]
        wait_for(lambda: any(isinstance(m, PaymentInitiated) and m.payment_id == valid.payment_id
                             for m in decode_all(read_all(kafka_bootstrap, topics.events))),
                 60, "the valid command after the bad ones to be processed")
        dead = wait_for_records(kafka_bootstrap, topics.dlq, len(bad), 30)
        assert orchestrator.alive(), orchestrator.log_tail()
    finally:
        assert orchestrator.stop() == 0, orchestrator.log_tail()

    assert len(dead) == len(bad)
    by_position = {(DeadLetter.from_headers(d.headers).source_partition,
                    DeadLetter.from_headers(d.headers).source_offset): d for d in dead}
    for (key_, value, headers_, error_class), (partition, offset) in zip(bad, positions, strict=True):
        record = by_position[(partition, offset)]
        letter = DeadLetter.from_headers(record.headers)
        assert letter.error_class == error_class, letter
        assert (letter.source_topic, letter.source_partition) == (topics.commands, partition)
        assert letter.reason
        assert record.key == key_ and record.value == value  # the original bytes, untouched
        assert original_headers(record.headers) == headers_


@pytest.fixture(scope="module")
def intake(kafka_bootstrap: str, postgres_server_url: str) -> Iterator[tuple[Topics, ServiceProcess]]:
    """One orchestrator on its own topics, shared by the rejection cases."""
    topics = Topics(prefix=f"t{uuid.uuid4().hex[:10]}.")
    setup_topics(kafka_bootstrap, topics)
    orchestrator = service(["orchestrator"], bootstrap=kafka_bootstrap, database_url=postgres_server_url,
                           topics=topics, log_dir=Path(tempfile.mkdtemp(prefix="intake-"))).start()
    yield topics, orchestrator
    assert orchestrator.stop() == 0, orchestrator.log_tail()


@pytest.mark.parametrize(("change", "reason_code"), [
    ({"amount": Money(amount_minor=0, currency="EUR")}, "AMOUNT_NOT_POSITIVE"),
    ({"amount": Money(amount_minor=-5, currency="EUR")}, "AMOUNT_NOT_POSITIVE"),
    ({"amount": Money(amount_minor=10**15, currency="EUR")}, "AMOUNT_OVER_LIMIT"),
    ({"amount": Money(amount_minor=100, currency="XYZ")}, "UNKNOWN_CURRENCY"),
    ({"payee_account": "acc-payer-1"}, "SAME_PAYER_AND_PAYEE"),
    ({"idempotency_key": ""}, "MISSING_IDEMPOTENCY_KEY"),
    ({"command_id": "not-a-uuid"}, "MALFORMED_ID"),
])
def test_invalid_initiate_is_rejected_with_a_reason_code(
        kafka_bootstrap: str, intake: tuple[Topics, ServiceProcess], change: dict[str, object],
        reason_code: str) -> None:
    topics, orchestrator = intake
    invalid: InitiatePayment = make_initiate(**change)
    follower = make_initiate()
    produce(kafka_bootstrap, topics.commands, [invalid, follower], key_of=lambda m: m.payment_id)  # type: ignore[attr-defined]

    def mine() -> list[Message]:
        return [e for e in decode_all(read_all(kafka_bootstrap, topics.events))
                if e.payment_id in (invalid.payment_id, follower.payment_id)]

    events = wait_for(lambda: (found := mine()) and len(found) >= 2 and found, 60,
                      "a rejection and the follower's initiation")
    assert orchestrator.alive(), orchestrator.log_tail()
    rejected = [e for e in events if isinstance(e, PaymentRejected)]
    assert [(e.payment_id, e.reason_code) for e in rejected] == [(invalid.payment_id, reason_code)]
    assert not [e for e in events if isinstance(e, PaymentInitiated) and e.payment_id == invalid.payment_id]
    assert [e.payment_id for e in events if isinstance(e, PaymentInitiated)] == [follower.payment_id]
    assert [r for r in read_all(kafka_bootstrap, topics.dlq) if r.key == invalid.payment_id.encode()] == []
