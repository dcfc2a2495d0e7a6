"""Retention (docs/saga.md): a finished payment is remembered `retention` after its last event, a settled one
at least until its refund window closes; then its timer deletes it. What later commands get is tested here."""

from __future__ import annotations

from datetime import timedelta

from orchestrator.config import SagaConfig
from orchestrator.saga import OrchestratorLogic
from payments.contracts.events import PaymentRefunded, PaymentRejected, RefundRejected
from tests.unit.saga import stages
from tests.unit.saga.harness import START, Saga, cancel, initiate, refund

DAY = timedelta(days=1)
SKEW = timedelta(minutes=5)
CONFIG = SagaConfig(refund_window=30 * DAY, retention=7 * DAY, clock_skew=SKEW)


def _settled() -> Saga:
    saga = stages.settled()
    saga.logic = OrchestratorLogic(CONFIG)
    return saga


def test_a_refund_inside_the_window_is_made_and_after_it_is_rejected_with_refund_window_closed() -> None:
    saga = _settled()
    settled_at = saga.now
    saga.advance(29 * DAY)
    assert saga.types(saga.handle(refund(100, n=1))) == ["PaymentRefunded"]
    saga.now = settled_at + 30 * DAY + timedelta(seconds=1)
    assert saga.types(saga.handle(refund(100, n=2))) == ["RefundRejected"]
    assert saga.emitted(RefundRejected)[0].reason_code == "REFUND_WINDOW_CLOSED"
    assert [r.refund_id for r in saga.emitted(PaymentRefunded)] == [refund(100, n=1).refund_id]


def test_a_settled_payment_is_deleted_when_its_refund_window_closes_and_not_before() -> None:
    saga = _settled()
    settled_at = saga.now
    assert saga.logic.next_deadline(saga.state) == settled_at + 30 * DAY  # type: ignore[arg-type]
    assert saga.advance(30 * DAY - timedelta(seconds=1)) == () and saga.state is not None
    out = saga.advance(timedelta(seconds=1))
    assert out == () and saga.state is None  # a tombstone, and no event: nothing happened to the payment


def test_a_late_refund_keeps_the_payment_retention_long_after_it() -> None:
    saga = _settled()
    settled_at = saga.now
    saga.advance(28 * DAY)
    saga.handle(refund(100))
    assert saga.logic.next_deadline(saga.state) == settled_at + 35 * DAY + SKEW  # type: ignore[arg-type]


def test_a_failed_payment_is_deleted_after_the_retention_and_an_old_initiate_then_cannot_start_it_again() -> None:
    saga = Saga(logic=OrchestratorLogic(CONFIG))
    saga.handle(initiate())
    saga.handle(cancel())
    assert saga.status == "CANCELLED"
    cancelled_at = saga.now
    saga.advance(7 * DAY + SKEW - timedelta(seconds=1))
    assert saga.state is not None
    saga.advance(timedelta(seconds=1))
    assert saga.state is None
    # The upstream retries its original command (same requested_at) after the payment was forgotten.
    saga.events.clear()
    out = saga.handle(initiate())
    assert saga.types(out) == ["PaymentRejected"]
    assert saga.emitted(PaymentRejected)[0].reason_code == "REQUEST_EXPIRED"
    assert saga.status == "REJECTED"
    assert cancelled_at - START < CONFIG.retention  # the command was fresh when first sent


def test_a_command_for_a_forgotten_payment_is_unknown() -> None:
    saga = _settled()
    saga.advance(30 * DAY)
    assert saga.state is None
    saga.events.clear()
    saga.handle(cancel(n=9))
    assert saga.emitted(PaymentRejected)[0].reason_code == "UNKNOWN_PAYMENT"


def test_an_initiate_requested_within_the_retention_still_starts_a_payment() -> None:
    saga = Saga(logic=OrchestratorLogic(CONFIG), now=START + 7 * DAY - timedelta(seconds=1))
    assert saga.types(saga.handle(initiate())) == ["PaymentInitiated", "AssessRisk"]


def test_an_initiate_from_a_clock_too_far_ahead_is_rejected_so_its_retries_expire_after_it_is_forgotten() -> None:
    saga = Saga(logic=OrchestratorLogic(CONFIG), now=START - SKEW)
    assert saga.types(saga.handle(initiate())) == ["PaymentInitiated", "AssessRisk"]  # exactly the skew: fine
    ahead = Saga(logic=OrchestratorLogic(CONFIG), now=START - SKEW - timedelta(milliseconds=1))
    ahead.handle(initiate())
    assert ahead.emitted(PaymentRejected)[0].reason_code == "REQUESTED_IN_FUTURE"


def test_live_and_alert_states_and_old_snapshots_are_never_deleted_by_retention() -> None:
    saga = stages.committing()
    state = saga.state
    assert state is not None
    logic = OrchestratorLogic(CONFIG)
    assert logic.next_deadline(state) == saga.logic.next_deadline(state)  # its step timer, nothing else
    old = _settled().state
    assert old is not None
    assert logic.next_deadline(old.model_copy(update={"updated_at": None})) is None
