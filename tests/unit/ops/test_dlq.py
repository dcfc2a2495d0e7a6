"""`payments dlq`: the pure parts (selection, grouping, redrive planning, audit bookkeeping, error mapping)."""

from __future__ import annotations

import argparse
import os
import uuid
from datetime import UTC, datetime

import pytest
from confluent_kafka import KafkaError

from ops import dlq
from ops.cli import build_parser
from ops.dlq import kafka, model
from ops.dlq.model import Audit, DlqError, Letter, Redrive, Selection, letter_of, plan_redrive
from ops.registry import topology
from ops.settings import Settings
from payments.contracts.codec import SingleObjectSerde
from payments.contracts.envelope import build_headers
from payments.contracts.topics import DLQ_REDRIVES
from payments.runtime.deadletter import DeadLetter, DeadLetterLimits
from payments.runtime.topics import Topics
from tests.support import make_initiate

TOPICS = Topics("x.")
KNOWN = frozenset({TOPICS.commands, TOPICS.events})
SERDE = SingleObjectSerde()
LIMITS = DeadLetterLimits()


def letter(offset: int, *, partition: int = 0, error_class: str = "UndecodableRecordError",
           reason_code: str = "bad_magic", source_offset: int | None = None, value: bytes = b"\x00\x01 junk",
           key: bytes | None = b"pay-1", source_topic: str = TOPICS.commands, timestamp_ms: int = 1_000,
           limits: DeadLetterLimits = LIMITS, minimal: bool = False,
           original: list[tuple[str, bytes]] | None = None) -> Letter:
    dead = DeadLetter(error_class, reason_code, "detail", source_topic, 3,
                      offset if source_offset is None else source_offset, minimal=minimal)
    key_, value_, headers = dead.record(key, value, original or [("ce_type", b"t")], limits)
    found = letter_of(partition, offset, timestamp_ms=timestamp_ms, key=key_, value=value_, headers=headers)
    return Letter(**{**found.__dict__, "payment_id": model.payment_id_of(found, SERDE, TOPICS)})


def redrive_of(item: Letter, who: str = "alice@host") -> Redrive:
    assert item.source is not None
    return Redrive(TOPICS.dlq, item.partition, item.offset, *item.source, target_topic=item.source[0],
                   target_partition=1, target_offset=99, who=who, when="2026-12-02T10:00:00+00:00", reason="fixed")


def test_a_dead_letter_is_parsed_from_its_headers_and_a_foreign_record_is_recognised() -> None:
    parsed = letter(5, source_offset=77)
    assert (parsed.error_class, parsed.reason_code, parsed.source) == (
        "UndecodableRecordError", "bad_magic", (TOPICS.commands, 3, 77))
    assert parsed.incomplete() is None
    foreign = letter_of(0, 1, timestamp_ms=0, key=None, value=b"x", headers=[("ce_type", b"t")])
    assert foreign.dead is None and foreign.error_class == "(not a dead letter)"
    garbled = letter_of(0, 2, timestamp_ms=0, key=None, value=b"x", headers=[
        *[(name, value) for name, value in letter(1).headers if name != "dlq_source_offset"],
        ("dlq_source_offset", b"not a number")])
    assert garbled.dead is None


def test_selection_by_offset_range_includes_both_ends_and_only_that_partition() -> None:
    letters = [letter(offset, partition=partition) for partition in (0, 1) for offset in range(10)]
    selection = Selection(offsets=model.parse_offsets("1:3-5"))
    assert [(item.partition, item.offset) for item in letters if selection.matches(item)] == [(1, 3), (1, 4), (1, 5)]
    assert model.parse_offsets("2:7") == (2, 7, 7)
    for bad in ("3", "3:", "a:1-2", "3:5-2", "3:1-x"):
        with pytest.raises(DlqError):
            model.parse_offsets(bad)
    assert model.parse_position("4:1042") == (4, 1042)
    with pytest.raises(DlqError):
        model.parse_position("4-1042")


def test_selection_by_class_reason_payment_source_and_time() -> None:
    command = make_initiate()
    decodable = letter(1, error_class="ProcessingError", reason_code="processing_error",
                       value=SERDE.encode(command), key=b"other-key", timestamp_ms=5_000)
    junk = letter(2, key=b"pay-junk", source_topic=TOPICS.events, timestamp_ms=1_000)
    assert decodable.payment_id == command.payment_id  # the value's payment id beats the key
    assert junk.payment_id == "pay-junk"  # undecodable: the key, on a payment-keyed topic
    cases = {Selection(error_class="ProcessingError"): [1], Selection(reason_code="bad_magic"): [2],
             Selection(payment_id=command.payment_id): [1], Selection(source_topic=TOPICS.events): [2],
             Selection(since_ms=2_000): [1], Selection(): [1, 2]}
    for selection, expected in cases.items():
        assert [item.offset for item in (decodable, junk) if selection.matches(item)] == expected, selection
    account_keyed = letter(3, key=b"acc-1", source_topic=TOPICS.name("funds.commands"))
    assert account_keyed.payment_id is None  # funds commands are keyed by account, not payment


