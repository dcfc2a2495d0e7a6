"""Idempotency of commands and replies, refunds, purity, the fold and the snapshot format."""

from __future__ import annotations

from datetime import timedelta

from orchestrator.config import SagaConfig
from orchestrator.policy import BACKOFF_CAP_MS, backoff_ms, window, window_max
from orchestrator.saga import OrchestratorLogic
from orchestrator.state import fold
from payments.contracts.events import PaymentRefunded, PaymentRejected, RefundRejected
from payments.contracts.intake import DuplicateCommand
from payments.contracts.participants import AssessRisk, CommitFunds, ReserveFunds, SubmitToPartner
from tests.unit.saga import stages
from tests.unit.saga.harness import (
    PAYMENT_ID,
    START,
    Saga,
    commit_reply,
    incoming,
    initiate,
    refund,
    reservation_reply,
    risk_reply,
    submission_reply,
    uid,
)


def test_duplicate_initiate_with_same_key_and_parameters_creates_nothing() -> None:
    saga = stages.submitted()
    before = saga.state
    assert saga.handle(initiate()) == ()
    assert saga.state == before


def test_duplicate_initiate_with_other_amount_is_rejected_without_changing_the_payment() -> None:
    saga = stages.awaiting_risk()
    out = saga.handle(initiate(amount_minor=999))
    assert saga.types(out) == ["PaymentRejected"]
    assert saga.emitted(PaymentRejected)[0].reason_code == "IDEMPOTENCY_KEY_REUSED"
    assert saga.status == "AWAITING_RISK"


def test_same_payment_id_with_other_idempotency_key_is_rejected() -> None:
    saga = stages.awaiting_risk()
    saga.handle(initiate(idempotency_key="another-key"))
    rejected = saga.emitted(PaymentRejected)[0]
    assert (rejected.reason_code, rejected.idempotency_key) == ("IDEMPOTENCY_KEY_REUSED", "another-key")
    assert saga.status == "AWAITING_RISK"


def test_duplicate_reply_is_ignored() -> None:
    saga = stages.reserving_funds()
    assert saga.handle(risk_reply(saga.last_command(AssessRisk))) == ()


def test_reply_to_a_command_never_issued_is_ignored() -> None:
    saga = stages.reserving_funds()
    forged = saga.last_command(ReserveFunds).model_copy(update={"command_id": "not-ours"})
    assert saga.handle(reservation_reply(forged)) == ()


def test_out_of_order_reply_for_a_later_step_is_ignored() -> None:
    saga = stages.awaiting_risk()
    fake_commit = CommitFunds(payment_id=saga.payment_id, command_id="x", issued_at=START, account="a",
                              hold_id="h", payee_account="b")
    assert saga.handle(commit_reply(fake_commit)) == ()


def test_duplicate_partner_acceptance_commits_once() -> None:
    saga = stages.submitted()
    reply = submission_reply(saga.last_command(SubmitToPartner))
    saga.handle(reply)
    assert saga.handle(reply) == ()
    assert len(saga.commands(CommitFunds)) == 1


def test_full_refund_after_settlement_emits_refunded_with_running_total() -> None:
    saga = stages.settled()
    out = saga.handle(refund(1250))
    assert saga.types(out) == ["PaymentRefunded"]
    refunded = saga.emitted(PaymentRefunded)[0]
    assert (refunded.amount.amount_minor, refunded.refunded_total.amount_minor) == (1250, 1250)
    assert saga.status == "SETTLED"


def test_partial_refunds_accumulate_and_may_not_exceed_settled_amount() -> None:
    saga = stages.settled()
    saga.handle(refund(500, n=1))
    saga.handle(refund(700, n=2))
    saga.handle(refund(100, n=3))
    assert [r.refunded_total.amount_minor for r in saga.emitted(PaymentRefunded)] == [500, 1200]
    assert [r.reason_code for r in saga.emitted(RefundRejected)] == ["REFUND_EXCEEDS_SETTLED"]


def test_duplicate_refund_id_is_a_no_op() -> None:
    saga = stages.settled()
    saga.handle(refund(500))
    assert saga.handle(refund(500)) == ()


def test_refund_in_another_currency_is_rejected() -> None:
    saga = stages.settled()
    saga.handle(refund(500, currency="USD"))
    assert saga.emitted(RefundRejected)[0].reason_code == "CURRENCY_MISMATCH"


def test_refund_before_settlement_is_rejected_without_changing_the_payment() -> None:
    saga = stages.submitted()
    saga.handle(refund(500))
    assert saga.emitted(RefundRejected)[0].reason_code == "INVALID_STATE"
    assert saga.status == "SUBMITTED"


def test_refund_of_unknown_payment_is_rejected() -> None:
    saga = Saga()
    saga.handle(refund(500))
    assert saga.emitted(RefundRejected)[0].reason_code == "UNKNOWN_PAYMENT"


def test_decide_is_pure_same_input_same_output() -> None:
    logic = OrchestratorLogic()
    message = incoming(initiate())
    assert logic.decide(None, message, START) == logic.decide(None, message, START)


