"""`payments inspect`, the pure part: a payment's records (driven through the real saga logic) become a
timeline in time order and the saga state the orchestrator holds, with what it waits for and until when."""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from ops.inspect import (
    AWAITED,
    DatabaseView,
    MalformedPaymentIdError,
    PartitionRead,
    Seen,
    check_payment_id,
    inspect_records,
    murmur2,
    render,
    to_json,
)
from orchestrator.config import SagaConfig
from orchestrator.policy import POLICIES, window
from payments.contracts import topics
from payments.contracts.messages import (
    AssessRisk,
    CommitFunds,
    FundsReservationResult,
    Message,
    ReleaseFunds,
    ReserveFunds,
    RiskAssessmentCompleted,
    SubmitToPartner,
)
from payments.runtime.logic import Outgoing
from tests.unit.saga.harness import (
    PAYMENT_ID,
    START,
    Saga,
    commit_reply,
    initiate,
    release_reply,
    reservation_reply,
    risk_reply,
    submission_reply,
)

CONFIG = SagaConfig()


class Recorder:
    """Drives the real saga logic and keeps every record it would read or write, per topic in log order."""

    def __init__(self) -> None:
        self.saga = Saga()
        self.seen: list[Seen] = []
        self.offsets: Counter[str] = Counter()

    def add(self, topic: str, message: Message | None, at: datetime | None = None, problem: str | None = None) -> None:
        self.seen.append(Seen(topic, 0, self.offsets[topic], at or self.saga.now, message, problem))
        self.offsets[topic] += 1

    def _outputs(self, outgoing: tuple[Outgoing, ...]) -> None:
        for out in outgoing:
            self.add(out.destination, out.message)

    def handle(self, message: Message) -> None:
        self.add(topics.ADMITTED if message.TOPIC == topics.COMMANDS else message.TOPIC, message)
        self._outputs(self.saga.handle(message))

    def after(self, delta: timedelta) -> None:
        self._outputs(self.saga.advance(delta))

    def expire(self) -> None:
        self._outputs(self.saga.expire())

    def settle(self) -> None:
        self.handle(initiate())
        for reply in (lambda: risk_reply(self.saga.last_command(AssessRisk)),
                      lambda: reservation_reply(self.saga.last_command(ReserveFunds)),
                      lambda: submission_reply(self.saga.last_command(SubmitToPartner)),
                      lambda: commit_reply(self.saga.last_command(CommitFunds))):
            self.saga.now += timedelta(milliseconds=200)
            self.handle(reply())


# -- where a payment's records are ---------------------------------------------------------------


@pytest.mark.parametrize(("data", "signed"), [  # Kafka's own test vectors (UtilsTest.testMurmur2)
    (b"21", -973932308), (b"foobar", -790332482), (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829), (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107)])
def test_murmur2_is_kafkas_hash(data: bytes, signed: int) -> None:
    assert murmur2(data) == signed & 0xFFFFFFFF


@pytest.mark.parametrize("bad", ["", "42", "9b2f4a34-5c1d-4a8e-9f3b-1d2c3b4a5e6",
                                 "9b2f4a34_5c1d_4a8e_9f3b_1d2c3b4a5e6f", "' OR 1=1 --"])
def test_a_malformed_payment_id_is_refused_with_what_a_payment_id_looks_like(bad: str) -> None:
    with pytest.raises(MalformedPaymentIdError, match="is not a payment id: payment ids are UUIDs"):
        check_payment_id(bad)


def test_a_uuid_is_a_payment_id() -> None:
    assert check_payment_id(PAYMENT_ID) == PAYMENT_ID


# -- timeline and state --------------------------------------------------------------------------


