"""Every saga path on real Kafka, with every service as its own process.

Three service groups, each on its own topic prefix:
- the e2e package's shared pipeline (every service and projection): happy path, risk decline,
  insufficient funds, partner decline, partner timeout then success, refunds, duplicates, reused
  idempotency keys, a late cancel;
- no partner gateway: the partner never answers, so timers fire and funds are released;
- orchestrator alone: a cancel while the payment awaits its risk check.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from payments.contracts.messages import (
    CancelPayment,
    FundsReleased,
    FundsReserved,
    InitiatePayment,
    Message,
    PartnerAccepted,
    PaymentCancelled,
    PaymentFailed,
    PaymentInitiated,
    PaymentRefunded,
    PaymentRejected,
    PaymentSettled,
    RefundPayment,
    RefundRejected,
    SettlementEvent,
    SubmitToPartner,
)
from payments.money import Money
from tests.e2e.pipeline import Pipeline, start_pipeline
from tests.support import COMMAND_PATH, make_initiate, wait_for

pytestmark = pytest.mark.e2e

TERMINAL = (PaymentSettled, PaymentFailed, PaymentCancelled)


@pytest.fixture(scope="module")
def everything(pipeline: Pipeline) -> Pipeline:
    """Every service and projection of the registry (the e2e package's shared pipeline)."""
    return pipeline


def _types(events: list[Message]) -> list[str]:
    return [type(e).__name__ for e in events]


def _settle(pipeline: Pipeline, **overrides: object) -> InitiatePayment:
    command = make_initiate(payer_account="acc-alice", payee_account="acc-bob", **overrides)
    pipeline.send(command)
    pipeline.wait_events(command.payment_id, TERMINAL)
    return command


def test_happy_path_settles_once_and_publishes_one_settlement(everything: Pipeline) -> None:
    command = _settle(everything)
    events = everything.events(command.payment_id)
    assert isinstance(events[-1], PaymentSettled)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))  # type: ignore[attr-defined]
    for step in ("PaymentInitiated", "RiskAssessed", "FundsReserved", "SubmittedToPartner", "PartnerAccepted",
                 "FundsCommitted", "PaymentSettled"):
        assert _types(events).count(step) == 1, _types(events)
    wait_for(lambda: [s for s in everything.topic("payments.settlements") if s.payment_id == command.payment_id],
             30, "the settlement event")
    settlements = [s for s in everything.topic("payments.settlements") if s.payment_id == command.payment_id]
    assert len(settlements) == 1
    assert isinstance(settlements[0], SettlementEvent)
    assert settlements[0].amount == command.amount and settlements[0].kind == "SETTLEMENT"


def test_risk_decline_fails_the_payment_before_funds_are_touched(everything: Pipeline) -> None:
    command = make_initiate(payer_account="acc-blocked", payee_account="acc-bob")
    everything.send(command)
    events = everything.wait_events(command.payment_id, TERMINAL)
    assert isinstance(events[-1], PaymentFailed) and events[-1].stage == "RISK"
    assert not [e for e in events if isinstance(e, FundsReserved)]


def test_insufficient_funds_fails_the_payment(everything: Pipeline) -> None:
    command = make_initiate(payer_account="acc-poor", payee_account="acc-bob", amount=Money.parse("5.00", "EUR"))
    everything.send(command)
    events = everything.wait_events(command.payment_id, TERMINAL)
    assert "FundsReservationFailed" in _types(events)
    assert isinstance(events[-1], PaymentFailed) and events[-1].stage == "FUNDS"


def test_partner_decline_releases_the_funds_and_fails(everything: Pipeline) -> None:
    command = make_initiate(payer_account="acc-alice", payee_account="acc-sim-decline-1")
    everything.send(command)
    events = everything.wait_events(command.payment_id, TERMINAL)
    types = _types(events)
    assert types.index("PartnerDeclined") < types.index("FundsReleased") < types.index("PaymentFailed")
    assert isinstance(events[-1], PaymentFailed) and events[-1].stage == "PARTNER"
    assert not [e for e in events if isinstance(e, PartnerAccepted)]


def test_partner_timeout_is_resolved_by_a_query_and_never_submitted_twice(everything: Pipeline) -> None:
    command = make_initiate(payer_account="acc-alice", payee_account="acc-sim-timeout-1")
    everything.send(command)
    events = everything.wait_events(command.payment_id, TERMINAL)
    assert isinstance(events[-1], PaymentSettled), _types(events)
    submissions = [c for c in everything.topic("partner.commands")
                   if isinstance(c, SubmitToPartner) and c.payment_id == command.payment_id]
    assert len(submissions) == 1
    assert "QueryPartnerPayment" in {type(c).__name__ for c in everything.topic("partner.commands")
                                     if c.payment_id == command.payment_id}


