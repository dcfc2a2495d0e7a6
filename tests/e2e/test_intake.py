"""The intake from outside, on the whole pipeline: clients on their own partitioners (librdkafka's default,
murmur2, explicit partitions, Kafka's Java producer) all settle; a retry under a new payment id is one
payment, visible as such in payment_status; and compressed oversize records on every input topic of every
service and projection are dead-lettered while everything keeps running."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Producer

from ops.registry import PROJECTIONS, SERVICES
from ops.stack import fetch_kafka
from payments.contracts.envelope import build_headers
from payments.contracts.messages import InitiatePayment, PaymentRejected, PaymentSettled, SettlementEvent
from payments.runtime.deadletter import DeadLetter
from payments.runtime.topics import Topics
from tests.e2e.partitioning import crc32_partition, murmur2_partition
from tests.e2e.pipeline import Pipeline
from tests.support import PARTITIONS, make_initiate, read_all, serde, setup_topics, wait_for

pytestmark = pytest.mark.e2e
JAVA_SOURCE = Path(__file__).parent / "java" / "ProduceRecords.java"


def _commands(n: int, source_tag: str) -> list[InitiatePayment]:
    return [make_initiate(payer_account="acc-alice", payee_account="acc-bob", reference=f"{source_tag}-{i}")
            for i in range(n)]


def _off_murmur2(crc: bool = False) -> InitiatePayment:
    """A command whose key librdkafka's default (CRC32) puts on another partition than murmur2 would."""
    while True:
        command = make_initiate(payer_account="acc-alice", payee_account="acc-bob")
        key = command.payment_id.encode()
        if not crc or crc32_partition(key, PARTITIONS) != murmur2_partition(key, PARTITIONS):
            return command


def _produce_with(config: dict[str, object], pipeline: Pipeline, commands: list[InitiatePayment],
                  partition_of: dict[str, int] | None = None) -> dict[str, int]:
    """Produce as an outside client with `config`; return each command's partition as delivered."""
    producer = Producer({"bootstrap.servers": pipeline.bootstrap, **config})
    codec, delivered = serde(), {}
    for command in commands:
        extra = {} if partition_of is None else {"partition": partition_of[command.payment_id]}
        producer.produce(pipeline.topics.commands, key=command.payment_id.encode(), value=codec.encode(command),
                         headers=build_headers(command, source="outside-client", traceparent=None),
                         on_delivery=lambda error, record, pid=command.payment_id:
                         delivered.__setitem__(pid, record.partition()) if error is None else None, **extra)
    assert producer.flush(30) == 0
    return delivered