def test_replaying_events_rebuilds_the_state_including_its_timer() -> None:
    saga = stages.submitted()
    saga.expire()
    replayed = fold(saga.events)
    assert replayed == saga.state
    assert replayed is not None
    assert saga.logic.next_deadline(replayed) == saga.logic.next_deadline(saga.state)  # type: ignore[arg-type]


def test_state_round_trips_through_the_changelog_encoding() -> None:
    saga = stages.settled()
    saga.handle(refund(100))
    assert saga.state is not None
    logic = OrchestratorLogic()
    assert logic.decode_state(logic.encode_state(saga.state)) == saga.state


def test_fold_of_no_events_is_none() -> None:
    assert fold([]) is None


def test_backoff_is_deterministic_bounded_and_jittered() -> None:
    assert backoff_ms("p", "RISK", 1) == 0
    values = {backoff_ms(f"p{i}", "RISK", 4) for i in range(50)}
    assert all(0 <= v <= 8_000 for v in values)
    assert len(values) > 10
    assert backoff_ms("p", "RISK", 4) == backoff_ms("p", "RISK", 4)
    assert backoff_ms("p", "RISK", 40) <= BACKOFF_CAP_MS
    assert window("p", "FUNDS_RELEASE", 9) <= window_max("FUNDS_RELEASE", 9)
    assert window("p", "PARTNER_SUBMIT", 1) == timedelta(seconds=60)


def test_every_event_is_caused_by_its_incoming_message() -> None:
    saga = stages.reserving_funds()
    reply = reservation_reply(saga.last_command(ReserveFunds))
    saga.handle(reply)
    assert {e.causation_id for e in saga.events[-2:]} == {reply.reply_id}


def test_timer_events_have_a_deterministic_derived_causation_id() -> None:
    one, two = stages.awaiting_risk(), stages.awaiting_risk()
    one.expire()
    two.expire()
    assert one.events[-1].causation_id == two.events[-1].causation_id
    assert one.events[-1].causation_id != one.events[0].causation_id


# -- the intake's duplicate notices ----------------------------------------------------------------


def notice(verdict: str, command_type: str = "InitiatePayment", payment_id: str = PAYMENT_ID,
           original: str = PAYMENT_ID, refund_id: str | None = None,
           original_refund: str | None = None) -> DuplicateCommand:
    return DuplicateCommand(payment_id=payment_id, command_id=uid("dup", payment_id, verdict),
                            idempotency_key=f"idem-{original}", source="billing",
                            command_type=command_type, verdict=verdict,  # type: ignore[arg-type]
                            original_payment_id=original, original_command_id=uid("initiate", original),
                            refund_id=refund_id, original_refund_id=original_refund, first_seen_at=START)


def test_a_retry_under_a_new_payment_id_is_rejected_as_a_duplicate_naming_the_original() -> None:
    retry_id = uid("retry-payment")
    saga = Saga(payment_id=retry_id)
    out = saga.handle(notice("SAME_REQUEST", payment_id=retry_id))
    assert saga.types(out) == ["PaymentRejected"]
    rejected = saga.emitted(PaymentRejected)[0]
    assert (rejected.reason_code, rejected.original_payment_id) == ("DUPLICATE_REQUEST", PAYMENT_ID)
    assert saga.status == "REJECTED" and saga.replayed() == saga.state
    assert saga.handle(initiate(payment_id=retry_id)) == ()  # the retried id stays inert


def test_the_same_command_again_changes_nothing_and_a_reused_key_is_rejected() -> None:
    saga = stages.awaiting_risk()
    before = saga.state
    assert saga.handle(notice("SAME_REQUEST")) == () and saga.state == before
    other_id = uid("other-payment")
    other = Saga(payment_id=other_id)
    other.handle(notice("KEY_REUSED", payment_id=other_id))
    assert [(e.reason_code, e.original_payment_id) for e in other.emitted(PaymentRejected)] == [
        ("IDEMPOTENCY_KEY_REUSED", None)]


def test_a_refund_retry_under_a_new_refund_id_is_rejected_naming_the_original_refund() -> None:
    saga = stages.settled()
    first = refund(400)
    saga.handle(first)
    retry_refund_id = uid("retry-refund")
    out = saga.handle(notice("SAME_REQUEST", "RefundPayment", refund_id=retry_refund_id,
                             original_refund=first.refund_id))
    assert saga.types(out) == ["RefundRejected"]
    rejected = saga.emitted(RefundRejected)[-1]
    assert (rejected.refund_id, rejected.reason_code, rejected.original_refund_id) == (
        retry_refund_id, "DUPLICATE_REQUEST", first.refund_id)
    assert saga.handle(notice("SAME_REQUEST", "RefundPayment", refund_id=first.refund_id,
                              original_refund=first.refund_id)) == ()
    assert len(saga.emitted(PaymentRefunded)) == 1


def test_an_unknown_partner_is_rejected_and_the_partner_list_is_configuration() -> None:
    saga = Saga()
    saga.handle(initiate(partner="nobank"))
    assert [e.reason_code for e in saga.emitted(PaymentRejected)] == ["UNKNOWN_PARTNER"]
    configured = Saga(logic=OrchestratorLogic(SagaConfig(partners=frozenset({"nobank"}))))
    configured.handle(initiate(partner="nobank"))
    assert configured.status == "AWAITING_RISK"