def test_since_takes_iso_times_in_utc_unless_they_carry_an_offset() -> None:
    assert model.parse_since("2026-12-02T10:00:00Z") == model.parse_since("2026-12-02T10:00:00") == int(
        datetime(2026, 12, 2, 10, tzinfo=UTC).timestamp() * 1000)
    assert model.parse_since("2026-12-02T12:00:00+02:00") == model.parse_since("2026-12-02T10:00:00")
    with pytest.raises(DlqError):
        model.parse_since("yesterday")


def test_the_plan_redrives_each_selected_complete_dead_letter_once_and_says_why_it_skips_the_others() -> None:
    fine = letter(0)
    done = letter(1)
    truncated = letter(2, value=os.urandom(2_000), limits=DeadLetterLimits(copy_bytes_max=1_000,
                                                                           truncated_value_bytes=100))
    minimal = letter(3, minimal=True)
    headers_dropped = letter(4, limits=DeadLetterLimits(headers_bytes_max=1))
    key_cut = letter(5, key=b"k" * 50, limits=DeadLetterLimits(key_bytes_max=10))
    elsewhere = letter(6, source_topic="someone.elses.topic")
    same_source_a, same_source_b = letter(7, source_offset=500), letter(8, source_offset=500)
    source_done = letter(9, source_offset=1)  # the same source record as `done`, dead-lettered by another service
    audit = Audit.of([redrive_of(done), Redrive(**{**redrive_of(fine).__dict__, "dlq_topic": "y.payments.dlq"})],
                     TOPICS.dlq)
    letters = [fine, done, truncated, minimal, headers_dropped, key_cut, elsewhere, same_source_a, same_source_b,
               source_done]
    plan = plan_redrive(reversed(letters), Selection(), audit, KNOWN)
    assert [item.offset for item in plan.redrive] == [0, 7]  # another DLQ's audit record does not count
    why = {skip.letter.offset: skip.why for skip in plan.skipped}
    assert set(why) == {1, 2, 3, 4, 5, 6, 8, 9}
    assert why[1].startswith("already redriven by alice@host") and "'fixed'" in why[1]
    assert "dlq_value_truncated" in why[2] and f"{TOPICS.commands} 3:2" in why[2]
    assert "dlq_value_truncated" in why[3] and "dlq_original_headers_dropped" in why[3]
    assert "dlq_original_headers_dropped" in why[4]
    assert "dlq_original_key_bytes" in why[5]
    assert "not a topic of this deployment" in why[6]
    assert "redriven from dlq 0:7 in this run" in why[8]
    assert "already redriven from dlq 0:1" in why[9]
    assert plan_redrive(letters, Selection(offsets=(0, 1, 1)), audit, KNOWN).redrive == []


def test_the_plan_stops_at_the_per_run_limit_and_names_the_rest() -> None:
    letters = [letter(offset) for offset in range(5)]
    plan = plan_redrive(letters, Selection(), Audit(), KNOWN, records_max=3)
    assert [item.offset for item in plan.redrive] == [0, 1, 2]
    assert [(skip.letter.offset, "run again" in skip.why) for skip in plan.skipped] == [(3, True), (4, True)]


def test_an_audit_record_round_trips_and_its_key_names_the_dlq_position() -> None:
    record = redrive_of(letter(12, partition=4))
    assert record.key == f"{TOPICS.dlq}/4/12".encode()
    assert Redrive.from_json(record.to_json()) == record
    audit = Audit.of([record, Redrive(**{**record.__dict__, "who": "bob@elsewhere"})], TOPICS.dlq)
    assert audit.by_position[(4, 12)].who == "alice@host"  # the first redrive is the history


def test_groups_count_by_class_and_reason_with_oldest_newest_and_redriven() -> None:
    letters = [letter(0, timestamp_ms=1_000), letter(1, timestamp_ms=9_000), letter(2, timestamp_ms=4_000),
               letter(3, error_class="MissingKey", reason_code="missing_key", timestamp_ms=7_000)]
    groups = model.group_letters(letters, Audit.of([redrive_of(letters[1])], TOPICS.dlq))
    assert [(g.error_class, g.reason_code, g.count, g.redriven, g.oldest_ms, g.newest_ms) for g in groups] == [
        ("UndecodableRecordError", "bad_magic", 3, 1, 1_000, 9_000), ("MissingKey", "missing_key", 1, 0, 7_000, 7_000)]