def _produce_with_java(pipeline: Pipeline, commands: list[InitiatePayment], work: Path) -> dict[str, int]:
    libs = fetch_kafka()
    subprocess.run(["javac", "-cp", f"{libs}/*", "-d", str(work), str(JAVA_SOURCE)], check=True, timeout=120)
    codec = serde()
    lines = []
    for command in commands:
        headers = ",".join(f"{name}={value.hex()}" for name, value in
                           build_headers(command, source="java-client", traceparent=None))
        lines.append(f"{pipeline.topics.commands} {command.payment_id.encode().hex()} "
                     f"{codec.encode(command).hex()} {headers}")
    done = subprocess.run(["java", "-cp", f"{work}:{libs}/*", "ProduceRecords", pipeline.bootstrap],
                          input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    partitions = [int(line.split()[0]) for line in done.stdout.split("\n") if line.strip()]
    return {c.payment_id: p for c, p in zip(commands, partitions, strict=True)}


def test_commands_from_clients_on_any_partitioner_all_settle(pipeline: Pipeline) -> None:
    work = Path(tempfile.mkdtemp(prefix="java-client-"))
    try:
        librdkafka_default = [*_commands(3, "default"), _off_murmur2(crc=True)]
        murmur2 = _commands(3, "murmur2")
        explicit = _commands(4, "explicit")
        elsewhere = {c.payment_id: (murmur2_partition(c.payment_id.encode(), PARTITIONS) + random.randint(1, 5))
                     % PARTITIONS for c in explicit}  # never the partition murmur2 would choose
        java = _commands(4, "java")
        delivered = {
            **_produce_with({}, pipeline, librdkafka_default),  # confluent-kafka's default: consistent_random
            **_produce_with({"partitioner": "murmur2_random"}, pipeline, murmur2),
            **_produce_with({}, pipeline, explicit, partition_of=elsewhere),
            **_produce_with_java(pipeline, java, work),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    # The clients really did place commands where a murmur2 partitioner would not...
    assert any(delivered[c.payment_id] != murmur2_partition(c.payment_id.encode(), PARTITIONS)
               for c in librdkafka_default)
    assert all(delivered[c.payment_id] == elsewhere[c.payment_id] for c in explicit)
    # ...and Kafka's Java producer is murmur2, as documented.
    assert all(delivered[c.payment_id] == murmur2_partition(c.payment_id.encode(), PARTITIONS) for c in java)
    for command in [*librdkafka_default, *murmur2, *explicit, *java]:
        events = pipeline.wait_events(command.payment_id, PaymentSettled, timeout_s=90)
        assert sum(isinstance(e, PaymentSettled) for e in events) == 1


def _status(pipeline: Pipeline, payment_id: str) -> tuple[str, str | None] | None:
    with psycopg.connect(pipeline.database_url) as conn:
        row = conn.execute("SELECT status, reason_code FROM payment_status WHERE payment_id = %s",
                           (payment_id,)).fetchone()
    return None if row is None else (str(row[0]), None if row[1] is None else str(row[1]))


def test_a_retry_under_a_new_payment_id_is_one_payment_and_says_so_in_payment_status(pipeline: Pipeline) -> None:
    original = make_initiate(payer_account="acc-alice", payee_account="acc-bob", idempotency_key=f"o-{uuid.uuid4()}")
    pipeline.send(original)
    pipeline.wait_events(original.payment_id, PaymentSettled)
    retry = original.model_copy(update={"payment_id": str(uuid.uuid4()), "command_id": str(uuid.uuid4())})
    pipeline.send(retry)
    (rejected,) = [e for e in pipeline.wait_events(retry.payment_id, PaymentRejected)
                   if isinstance(e, PaymentRejected)]
    assert (rejected.reason_code, rejected.original_payment_id) == ("DUPLICATE_REQUEST", original.payment_id)
    wait_for(lambda: _status(pipeline, retry.payment_id) == ("REJECTED", "DUPLICATE_REQUEST"), 30,
             "the retry's status row")
    assert _status(pipeline, original.payment_id) == ("SETTLED", None)
    settlements = [s for s in pipeline.topic("payments.settlements") if isinstance(s, SettlementEvent)
                   and s.payment_id in (original.payment_id, retry.payment_id)]
    assert [s.payment_id for s in settlements] == [original.payment_id]  # money moved once


def _input_topics() -> dict[str, list[str]]:
    """Every input topic of every service and projection, and who reads it."""
    readers: dict[str, list[str]] = {}
    for name, spec in SERVICES.items():
        for topic in spec.logic.input_topics:
            readers.setdefault(topic, []).append(name)
    for name, projection in PROJECTIONS.items():
        for topic in projection.projection().topics:
            readers.setdefault(topic, []).append(f"projection {name}")
    return readers


def test_compressed_oversize_records_on_every_input_topic_are_dead_lettered_and_the_pipeline_moves_on(
        pipeline: Pipeline) -> None:
    value = b"\xc3\x01" + b"A" * 2_000_000  # 2 MB, compresses to a few KB: the broker takes it
    sent: dict[tuple[str, int, int], str] = {}  # (topic, partition, offset) -> codec
    readers = _input_topics()
    for codec in ("gzip", "zstd"):
        producer = Producer({"bootstrap.servers": pipeline.bootstrap, "compression.type": codec,
                             "message.max.bytes": 4_000_000})
        for base in readers:
            producer.produce(pipeline.topics.name(base), key=f"oversize-{codec}".encode(), value=value,
                             on_delivery=lambda error, record, c=codec: sent.__setitem__(
                                 (record.topic(), record.partition(), record.offset()), c) if error is None else None)
        assert producer.flush(30) == 0
    assert len(sent) == 2 * len(readers)

    by_kafka_services = {(pipeline.topics.name(t), reader) for t, names in readers.items() for reader in names
                         if not reader.startswith("projection ")}
    expected_letters = 2 * len(by_kafka_services)

    def letters() -> list[DeadLetter]:
        found = []
        for record in read_all(pipeline.bootstrap, pipeline.topics.dlq):
            letter = DeadLetter.from_headers(record.headers)
            if (letter.source_topic, letter.source_partition, letter.source_offset) in sent:
                headers = dict(record.headers)
                assert letter.reason_code == "oversize_record" and headers["dlq_value_truncated"] == b"true"
                assert headers["dlq_original_value_bytes"] == str(len(value)).encode()
                assert headers["dlq_original_value_sha256"] == hashlib.sha256(value).hexdigest().encode()
                assert record.value == value[:65_536]
                found.append(letter)
        return found

    wait_for(lambda: len(letters()) >= expected_letters, 90, f"{expected_letters} dead letters")
    assert len(letters()) == expected_letters  # one per record and reader: none twice, none missing
    projection_rows = 2 * sum(1 for names in readers.values() for r in names if r.startswith("projection "))
    with psycopg.connect(pipeline.database_url) as conn:
        def parked() -> int:
            row = conn.execute("""SELECT count(*) FROM projection_dead_letters WHERE error_class = 'OversizeRecord'
                                  AND record_key IN ('oversize-gzip', 'oversize-zstd')""").fetchone()
            return int(row[0]) if row else 0
        wait_for(lambda: parked() >= projection_rows, 60, f"{projection_rows} projection dead letters")
    assert all(process.alive() for process in pipeline.services), pipeline.logs()
    # A valid payment behind them on the same partitions: the one the gzip key's records went to on every
    # topic (librdkafka's default partitioner, CRC32), which the payment's id also maps to (murmur2).
    blocked = {partition for (_, partition, _), codec in sent.items() if codec == "gzip"}
    assert blocked == {crc32_partition(b"oversize-gzip", PARTITIONS)}
    after = make_initiate(payer_account="acc-alice", payee_account="acc-bob")
    while murmur2_partition(after.payment_id.encode(), PARTITIONS) not in blocked:
        after = make_initiate(payer_account="acc-alice", payee_account="acc-bob")
    producer = Producer({"bootstrap.servers": pipeline.bootstrap})
    producer.produce(pipeline.topics.commands, key=after.payment_id.encode(), value=serde().encode(after),
                     headers=build_headers(after, source="tests", traceparent=None), partition=min(blocked))
    assert producer.flush(30) == 0
    pipeline.wait_events(after.payment_id, PaymentSettled)
    wait_for(lambda: _status(pipeline, after.payment_id) == ("SETTLED", None), 30, "its status row")
    assert all(process.alive() for process in pipeline.services), pipeline.logs()


def _status_command(pipeline: Pipeline, prefix: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": pipeline.bootstrap, "DATABASE_URL": pipeline.database_url,
           "PAYMENTS_TOPIC_PREFIX": prefix}
    return subprocess.run([sys.executable, "-m", "ops.cli", "status"], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_payments_status_says_ready_when_every_process_owns_its_partitions_and_not_ready_otherwise(
        pipeline: Pipeline) -> None:
    ready = _status_command(pipeline, pipeline.topics.prefix)
    assert ready.returncode == 0, ready.stdout + ready.stderr
    assert ready.stdout.splitlines()[-1] == "ready: yes"
    inputs = {**{name: len(spec.logic.input_topics) for name, spec in SERVICES.items()},
              **{f"projection {name}": len(spec.projection().topics) for name, spec in PROJECTIONS.items()}}
    for name, topics in inputs.items():
        line = next(line for line in ready.stdout.splitlines() if line.startswith(f"{name} "))
        members, partitions = line.split()[-3:-1]
        assert int(members) == 1 and partitions == f"{topics * PARTITIONS}/{topics * PARTITIONS}", line
    idle = Topics(prefix=f"t{uuid.uuid4().hex[:10]}.")
    setup_topics(pipeline.bootstrap, idle)  # topics, but no process running on them
    not_ready = _status_command(pipeline, idle.prefix)
    assert not_ready.returncode == 1
    assert not_ready.stdout.splitlines()[-1] == f"ready: no (waiting for: {', '.join(inputs)})"