def test_refunds_are_partial_or_full_but_never_more_than_settled(everything: Pipeline) -> None:
    command = _settle(everything, amount=Money.parse("10.00", "EUR"))

    def refund(amount: str, refund_id: str) -> RefundPayment:
        return RefundPayment(command_id=str(uuid.uuid4()), idempotency_key=f"refund-{refund_id}",
                             payment_id=command.payment_id, refund_id=refund_id,
                             amount=Money.parse(amount, "EUR"), reason="customer request")

    r1, r2, r3 = (str(uuid.uuid4()) for _ in range(3))
    everything.send(refund("4.00", r1), refund("4.00", r1), refund("7.00", r2), refund("6.00", r3))
    events = everything.wait_events(command.payment_id, RefundRejected)
    wait_for(lambda: len([e for e in everything.events(command.payment_id) if isinstance(e, PaymentRefunded)]) == 2,
             30, "two refunds")
    events = everything.events(command.payment_id)
    refunds = [e for e in events if isinstance(e, PaymentRefunded)]
    assert [(r.refund_id, r.amount.amount_minor, r.refunded_total.amount_minor) for r in refunds] == [
        (r1, 400, 400), (r3, 600, 1000)]  # r1 once only; r2 would exceed the settled 10.00
    rejected = [e for e in events if isinstance(e, RefundRejected)]
    assert [(r.refund_id, r.reason_code) for r in rejected] == [(r2, "REFUND_EXCEEDS_SETTLED")]
    wait_for(lambda: len([s for s in everything.topic("payments.settlements")
                          if s.payment_id == command.payment_id]) == 3, 30, "settlement + two refund events")


def test_duplicate_initiate_creates_nothing_new(everything: Pipeline) -> None:
    command = _settle(everything)
    everything.send(command, command.model_copy(update={"command_id": str(uuid.uuid4())}))
    marker = make_initiate(payer_account="acc-alice", payee_account="acc-bob", payment_id=command.payment_id)
    # The same payment id with other parameters: rejected, and the settled payment is untouched.
    everything.send(marker.model_copy(update={"idempotency_key": command.idempotency_key,
                                               "amount": Money.parse("99.00", "EUR")}))
    events = everything.wait_events(command.payment_id, PaymentRejected)
    assert _types(events).count("PaymentInitiated") == 1
    assert _types(events).count("PaymentSettled") == 1
    rejected = [e for e in events if isinstance(e, PaymentRejected)]
    assert [r.reason_code for r in rejected] == ["IDEMPOTENCY_KEY_REUSED"]
    assert isinstance(next(e for e in reversed(events) if isinstance(e, TERMINAL)), PaymentSettled)


def test_cancel_after_submission_is_rejected_and_the_payment_settles(everything: Pipeline) -> None:
    command = _settle(everything)
    everything.send(CancelPayment(command_id=str(uuid.uuid4()), idempotency_key="cancel-late",
                                  payment_id=command.payment_id, reason="too late"))
    events = everything.wait_events(command.payment_id, PaymentRejected)
    assert [e.reason_code for e in events if isinstance(e, PaymentRejected)] == ["INVALID_STATE"]
    assert not [e for e in events if isinstance(e, PaymentCancelled)]


@pytest.fixture(scope="module")
def without_partner(kafka_bootstrap: str, postgres_server_url: str) -> Iterator[Pipeline]:
    yield from start_pipeline(kafka_bootstrap, postgres_server_url, [[n] for n in [*COMMAND_PATH, "risk", "funds"]])


def test_partner_that_never_answers_times_out_and_funds_are_released(without_partner: Pipeline) -> None:
    command = make_initiate(payer_account="acc-alice", payee_account="acc-bob")
    without_partner.send(command)
    events = without_partner.wait_events(command.payment_id, TERMINAL, timeout_s=120)
    types = _types(events)
    assert isinstance(events[-1], PaymentFailed), types
    assert types.count("FundsReserved") == 1 and types.count("FundsReleased") == 1
    assert "FundsCommitted" not in types
    reserved = next(e for e in events if isinstance(e, FundsReserved))
    released = next(e for e in events if isinstance(e, FundsReleased))
    assert (reserved.hold_id, reserved.amount) == (released.hold_id, released.amount)


@pytest.fixture(scope="module")
def orchestrator_only(kafka_bootstrap: str, postgres_server_url: str) -> Iterator[Pipeline]:
    # Real timers: with no risk service the risk step would time out and fail the payment within
    # seconds at the fast scale, racing the cancel this group exists to test.
    yield from start_pipeline(kafka_bootstrap, postgres_server_url, [[n] for n in COMMAND_PATH],
                              PAYMENTS_SAGA_TIME_SCALE="1")


def test_cancel_while_awaiting_risk_cancels_the_payment(orchestrator_only: Pipeline) -> None:
    command = make_initiate()
    orchestrator_only.send(command)
    orchestrator_only.wait_events(command.payment_id, PaymentInitiated)
    orchestrator_only.send(CancelPayment(command_id=str(uuid.uuid4()), idempotency_key="cancel-1",
                                         payment_id=command.payment_id, reason="changed my mind"))
    events = orchestrator_only.wait_events(command.payment_id, TERMINAL)
    assert isinstance(events[-1], PaymentCancelled)
    assert datetime.now(UTC) >= events[-1].occurred_at