def test_ages_are_short_and_never_negative() -> None:
    assert [model.format_age(s) for s in (-3, 42, 723, 18_720, 273_600)] == ["0s", "42s", "12m03s", "5h12m", "3d04h"]


def test_show_decodes_a_record_of_ours_and_says_why_it_cannot_decode_another() -> None:
    command = make_initiate()
    headers = build_headers(command, source="tests", traceparent=None)
    shown = dlq.show_json(letter(0, value=SERDE.encode(command), original=headers), SERDE, Audit(), 2_000)
    assert shown["decoded"]["type"] == "payments.commands.InitiatePayment"
    assert shown["decoded"]["payment_id"] == command.payment_id
    assert ["ce_type", "payments.commands.InitiatePayment"] in shown["original_headers"]
    assert not any(name.startswith("dlq_") for name, _ in shown["original_headers"])
    junk = dlq.show_json(letter(1, value=b"\xff" * 300), SERDE, Audit(), 2_000)
    assert junk["decoded"] is None and "UndecodableRecordError" in junk["not_decoded"]
    assert junk["value_preview_hex"] == "ff" * dlq.PREVIEW_BYTES and junk["value_bytes"] == 300
    truncated = dlq.show_json(letter(2, value=b"\x00" * 2_000, limits=DeadLetterLimits(
        copy_bytes_max=1_000, truncated_value_bytes=100)), SERDE, Audit(), 2_000)
    assert truncated["truncation"]["dlq_value_truncated"] == "true"
    assert truncated["truncation"]["dlq_original_value_bytes"] == "2000"
    assert truncated["value_bytes"] == 100


def test_redrive_needs_exactly_one_selector_and_a_reason() -> None:
    parser = build_parser()
    args = parser.parse_args(["dlq", "redrive", "--reason", "bad_magic", "--reason-text", "schema v3 deployed"])
    assert (args.reason_code, args.reason_text, args.dry_run, args.yes) == ("bad_magic", "schema v3 deployed",
                                                                            False, False)
    for argv in (["dlq", "redrive", "--reason-text", "x"], ["dlq", "redrive", "--class", "C"],
                 ["dlq", "redrive", "--class", "C", "--payment", "p", "--reason-text", "x"],
                 ["dlq", "redrive", "--reason-t", "x", "--class", "C"]):  # no abbreviations of options
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
    listing = parser.parse_args(["dlq", "list", "--class", "C", "--since", "2026-12-01", "--json"])
    assert (listing.error_class, listing.since, listing.json, listing.limit) == ("C", "2026-12-01", True, 200)


def test_an_empty_reason_text_is_refused_before_anything_is_read() -> None:
    args = argparse.Namespace(reason_text="   ", offsets=None, error_class="C", reason_code=None, payment=None)
    with pytest.raises(DlqError, match="reason-text"):
        dlq._redrive(args, None)  # type: ignore[arg-type]  # settings are not reached


class Producer:
    def __init__(self) -> None:
        self.aborted = 0

    def abort_transaction(self, timeout: float) -> None:
        self.aborted += 1


def test_a_fenced_run_says_another_run_took_over_and_an_abortable_error_aborts() -> None:
    producer = Producer()
    with pytest.raises(DlqError, match="fenced this one"):
        kafka._abort(producer, KafkaError(KafkaError._FENCED, "fenced", fatal=True))  # type: ignore[arg-type]
    assert producer.aborted == 0  # a fenced producer cannot abort: the run that fenced it did
    with pytest.raises(DlqError, match=r"aborted.*nothing was redriven"):
        kafka._abort(producer, KafkaError(KafkaError._MSG_TIMED_OUT, "x", txn_requires_abort=True))  # type: ignore[arg-type]
    assert producer.aborted == 1
    with pytest.raises(DlqError, match="outcome is unknown"):
        kafka._abort(producer, KafkaError(KafkaError._TIMED_OUT, "commit", retriable=True))  # type: ignore[arg-type]


def test_the_operator_is_user_at_host() -> None:
    user, _, host = model.operator().partition("@")
    assert user and host


def test_letters_keep_every_field_they_were_made_from() -> None:
    made = letter(3, partition=2, timestamp_ms=123, key=uuid.uuid4().hex.encode())
    assert (made.position, made.timestamp_ms, made.value_bytes) == ("2:3", 123, len(b"\x00\x01 junk"))


def test_the_audit_topic_is_in_the_topology_compacted_so_every_process_creates_it() -> None:
    specs = {spec.name: spec for spec in topology(TOPICS, 6)}
    audit = specs[TOPICS.name(DLQ_REDRIVES)]
    assert audit.compacted and audit.partitions == 6
    assert kafka.audit_topic(Settings.load({"PAYMENTS_TOPIC_PREFIX": "x."})) == "x.payments.dlq-redrives"
