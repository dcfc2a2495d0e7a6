"""One test per arrow of the saga's state machine (docs/saga.md)."""

from __future__ import annotations

from datetime import timedelta

from orchestrator.ids import event_id
from orchestrator.saga import OrchestratorLogic
from orchestrator.state import hold_id, submission_id
from payments.contracts.events import (
    CompensationFailed,
    FeatureContribution,
    FundsReleased,
    FundsReservationFailed,
    PaymentCancelled,
    PaymentFailed,
    PaymentInitiated,
    PaymentRejected,
    PaymentSettled,
    RiskAssessed,
    ShadowScore,
    SubmittedToPartner,
)
from payments.contracts.participants import (
    AssessRisk,
    CommitFunds,
    QueryPartnerPayment,
    RecordRiskOutcome,
    ReleaseFunds,
    ReserveFunds,
    SubmitToPartner,
)
from tests.unit.consumers.helpers import envelope_of
from tests.unit.saga import stages
from tests.unit.saga.harness import (
    PAYMENT_ID,
    Saga,
    cancel,
    commit_reply,
    initiate,
    query_reply,
    release_reply,
    reservation_reply,
    risk_reply,
    submission_reply,
)


def test_logic_declares_its_topics_and_keys_by_payment_id() -> None:
    logic = OrchestratorLogic()
    assert logic.service == "orchestrator"
    assert logic.input_topics == ("payments.admitted", "risk.replies", "funds.replies", "partner.replies")
    assert logic.key_of(initiate(), envelope_of(initiate())) == PAYMENT_ID


def test_valid_initiate_emits_initiated_and_asks_risk() -> None:
    saga = Saga()
    out = saga.handle(initiate())
    assert saga.types(out) == ["PaymentInitiated", "AssessRisk"]
    # AssessRisk is keyed by the payee: the risk service keeps each payee's history on one partition
    payee = initiate().payee_account
    assert [(o.destination, o.key) for o in out] == [("payments.events", PAYMENT_ID), ("risk.commands", payee)]
    asked = saga.last_command(AssessRisk)
    assert (asked.partner, asked.initiated_at, asked.attempt) == ("simbank", saga.events[0].occurred_at, 1)
    assert saga.status == "AWAITING_RISK"
    event = saga.events[0]
    assert (event.seq, event.event_id) == (1, event_id(PAYMENT_ID, 1, event.causation_id))
    assert event.causation_id == initiate().command_id


def test_invalid_initiate_is_rejected_with_first_reason_and_stays_rejected() -> None:
    saga = Saga()
    saga.handle(initiate(amount_minor=-5))
    rejected = saga.emitted(PaymentRejected)
    assert [r.reason_code for r in rejected] == ["AMOUNT_NOT_POSITIVE"]
    assert saga.status == "REJECTED"
    assert saga.handle(initiate(amount_minor=-5)) == ()
    assert saga.handle(initiate()) == ()  # a rejected payment id is never reused


def test_risk_approval_records_assessment_and_reserves_funds_keyed_by_payer_account() -> None:
    saga = stages.awaiting_risk()
    out = saga.handle(risk_reply(saga.last_command(AssessRisk)))
    assert saga.types(out) == ["RiskAssessed", "ReserveFunds"]
    reserve = saga.last_command(ReserveFunds)
    assert out[1].key == "acc-payer-1"
    assert reserve.hold_id == hold_id(PAYMENT_ID)
    assert saga.status == "RESERVING_FUNDS"


def test_risk_assessed_records_what_the_answer_was_made_from() -> None:
    saga = stages.awaiting_risk()
    reply = risk_reply(saga.last_command(AssessRisk)).model_copy(update={
        "features": {"amount_log": 2.5, "payer_count_1h": 3.0}, "payer_seq": 7, "payee_seq": 2,
        "failures_before": ["pay-0"], "contributions": [FeatureContribution(feature="payer_count_1h", bp=900)],
        "shadow": ShadowScore(model_version="gbm-x", score_bp=40, decision="APPROVE")})
    saga.handle(reply)
    (assessed,) = saga.emitted(RiskAssessed)
    fields = ("features", "payer_seq", "payee_seq", "failures_before", "contributions", "shadow", "model_version")
    assert assessed.model_dump(include=set(fields)) == reply.model_dump(include=set(fields))