def test_a_settled_payment_shows_every_command_event_and_reply_in_order_and_is_finished() -> None:
    run = Recorder()
    run.settle()

    inspection = inspect_records(PAYMENT_ID, run.seen, CONFIG, START + timedelta(minutes=5))

    assert [(e.topic, e.type) for e in inspection.timeline] == [
        (topics.ADMITTED, "InitiatePayment"), (topics.EVENTS, "PaymentInitiated"), (topics.RISK_COMMANDS, "AssessRisk"),
        (topics.RISK_REPLIES, "RiskAssessmentCompleted"), (topics.EVENTS, "RiskAssessed"),
        (topics.FUNDS_COMMANDS, "ReserveFunds"),
        (topics.FUNDS_REPLIES, "FundsReservationResult"), (topics.EVENTS, "FundsReserved"),
        (topics.EVENTS, "SubmittedToPartner"), (topics.PARTNER_COMMANDS, "SubmitToPartner"),
        (topics.PARTNER_REPLIES, "PartnerSubmissionResult"), (topics.EVENTS, "PartnerAccepted"),
        (topics.FUNDS_COMMANDS, "CommitFunds"),
        (topics.FUNDS_REPLIES, "FundsCommitResult"), (topics.EVENTS, "FundsCommitted"),
        (topics.EVENTS, "PaymentSettled")]
    assert [e.seq for e in inspection.timeline if e.kind == "event"] == list(range(1, 8))
    assert {e.kind for e in inspection.timeline} == {"command", "event", "participant_command", "reply"}
    assert "amount=12.50 EUR" in inspection.timeline[0].summary
    saga = inspection.saga
    assert saga is not None
    assert (saga.status, saga.terminal, saga.alert, saga.waiting) == ("SETTLED", True, False, None)
    assert (saga.last_event_type, saga.last_seq, saga.generations) == ("PaymentSettled", 7, 1)
    assert saga.kept_until == START + timedelta(milliseconds=800) + CONFIG.refund_window
    assert saga.description.startswith("finished: SETTLED; the orchestrator keeps its state until 2025-04-02T")
    assert (inspection.payer_account, inspection.payee_account, inspection.partner) == (
        "acc-payer-1", "acc-payee-1", "simbank")
    assert inspection.amount is not None and inspection.amount.amount_minor == 1250


def test_a_payment_waiting_for_risk_says_since_when_and_when_it_times_out() -> None:
    run = Recorder()
    run.handle(initiate())

    inspection = inspect_records(PAYMENT_ID, run.seen, CONFIG, START + timedelta(seconds=20))

    saga = inspection.saga
    assert saga is not None and saga.waiting is not None
    waiting = saga.waiting
    assert (saga.status, saga.terminal) == ("AWAITING_RISK", False)
    assert (waiting.step, waiting.attempt, waiting.participant, waiting.reply_type) == (
        "RISK", 1, "risk", "RiskAssessmentCompleted")
    assert waiting.command_id == run.saga.last_command(AssessRisk).command_id
    assert (waiting.since, waiting.timeout_at) == (START, START + timedelta(seconds=30))
    assert (waiting.command_seen, waiting.reply_seen) == (True, False)
    assert saga.description == (
        f"waiting for RiskAssessmentCompleted from risk (RISK attempt 1, command {waiting.command_id}) since "
        "2025-01-02T03:04:05.000Z (20.0s ago); timeout at 2025-01-02T03:04:35.000Z (in 10.0s)")


def test_a_timer_past_its_deadline_is_called_overdue() -> None:
    run = Recorder()
    run.handle(initiate())

    saga = inspect_records(PAYMENT_ID, run.seen, CONFIG, START + timedelta(seconds=45)).saga

    assert saga is not None
    assert "overdue by 15.0s: is the orchestrator running?" in saga.description


def test_a_reply_on_its_topic_that_the_saga_has_not_folded_is_pointed_out() -> None:
    run = Recorder()
    run.handle(initiate())
    run.add(topics.RISK_REPLIES, risk_reply(run.saga.last_command(AssessRisk)))  # written, not yet read

    saga = inspect_records(PAYMENT_ID, run.seen, CONFIG, START + timedelta(seconds=1)).saga

    assert saga is not None and saga.waiting is not None
    assert saga.waiting.reply_seen
    assert saga.description.endswith("a reply is on risk.replies, not yet read by the orchestrator")


