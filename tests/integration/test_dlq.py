"""`payments dlq list|show|redrive` on real Kafka and PostgreSQL: dead letters are listed and shown from the
dead-letter topic, and a redrive republishes each one's original record to its source topic exactly once,
whoever runs it at the same time and whatever crashed before; truncated copies are refused; the audit topic
says who redrove what and why.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Producer

from ops.cli import main
from ops.dlq.kafka import redrive_producer
from ops.dlq.model import operator
from ops.settings import Settings
from ops.supervisor import start_all
from payments.contracts.envelope import build_headers
from payments.contracts.topics import DLQ_REDRIVES
from payments.runtime.deadletter import DeadLetter, Headers, original_headers
from payments.runtime.topics import Topics
from tests.support import Record, make_initiate, read_all, serde, service, setup_topics, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def env(kafka_bootstrap: str, database_url: str, topics: Topics,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The test's topics (the whole topology, the audit topic too) and the settings `payments` reads."""
    setup_topics(kafka_bootstrap, topics)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("PAYMENTS_TOPIC_PREFIX", topics.prefix)
    yield Settings.load()


def dead_letter(bootstrap: str, topics: Topics, *, key: bytes | None, value: bytes, headers: Headers,
                error_class: str, reason_code: str, source_offset: int) -> tuple[int, int]:
    """Produce what a service writes for a record it could not take (DeadLetter.record); its DLQ position."""
    letter = DeadLetter(error_class, reason_code, f"test: {reason_code}", topics.commands, 0, source_offset)
    key_, value_, headers_ = letter.record(key, value, headers)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    position: list[tuple[int | None, int | None]] = []
    producer.produce(topics.dlq, key=key_, value=value_, headers=headers_,  # type: ignore[arg-type]
                     on_delivery=lambda error, record: position.append((record.partition(), record.offset())))
    assert producer.flush(30) == 0 and len(position) == 1
    partition, offset = position[0]
    assert partition is not None and offset is not None
    return partition, offset


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["dlq", *argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def document(capsys: pytest.CaptureFixture[str], command: str, out: str) -> None:
    """Show a command's output on the terminal with -s (docs/operations.md quotes it), outside the capture."""
    with capsys.disabled():
        print(f"$ payments dlq {command}\n{out}")


def on_commands(bootstrap: str, topics: Topics, value: bytes) -> list[Record]:
    return [record for record in read_all(bootstrap, topics.commands) if record.value == value]


def audit_records(bootstrap: str, topics: Topics) -> list[Record]:
    return read_all(bootstrap, topics.name(DLQ_REDRIVES))


def visible(read: Callable[[], list[Record]], count: int, what: str) -> list[Record]:
    """What `read` returns once it holds `count` records: a commit returns before the coordinator has written
    its markers, and read_committed readers see the records only after that."""
    def enough() -> list[Record]:
        records = read()
        return records if len(records) >= count else []

    found = wait_for(enough, 30, what)
    assert len(found) == count, found
    return found


def test_list_show_and_redrive_republish_a_dead_letter_once_with_its_original_headers_and_refuse_truncated_ones(
        kafka_bootstrap: str, env: Settings, topics: Topics, database_url: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    command = make_initiate()
    headers = [*build_headers(command, source="tests", traceparent=None), ("x-binary", b"\xff\x00")]
    value = serde().encode(command)
    processing = dead_letter(kafka_bootstrap, topics, key=command.payment_id.encode(), value=value, headers=headers,
                             error_class="ProcessingError", reason_code="processing_error", source_offset=10)
    junk = dead_letter(kafka_bootstrap, topics, key=b"pay-junk", value=b"\x00\x01 not avro", headers=headers,
                       error_class="UndecodableRecordError", reason_code="bad_magic", source_offset=11)
    huge = os.urandom(950_000)  # over the 900,000-byte copy limit: the DLQ keeps its first 64 KiB
    truncated = dead_letter(kafka_bootstrap, topics, key=b"pay-huge", value=huge, headers=headers,
                            error_class="OversizeRecord", reason_code="oversize_record", source_offset=12)
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO projection_dead_letters (projection, topic, partition, \"offset\", record_key, "
                     "record_value, error_class, reason, reason_code) VALUES ('ledger', %s, 2, 40, 'pay-p', "
                     "'\\x00'::bytea, 'UndecodableRecordError', 'bad_magic: 0001', 'bad_magic')", (topics.events,))

    code, out = run(capsys, "list", "--json")
    assert code == 0, out
    listed = json.loads(out)
    assert listed["count"] == 3
    assert sorted((g["error_class"], g["reason_code"], g["count"]) for g in listed["groups"]) == [
        ("OversizeRecord", "oversize_record", 1), ("ProcessingError", "processing_error", 1),
        ("UndecodableRecordError", "bad_magic", 1)]
    by_position = {(d["dlq_partition"], d["dlq_offset"]): d for d in listed["dead_letters"]}
    assert by_position[processing]["payment_id"] == command.payment_id
    assert by_position[junk]["payment_id"] == "pay-junk"
    assert by_position[processing]["source"] == {"topic": topics.commands, "partition": 0, "offset": 10}
    assert not any(d["redriven"] for d in listed["dead_letters"])
    assert [(row["projection"], row["key"], row["reason_code"]) for row in
            listed["projection_dead_letters"]["rows"]] == [("ledger", "pay-p", "bad_magic")]

    code, out = run(capsys, "show", f"{processing[0]}:{processing[1]}", "--json")
    shown = json.loads(out)
    assert code == 0 and shown["decoded"]["payment_id"] == command.payment_id
    assert shown["original_headers"][-1] == ["x-binary", "0xff00"]
    code, out = run(capsys, "show", f"{truncated[0]}:{truncated[1]}")
    assert code == 0 and "dlq_value_truncated=true" in out and "dlq_original_value_bytes=950000" in out
    document(capsys, f"show {truncated[0]}:{truncated[1]}", out)
    code, out = run(capsys, "show", f"{truncated[0]}:{truncated[1] + 1000}")
    assert code == 1 and "no dead letter at" in out

    code, out = run(capsys, "redrive", "--class", "ProcessingError", "--reason-text", "fix #14 deployed", "--yes")
    assert code == 0, out
    document(capsys, "redrive --class ProcessingError --reason-text 'fix #14 deployed' --yes", out)
    assert "redriven: 1; skipped: 0" in out
    (redriven,) = visible(lambda: on_commands(kafka_bootstrap, topics, value), 1, "the redriven record")
    assert redriven.key == command.payment_id.encode()
    assert redriven.headers == headers  # the original headers, exactly, and no dlq_* ones
    (audit,) = visible(lambda: audit_records(kafka_bootstrap, topics), 1, "the audit record")
    assert audit.key == f"{topics.dlq}/{processing[0]}/{processing[1]}".encode()
    entry = json.loads(audit.value or b"")
    assert (entry["who"], entry["reason"], entry["target_topic"]) == (operator(), "fix #14 deployed",
                                                                      topics.commands)
    assert (entry["target_partition"], entry["target_offset"]) == (redriven.partition, redriven.offset)

    code, out = run(capsys, "redrive", "--payment", command.payment_id, "--reason-text", "again", "--yes")
    assert code == 0 and "redriven: 0; skipped: 1" in out and "already redriven by" in out, out
    code, out = run(capsys, "redrive", "--offsets", f"{truncated[0]}:{truncated[1]}-{truncated[1]}",
                    "--reason-text", "dry", "--dry-run", "--json")
    plan = json.loads(out)
    assert code == 0 and plan["redriven"] == []
    refused = {item["dlq_position"]: item["why"] for item in plan["skipped"]}
    assert "dlq_value_truncated" in refused[f"{truncated[0]}:{truncated[1]}"]
    code, out = run(capsys, "redrive", "--reason", "oversize_record", "--reason-text", "try", "--yes")
    assert code == 0 and "redriven: 0; skipped: 1" in out and "fetch the original" in out, out
    document(capsys, "redrive --reason oversize_record --reason-text try --yes", out)
    assert on_commands(kafka_bootstrap, topics, huge[:65_536]) == []
    assert len(on_commands(kafka_bootstrap, topics, value)) == 1
    assert len(audit_records(kafka_bootstrap, topics)) == 1

    code, out = run(capsys, "list")
    assert code == 0, out
    document(capsys, "list", out)
    assert "3 dead letter(s) matching, 1 redriven" in out
    assert f"by {operator()}" in out and "'fix #14 deployed'" in out
    assert "#" in out and "ledger" in out  # the projection dead letter, labelled
    code, out = run(capsys, "list", "--reason", "bad_magic", "--json")
    assert [d["reason_code"] for d in json.loads(out)["dead_letters"]] == ["bad_magic"]


def test_concurrent_redrives_and_a_crashed_one_republish_each_dead_letter_exactly_once(
        kafka_bootstrap: str, env: Settings, topics: Topics, capsys: pytest.CaptureFixture[str]) -> None:
    commands = [make_initiate() for _ in range(6)]
    values = [serde().encode(command) for command in commands]
    for index, (command, value) in enumerate(zip(commands, values, strict=True)):
        dead_letter(kafka_bootstrap, topics, key=command.payment_id.encode(), value=value,
                    headers=build_headers(command, source="tests", traceparent=None),
                    error_class="UnknownSchemaError", reason_code="unknown_fingerprint", source_offset=index)
    # A run that crashed after producing, before its commit: its records must never be seen.
    crashed = redrive_producer(env)
    crashed.init_transactions(30)
    crashed.begin_transaction()
    crashed.produce(topics.commands, key=commands[0].payment_id.encode(), value=values[0])
    crashed.produce(topics.name(DLQ_REDRIVES), key=b"crashed", value=b"{}")
    assert crashed.flush(30) == 0

    barrier = threading.Barrier(2)
    codes: list[int] = []

    def redrive() -> None:
        barrier.wait()
        codes.append(main(["dlq", "redrive", "--reason", "unknown_fingerprint", "--reason-text", "schema v3 added",
                           "--yes"]))

    runs = [threading.Thread(target=redrive) for _ in range(2)]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join(120)
    out = capsys.readouterr()
    assert sorted(codes) in ([0, 0], [0, 1]), out  # a run fenced by the other says so and exits 1
    audit = visible(lambda: audit_records(kafka_bootstrap, topics), len(commands), "the audit records")
    assert b"crashed" not in [record.key for record in audit]
    for value in values:
        visible(partial(on_commands, kafka_bootstrap, topics, value), 1, "each record redriven, once")
    assert main(["dlq", "redrive", "--reason", "unknown_fingerprint", "--reason-text", "x", "--yes"]) == 0
    assert "redriven: 0; skipped: 6" in capsys.readouterr().out
    assert all(len(on_commands(kafka_bootstrap, topics, value)) == 1 for value in values)


def test_a_dead_letter_a_running_service_wrote_is_redriven_to_it_and_an_unreachable_database_is_reported(
        kafka_bootstrap: str, postgres_server_url: str, env: Settings, topics: Topics,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    command = make_initiate()
    headers = build_headers(command, source="tests", traceparent=None)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "partitioner": "murmur2_random"})
    producer.produce(topics.commands, key=command.payment_id.encode(), value=b"\x00\x01 garbage",
                     headers=headers)  # type: ignore[arg-type]
    assert producer.flush(30) == 0
    log_dir = Path(tempfile.mkdtemp(prefix="dlq-"))
    (intake,) = start_all([service(["intake"], bootstrap=kafka_bootstrap, database_url=postgres_server_url,
                                   topics=topics, log_dir=log_dir)])
    try:
        def dead() -> list[Record]:
            return [r for r in read_all(kafka_bootstrap, topics.dlq) if r.key == command.payment_id.encode()]

        (first,) = wait_for(dead, 60, "the intake to dead-letter the garbage")
        code, out = run(capsys, "redrive", "--payment", command.payment_id, "--reason-text", "drill", "--yes")
        assert code == 0 and "redriven: 1" in out, out
        # The intake reads it again and, the bytes being as bad as before, dead-letters it again: from the
        # position the redrive gave it, with the original headers.
        (entry,) = [json.loads(r.value or b"")
                    for r in visible(lambda: audit_records(kafka_bootstrap, topics), 1, "the audit record")]
        again = wait_for(lambda: [r for r in dead() if r.offset != first.offset], 60, "the second dead letter")
        (second,) = again
        letter = DeadLetter.from_headers(second.headers)
        assert (letter.source_partition, letter.source_offset) == (entry["target_partition"], entry["target_offset"])
        assert original_headers(second.headers) == original_headers(first.headers) == headers
        assert intake.alive()
    finally:
        assert intake.stop() == 0, intake.log_tail()

    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/none")
    code, out = run(capsys, "list")
    assert code == 0 and "not shown: database not reachable" in out, out
    assert "2 dead letter(s) matching, 1 redriven" in out