def test_risk_decline_fails_the_payment_at_stage_risk() -> None:
    saga = stages.awaiting_risk()
    out = saga.handle(risk_reply(saga.last_command(AssessRisk), "DECLINE"))
    assert saga.types(out) == ["RiskAssessed", "PaymentFailed"]
    assert saga.emitted(PaymentFailed)[0].stage == "RISK"
    assert saga.status == "FAILED"


def test_reserved_funds_submit_to_partner_with_deterministic_submission_id() -> None:
    saga = stages.reserving_funds()
    out = saga.handle(reservation_reply(saga.last_command(ReserveFunds)))
    assert saga.types(out) == ["FundsReserved", "SubmittedToPartner", "SubmitToPartner"]
    assert saga.last_command(SubmitToPartner).submission_id == submission_id(PAYMENT_ID)
    assert saga.emitted(SubmittedToPartner)[0].attempt == 1
    assert saga.status == "SUBMITTED"


def test_insufficient_funds_fails_the_payment_without_partner_call() -> None:
    saga = stages.reserving_funds()
    out = saga.handle(reservation_reply(saga.last_command(ReserveFunds), "INSUFFICIENT_FUNDS"))
    assert saga.types(out) == ["FundsReservationFailed", "PaymentFailed", "RecordRiskOutcome"]
    assert saga.emitted(PaymentFailed)[0].reason_code == "INSUFFICIENT_FUNDS"
    told = out[-1]  # the risk service counts the failure in the payer's history, keyed by the payer
    payer = initiate().payer_account
    assert (told.destination, told.key) == ("risk.outcomes", payer)
    assert told.message == RecordRiskOutcome(payment_id=PAYMENT_ID, command_id=told.message.message_id,
                                             issued_at=saga.now, payer_account=payer, outcome="FAILED",
                                             reason_code="INSUFFICIENT_FUNDS")
    assert saga.status == "FAILED"


def test_unknown_account_fails_the_payment_at_stage_funds() -> None:
    saga = stages.reserving_funds()
    saga.handle(reservation_reply(saga.last_command(ReserveFunds), "ACCOUNT_UNKNOWN"))
    assert saga.emitted(FundsReservationFailed)[0].reason_code == "ACCOUNT_UNKNOWN"
    assert saga.emitted(PaymentFailed)[0].stage == "FUNDS"


def test_partner_acceptance_commits_funds() -> None:
    saga = stages.submitted()
    out = saga.handle(submission_reply(saga.last_command(SubmitToPartner)))
    assert saga.types(out) == ["PartnerAccepted", "CommitFunds"]
    assert out[1].key == "acc-payer-1"
    assert saga.status == "COMMITTING"


def test_commit_settles_the_payment() -> None:
    saga = stages.committing()
    out = saga.handle(commit_reply(saga.last_command(CommitFunds)))
    assert saga.types(out) == ["FundsCommitted", "PaymentSettled"]
    settled = saga.emitted(PaymentSettled)[0]
    assert (settled.partner_reference, settled.amount.amount_minor) == ("ref-1", 1250)
    assert saga.status == "SETTLED"
    # No step timer: only the end of its retention, when the refund window (90 days) closes.
    assert saga.logic.next_deadline(saga.state) == saga.now + timedelta(days=90)  # type: ignore[arg-type]


def test_partner_decline_releases_funds_then_fails_at_stage_partner() -> None:
    saga = stages.submitted()
    out = saga.handle(submission_reply(saga.last_command(SubmitToPartner), "DECLINED"))
    assert saga.types(out) == ["PartnerDeclined", "ReleaseFunds"]
    assert saga.status == "RELEASING"
    out = saga.handle(release_reply(saga.last_command(ReleaseFunds)))
    assert saga.types(out) == ["FundsReleased", "PaymentFailed", "RecordRiskOutcome"]
    failed = saga.emitted(PaymentFailed)[0]
    assert (failed.stage, failed.reason_code) == ("PARTNER", "INSUFFICIENT_LIMIT")


def test_partner_error_queries_partner_before_any_resubmission() -> None:
    saga = stages.submitted()
    out = saga.handle(submission_reply(saga.last_command(SubmitToPartner), "ERROR"))
    assert saga.types(out) == ["ParticipantCommandIssued", "QueryPartnerPayment"]
    assert len(saga.commands(SubmitToPartner)) == 1
    assert saga.status == "QUERYING_PARTNER"


def test_partner_timeout_queries_partner_before_any_resubmission() -> None:
    saga = stages.submitted()
    out = saga.expire()
    assert saga.types(out) == ["ParticipantCommandIssued", "QueryPartnerPayment"]
    assert len(saga.commands(SubmitToPartner)) == 1
    assert saga.last_command(QueryPartnerPayment).submission_id == submission_id(PAYMENT_ID)