def test_a_retry_after_a_timeout_is_on_the_timeline_and_the_wait_is_for_its_attempt() -> None:
    run = Recorder()
    run.handle(initiate())
    run.handle(risk_reply(run.saga.last_command(AssessRisk)))
    run.expire()  # no reservation reply: the timer reissues the reservation

    inspection = inspect_records(PAYMENT_ID, run.seen, CONFIG, run.saga.now)

    retry = inspection.timeline[-2]
    assert (retry.type, retry.topic) == ("ParticipantCommandIssued", topics.EVENTS)
    assert "reason=TIMEOUT step=FUNDS_RESERVE attempt=2" in retry.summary
    assert inspection.timeline[-1].type == "ReserveFunds"
    saga = inspection.saga
    assert saga is not None and saga.waiting is not None
    assert (saga.waiting.step, saga.waiting.attempt, saga.waiting.since) == ("FUNDS_RESERVE", 2, run.saga.now)
    assert saga.waiting.timeout_at == run.saga.now + window(PAYMENT_ID, "FUNDS_RESERVE", 2)


def test_a_release_that_keeps_failing_is_an_alert_that_still_waits_for_a_late_reply() -> None:
    run = Recorder()
    run.handle(initiate())
    run.handle(risk_reply(run.saga.last_command(AssessRisk)))
    run.handle(reservation_reply(run.saga.last_command(ReserveFunds)))
    run.handle(submission_reply(run.saga.last_command(SubmitToPartner), "DECLINED"))
    while run.saga.status == "RELEASING":
        run.expire()

    saga = inspect_records(PAYMENT_ID, run.seen, CONFIG, run.saga.now).saga

    assert saga is not None and saga.waiting is not None
    assert (saga.status, saga.alert, saga.terminal, saga.last_event_type) == (
        "COMPENSATION_FAILED", True, False, "CompensationFailed")
    assert saga.waiting.timeout_at is None
    assert saga.description.startswith("ALERT COMPENSATION_FAILED: an operator must act")
    assert "waiting for FundsReleaseResult from funds (FUNDS_RELEASE attempt 10" in saga.description
    # ...and a late release result then finishes it.
    run.handle(release_reply(run.saga.last_command(ReleaseFunds)))
    finished = inspect_records(PAYMENT_ID, run.seen, CONFIG, run.saga.now).saga
    assert finished is not None and (finished.status, finished.terminal) == ("FAILED", True)


def test_events_that_cannot_be_folded_are_reported_and_the_state_before_them_shown() -> None:
    run = Recorder()
    run.handle(initiate())
    run.handle(risk_reply(run.saga.last_command(AssessRisk)))
    events = [s for s in run.seen if s.topic == topics.EVENTS]
    del run.seen[run.seen.index(events[0])]  # seq 1 missing: the log starts at seq 2

    saga = inspect_records(PAYMENT_ID, run.seen, CONFIG, run.saga.now).saga

    assert saga is not None
    assert saga.fold_error is not None and "RiskAssessed#2" in saga.fold_error
    assert saga.description.startswith("cannot fold the events: RiskAssessed#2 cannot follow")


def test_timeline_is_in_time_order_across_topics_but_keeps_each_topics_log_order() -> None:
    run = Recorder()
    run.handle(initiate())
    reply = risk_reply(run.saga.last_command(AssessRisk))
    # A record whose timestamp is earlier than the one before it on its topic (another producer's clock).
    run.add(topics.RISK_REPLIES, reply, at=START + timedelta(seconds=5))
    run.add(topics.RISK_REPLIES, reply.model_copy(update={"reply_id": "second"}), at=START + timedelta(seconds=2))
    run.add(topics.INTAKE_COMMANDS, None, at=START + timedelta(seconds=3), problem="undecodable: bad magic")

    timeline = inspect_records(PAYMENT_ID, run.seen, CONFIG, START).timeline

    assert [(e.topic, e.id if e.topic == topics.RISK_REPLIES else e.type) for e in timeline[-3:]] == [
        (topics.INTAKE_COMMANDS, "?"), (topics.RISK_REPLIES, reply.reply_id), (topics.RISK_REPLIES, "second")]
    assert (timeline[-3].kind, timeline[-3].summary) == ("undecodable", "undecodable: bad magic")


