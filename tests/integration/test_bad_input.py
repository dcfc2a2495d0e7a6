"""Bad input on real Kafka, through the command path (intake, gate, idempotency, orchestrator): undecodable records
go to the dead-letter topic with a reason code, invalid commands are rejected, and a retried or reused
idempotency key is answered per client. Either way the partition keeps moving and nothing stops.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from ops.supervisor import ServiceProcess, start_all
from payments.contracts.envelope import build_headers
from payments.contracts.messages import InitiatePayment, Message, PaymentInitiated, PaymentRejected
from payments.money import Money
from payments.runtime.deadletter import DeadLetter, original_headers
from payments.runtime.topics import Topics
from tests.support import (
    COMMAND_PATH,
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


@pytest.fixture(scope="module")
def intake(kafka_bootstrap: str, postgres_server_url: str) -> Iterator[tuple[Topics, list[ServiceProcess]]]:
    """The command path on its own topics, shared by the cases of this module."""
    topics = Topics(prefix=f"t{uuid.uuid4().hex[:10]}.")
    setup_topics(kafka_bootstrap, topics)
    log_dir = Path(tempfile.mkdtemp(prefix="intake-"))
    processes = start_all([service([name], bootstrap=kafka_bootstrap, database_url=postgres_server_url,
                                   topics=topics, log_dir=log_dir) for name in COMMAND_PATH])
    yield topics, processes
    for process in processes:
        assert process.stop() == 0, process.log_tail()


def test_undecodable_records_are_dead_lettered_with_reason_codes_and_the_partition_keeps_moving(
        kafka_bootstrap: str, intake: tuple[Topics, list[ServiceProcess]]) -> None:
    topics, processes = intake
    codec = serde()
    valid = make_initiate()
    key = valid.payment_id.encode()  # same key: every bad record sits on the valid command's partition
    headers = build_headers(valid, source="tests", traceparent=None)
    encoded = codec.encode(valid)
    unknown_fingerprint = b"\xc3\x01" + bytes(range(8)) + encoded[10:]
    event = PaymentInitiated(event_id=str(uuid.uuid4()), payment_id=valid.payment_id, seq=1,
                             occurred_at=valid.requested_at, causation_id="c", payer_account="acc-a",
                             payee_account="acc-b", amount=valid.amount, partner="simbank", reference=None,
                             idempotency_key="k", request_hash="h")
    bad = [
        (key, b"\x00\x01 not avro at all", headers, "UndecodableRecordError", "bad_magic"),
        (key, unknown_fingerprint, headers, "UnknownSchemaError", "unknown_fingerprint"),
        (key, encoded, [h for h in headers if h[0] != "ce_type"], "MissingHeaderError", "missing_header"),
        (key, os.urandom(600 * 1024), headers, "OversizeRecord", "oversize_record"),
        (None, encoded, headers, "MissingKey", "missing_key"),
        (b"someone-else", encoded, headers, "KeyMismatch", "key_mismatch"),
        (key, codec.encode(event), build_headers(event, source="tests", traceparent=None), "UnexpectedMessageType",
         "unexpected_message_type"),
    ]
    positions = _send_raw(kafka_bootstrap, topics.commands, [(k, v, h) for k, v, h, _, _ in bad])
    produce(kafka_bootstrap, topics.commands, [valid], key_of=lambda m: m.payment_id)  # type: ignore[attr-defined]
    wait_for(lambda: any(isinstance(m, PaymentInitiated) and m.payment_id == valid.payment_id
                         for m in decode_all(read_all(kafka_bootstrap, topics.events))),
             60, "the valid command after the bad ones to be processed")
    dead = [d for d in wait_for_records(kafka_bootstrap, topics.dlq, len(bad), 30)
            if DeadLetter.from_headers(d.headers).source_topic == topics.commands]
    assert all(process.alive() for process in processes)
    assert len(dead) == len(bad)
    by_position = {(DeadLetter.from_headers(d.headers).source_partition,
                    DeadLetter.from_headers(d.headers).source_offset): d for d in dead}
    for (key_, value, headers_, error_class, code), (partition, offset) in zip(bad, positions, strict=True):
        record = by_position[(partition, offset)]
        letter = DeadLetter.from_headers(record.headers)
        assert (letter.error_class, letter.reason_code) == (error_class, code), letter
        assert (letter.source_topic, letter.source_partition) == (topics.commands, partition)
        assert letter.detail
        assert record.key == key_ and record.value == value  # the original bytes, untouched (they fit)
        assert original_headers(record.headers) == headers_


@pytest.mark.parametrize(("change", "reason_code"), [
    ({"amount": Money(amount_minor=0, currency="EUR")}, "AMOUNT_NOT_POSITIVE"),
    ({"amount": Money(amount_minor=-5, currency="EUR")}, "AMOUNT_NOT_POSITIVE"),
    ({"amount": Money(amount_minor=10**15, currency="EUR")}, "AMOUNT_OVER_LIMIT"),
    ({"amount": Money(amount_minor=100, currency="XYZ")}, "UNKNOWN_CURRENCY"),
    ({"payee_account": "acc-payer-1"}, "SAME_PAYER_AND_PAYEE"),
    ({"idempotency_key": ""}, "MISSING_IDEMPOTENCY_KEY"),
    ({"command_id": "not-a-uuid"}, "MALFORMED_ID"),
    ({"partner": "nobank"}, "UNKNOWN_PARTNER"),
])
def test_invalid_initiate_is_rejected_with_a_reason_code(
        kafka_bootstrap: str, intake: tuple[Topics, list[ServiceProcess]], change: dict[str, object],
        reason_code: str) -> None:
    topics, processes = intake
    invalid: InitiatePayment = make_initiate(**change)
    follower = make_initiate()
    produce(kafka_bootstrap, topics.commands, [invalid, follower], key_of=lambda m: m.payment_id)  # type: ignore[attr-defined]

    def mine() -> list[Message]:
        return [e for e in decode_all(read_all(kafka_bootstrap, topics.events))
                if e.payment_id in (invalid.payment_id, follower.payment_id)]

    events = wait_for(lambda: (found := mine()) and len(found) >= 2 and found, 60,
                      "a rejection and the follower's initiation")
    assert all(process.alive() for process in processes)
    rejected = [e for e in events if isinstance(e, PaymentRejected)]
    assert [(e.payment_id, e.reason_code) for e in rejected] == [(invalid.payment_id, reason_code)]
    assert not [e for e in events if isinstance(e, PaymentInitiated) and e.payment_id == invalid.payment_id]
    assert [e.payment_id for e in events if isinstance(e, PaymentInitiated)] == [follower.payment_id]
    assert [r for r in read_all(kafka_bootstrap, topics.dlq) if r.key == invalid.payment_id.encode()] == []


def test_a_retry_under_a_new_payment_id_is_one_payment_and_a_reused_key_is_refused_per_client(
        kafka_bootstrap: str, intake: tuple[Topics, list[ServiceProcess]]) -> None:
    topics, processes = intake
    original = make_initiate(idempotency_key="order-77")
    retry = make_initiate(idempotency_key="order-77", payment_id=str(uuid.uuid4()),
                          requested_at=original.requested_at)  # a fresh payment id: the classic double-payment bug
    reused = make_initiate(idempotency_key="order-77", amount_minor=9_999)
    elsewhere = make_initiate(idempotency_key="order-77")  # the same key from another client: its own scope
    produce(kafka_bootstrap, topics.commands, [original], key_of=lambda m: m.payment_id)  # type: ignore[attr-defined]
    produce(kafka_bootstrap, topics.commands, [retry, reused], key_of=lambda m: m.payment_id)  # type: ignore[attr-defined]
    produce(kafka_bootstrap, topics.commands, [elsewhere], key_of=lambda m: m.payment_id,  # type: ignore[attr-defined]
            source="checkout")
    ids = {c.payment_id for c in (original, retry, reused, elsewhere)}

    def mine() -> list[Message]:
        return [e for e in decode_all(read_all(kafka_bootstrap, topics.events)) if e.payment_id in ids]

    events = wait_for(lambda: (found := mine()) and len(found) >= 4 and found, 60, "an answer for each command")
    initiated = sorted(e.payment_id for e in events if isinstance(e, PaymentInitiated))
    assert initiated == sorted([original.payment_id, elsewhere.payment_id])  # one payment per client, not two
    rejected = {e.payment_id: e for e in events if isinstance(e, PaymentRejected)}
    assert (rejected[retry.payment_id].reason_code, rejected[retry.payment_id].original_payment_id) == (
        "DUPLICATE_REQUEST", original.payment_id)
    assert rejected[reused.payment_id].reason_code == "IDEMPOTENCY_KEY_REUSED"
    assert all(process.alive() for process in processes)