def test_partner_query_accepted_commits_funds() -> None:
    saga = stages.submitted()
    saga.expire()
    out = saga.handle(query_reply(saga.last_command(QueryPartnerPayment), "ACCEPTED"))
    assert saga.types(out) == ["PartnerAccepted", "CommitFunds"]


def test_partner_query_declined_releases_funds() -> None:
    saga = stages.submitted()
    saga.expire()
    out = saga.handle(query_reply(saga.last_command(QueryPartnerPayment), "DECLINED"))
    assert saga.types(out) == ["PartnerDeclined", "ReleaseFunds"]


def test_partner_query_not_found_resubmits_with_same_submission_id_and_next_attempt() -> None:
    saga = stages.submitted()
    saga.expire()
    out = saga.handle(query_reply(saga.last_command(QueryPartnerPayment), "NOT_FOUND"))
    assert saga.types(out) == ["SubmittedToPartner", "SubmitToPartner"]
    first, second = saga.commands(SubmitToPartner)
    assert first.submission_id == second.submission_id
    assert first.command_id != second.command_id
    assert saga.emitted(SubmittedToPartner)[-1].attempt == 2


def test_partner_not_found_after_max_submissions_compensates() -> None:
    saga = stages.submitted()
    for _ in range(3):
        saga.expire()
        saga.handle(query_reply(saga.last_command(QueryPartnerPayment), "NOT_FOUND"))
    assert len(saga.commands(SubmitToPartner)) == 3
    assert saga.types()[-1] == "ReleaseFunds"
    saga.handle(release_reply(saga.last_command(ReleaseFunds)))
    failed = saga.emitted(PaymentFailed)[0]
    assert (failed.stage, failed.reason_code) == ("PARTNER", "PARTNER_NOT_FOUND")


def test_partner_pending_queries_again_after_backoff() -> None:
    saga = stages.submitted()
    saga.expire()
    first = saga.last_command(QueryPartnerPayment)
    assert saga.handle(query_reply(first, "PENDING")) == ()
    out = saga.expire()
    assert saga.types(out) == ["ParticipantCommandIssued", "QueryPartnerPayment"]
    assert saga.last_command(QueryPartnerPayment).command_id != first.command_id


def test_partner_unresolved_after_max_queries_releases_funds_then_fails() -> None:
    saga = stages.submitted()
    saga.expire()
    for _ in range(8):
        saga.handle(query_reply(saga.last_command(QueryPartnerPayment), "PENDING"))
        saga.expire()
    assert len(saga.commands(QueryPartnerPayment)) == 8
    assert saga.status == "RELEASING"
    saga.handle(release_reply(saga.last_command(ReleaseFunds)))
    assert saga.emitted(PaymentFailed)[0].reason_code == "PARTNER_UNRESOLVED"
    assert len(saga.emitted(FundsReleased)) == 1


def test_late_partner_acceptance_after_a_query_is_still_honoured() -> None:
    saga = stages.submitted()
    submit = saga.last_command(SubmitToPartner)
    saga.expire()
    out = saga.handle(submission_reply(submit, "ACCEPTED"))
    assert saga.types(out) == ["PartnerAccepted", "CommitFunds"]


def test_risk_timeout_retries_with_a_new_command_then_fails() -> None:
    saga = stages.awaiting_risk()
    assert saga.types(saga.expire()) == ["ParticipantCommandIssued", "AssessRisk"]
    assert saga.types(saga.expire()) == ["ParticipantCommandIssued", "AssessRisk"]
    out = saga.expire()
    assert saga.types(out) == ["PaymentFailed"]
    failed = saga.emitted(PaymentFailed)[0]
    assert (failed.stage, failed.reason_code) == ("TIMEOUT", "RISK_TIMEOUT")
    assert len({c.command_id for c in saga.commands(AssessRisk)}) == 3
    assert [c.attempt for c in saga.commands(AssessRisk)] == [1, 2, 3]  # only the first is added to histories


def test_late_reply_to_an_earlier_risk_attempt_is_accepted() -> None:
    saga = stages.awaiting_risk()
    first = saga.last_command(AssessRisk)
    saga.expire()
    out = saga.handle(risk_reply(first))
    assert saga.types(out) == ["RiskAssessed", "ReserveFunds"]