def test_a_dead_letter_of_the_payment_is_on_the_timeline_with_its_reason() -> None:
    run = Recorder()
    run.handle(initiate())
    run.add(topics.DLQ, None, problem="dead letter from payments.commands: undecodable: bad magic")
    run.add(topics.DLQ, initiate(), problem="dead letter from intake.commands: poisoned")

    timeline = inspect_records(PAYMENT_ID, run.seen, CONFIG, START).timeline

    assert [(e.kind, e.type, e.summary) for e in timeline if e.topic == topics.DLQ] == [
        ("dead_letter", "?", "dead letter from payments.commands: undecodable: bad magic"),
        ("dead_letter", "InitiatePayment", "dead letter from intake.commands: poisoned amount=12.50 EUR")]


def test_commands_without_any_event_give_a_timeline_and_no_saga() -> None:
    run = Recorder()
    run.add(topics.INTAKE_COMMANDS, initiate())

    inspection = inspect_records(PAYMENT_ID, run.seen, CONFIG, START)

    assert inspection.saga is None
    assert [e.type for e in inspection.timeline] == ["InitiatePayment"]


# -- output --------------------------------------------------------------------------------------


def _settled_output(database: DatabaseView) -> tuple[str, dict[str, object]]:
    run = Recorder()
    run.settle()
    inspection = inspect_records(PAYMENT_ID, run.seen, CONFIG, START + timedelta(minutes=5))
    reads = [PartitionRead("payments.events", 3, 42, 7, PAYMENT_ID)]
    text = io.StringIO()
    render(inspection, reads, database, text)
    return text.getvalue(), json.loads(to_json(inspection, reads, database))


def test_json_has_stable_keys_and_money_in_minor_units_with_its_currency() -> None:
    _, document = _settled_output(DatabaseView(timeline_rows=7))

    assert list(document) == ["payment_id", "terms", "saga", "timeline", "kafka_read", "database"]
    assert document["terms"] == {"payer_account": "acc-payer-1", "payee_account": "acc-payee-1",
                                 "amount": {"amount_minor": 1250, "currency": "EUR"}, "partner": "simbank"}
    saga = document["saga"]
    assert isinstance(saga, dict) and saga["status"] == "SETTLED" and saga["waiting"] is None
    assert saga["last_event_at"] == "2025-01-02T03:04:05.800Z"
    timeline = document["timeline"]
    assert isinstance(timeline, list) and len(timeline) == 16
    assert set(timeline[0]) == {"at", "topic", "partition", "offset", "kind", "type", "id", "seq", "summary"}
    assert document["kafka_read"] == [{"topic": "payments.events", "partition": 3, "end_offset": 42, "records": 7,
                                     "key": PAYMENT_ID}]
    assert document["database"] == {"problems": [], "payment_status": None, "timeline_rows": 7, "ledger": None,
                                    "unposted": None, "settlement_report": None}


def test_an_unreachable_database_is_one_line_and_the_kafka_part_still_shows() -> None:
    text, _ = _settled_output(DatabaseView(problems=["database unreachable: connection refused"]))

    lines = text.splitlines()
    assert lines[0] == f"payment   {PAYMENT_ID}"
    assert "saga      SETTLED (terminal) after PaymentSettled #7 at 2025-01-02T03:04:05.800Z" in lines
    assert sum("PaymentInitiated" in line for line in lines) == 1
    assert [line for line in lines if line.startswith("database")] == [
        "database  database unreachable: connection refused"]
    assert not any(line.startswith(("status", "ledger")) for line in lines)


def test_a_projection_behind_the_log_is_pointed_out() -> None:
    text, _ = _settled_output(DatabaseView(timeline_rows=5))

    assert "payment_timeline 5 row(s); 7 event(s) on Kafka  <- the projection is behind the log" in text


def test_every_step_the_saga_can_await_names_its_participant_and_reply() -> None:
    assert set(AWAITED) == set(POLICIES)
    assert AWAITED["RISK"] == ("risk", RiskAssessmentCompleted)
    assert AWAITED["FUNDS_RESERVE"] == ("funds", FundsReservationResult)
    assert all(f"{participant}.replies" == reply.TOPIC for participant, reply in AWAITED.values())


def test_now_is_the_callers_clock() -> None:
    run = Recorder()
    run.handle(initiate())
    later = datetime(2025, 1, 2, 3, 4, 6, tzinfo=UTC)

    saga = inspect_records(PAYMENT_ID, run.seen, CONFIG, later).saga

    assert saga is not None and "(1.0s ago)" in saga.description