def test_timer_does_not_fire_before_its_deadline() -> None:
    saga = stages.awaiting_risk()
    assert saga.advance(timedelta(seconds=29)) == ()
    assert saga.types(saga.advance(timedelta(seconds=1))) == ["ParticipantCommandIssued", "AssessRisk"]


def test_funds_reservation_timeout_fails_and_releases_any_late_hold() -> None:
    saga = stages.reserving_funds()
    saga.expire()
    saga.expire()
    out = saga.expire()
    assert saga.types(out) == ["FundsReservationFailed", "ParticipantCommandIssued", "ReleaseFunds"]
    out = saga.handle(release_reply(saga.last_command(ReleaseFunds), "UNKNOWN_HOLD"))
    assert saga.types(out) == ["PaymentFailed", "RecordRiskOutcome"]  # nothing was reserved, as far as it knows
    assert saga.emitted(PaymentFailed)[0].reason_code == "FUNDS_TIMEOUT"


def test_commit_timeout_retries_then_raises_an_alert_that_a_late_commit_still_settles() -> None:
    saga = stages.committing()
    first = saga.last_command(CommitFunds)
    for _ in range(9):
        assert saga.types(saga.expire()) == ["ParticipantCommandIssued", "CommitFunds"]
    assert saga.types(saga.expire()) == ["CompensationFailed"]
    assert saga.status == "COMMIT_FAILED"
    assert saga.logic.next_deadline(saga.state) is None  # type: ignore[arg-type]
    out = saga.handle(commit_reply(first))
    assert saga.types(out) == ["FundsCommitted", "PaymentSettled"]


def test_release_that_never_answers_is_retried_then_compensation_failed_then_late_release_fails_payment() -> None:
    saga = stages.submitted()
    saga.handle(submission_reply(saga.last_command(SubmitToPartner), "DECLINED"))
    for _ in range(9):
        assert saga.types(saga.expire()) == ["ParticipantCommandIssued", "ReleaseFunds"]
    assert saga.types(saga.expire()) == ["CompensationFailed"]
    alert = saga.emitted(CompensationFailed)[0]
    assert (alert.step, alert.attempts) == ("FUNDS_RELEASE", 10)
    assert saga.status == "COMPENSATION_FAILED"
    out = saga.handle(release_reply(saga.commands(ReleaseFunds)[3]))
    assert saga.types(out) == ["FundsReleased", "PaymentFailed", "RecordRiskOutcome"]
    assert saga.status == "FAILED"


def test_cancel_while_awaiting_risk_cancels_at_once() -> None:
    saga = stages.awaiting_risk()
    out = saga.handle(cancel())
    assert saga.types(out) == ["PaymentCancelled"]
    assert saga.status == "CANCELLED"
    assert saga.handle(risk_reply(saga.last_command(AssessRisk))) == ()


def test_cancel_while_reserving_releases_funds_then_cancels() -> None:
    saga = stages.reserving_funds()
    out = saga.handle(cancel())
    assert saga.types(out) == ["ParticipantCommandIssued", "ReleaseFunds"]
    assert saga.handle(reservation_reply(saga.last_command(ReserveFunds))) == ()  # the release covers it
    out = saga.handle(release_reply(saga.last_command(ReleaseFunds)))
    assert saga.types(out) == ["PaymentCancelled"]
    assert saga.emitted(PaymentCancelled)[0].reason == "customer asked"


def test_cancel_after_submission_is_rejected_without_changing_the_payment() -> None:
    saga = stages.submitted()
    before = saga.state
    out = saga.handle(cancel())
    assert saga.types(out) == ["PaymentRejected"]
    rejected = saga.emitted(PaymentRejected)[0]
    assert (rejected.reason_code, rejected.idempotency_key) == ("INVALID_STATE", "cancel-1")
    assert saga.state is not None and before is not None
    assert saga.state.model_copy(update={"seq": before.seq}) == before


def test_repeated_cancel_of_a_cancelled_payment_changes_nothing() -> None:
    saga = stages.awaiting_risk()
    saga.handle(cancel())
    assert saga.handle(cancel(n=2)) == ()


def test_cancel_of_unknown_payment_is_rejected_and_initiate_still_works_afterwards() -> None:
    saga = Saga()
    saga.handle(cancel())
    assert saga.emitted(PaymentRejected)[0].reason_code == "UNKNOWN_PAYMENT"
    out = saga.handle(initiate())
    assert saga.types(out) == ["PaymentInitiated", "AssessRisk"]
    assert saga.emitted(PaymentInitiated)[0].seq == 2

