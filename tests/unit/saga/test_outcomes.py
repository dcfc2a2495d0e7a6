"""What the saga reports to the metrics (OrchestratorLogic.outcomes), and snapshots a newer version wrote."""

from __future__ import annotations

from datetime import timedelta

from orchestrator.state import SagaState
from payments.contracts.participants import AssessRisk, CommitFunds
from payments.runtime.logic import Decision, Outcome
from tests.unit.saga.harness import Saga, cancel, commit_reply, initiate, refund, risk_reply
from tests.unit.saga.stages import committing


def _outcomes(saga: Saga) -> tuple[Outcome, ...]:
    return saga.logic.outcomes(Decision(saga.state, saga.last))


def test_a_settlement_is_one_settled_outcome_with_the_time_since_initiation() -> None:
    saga = committing()
    assert _outcomes(saga) == ()  # a step on the way is no outcome
    saga.now += timedelta(seconds=7)
    saga.handle(commit_reply(saga.last_command(CommitFunds)))
    assert _outcomes(saga) == (Outcome("SETTLED", "", 7.0),)
    saga.handle(refund(500))  # a refund is not the payment's end again
    assert _outcomes(saga) == ()


def test_the_publish_time_the_intake_stamped_counts_to_the_outcome() -> None:
    from dataclasses import replace

    from payments.contracts.events import PaymentInitiated
    from tests.unit.saga.harness import START, incoming

    saga = Saga()
    command = initiate()
    stamped = incoming(command)
    stamped = replace(stamped, envelope=replace(stamped.envelope, published_at=START - timedelta(seconds=2)))
    saga._take(saga.logic.decide(None, stamped, saga.now))
    assert saga.emitted(PaymentInitiated)[0].published_at == START - timedelta(seconds=2)
    assert saga.replayed() == saga.state  # in the event, so the fold has it too
    saga.handle(risk_reply(saga.last_command(AssessRisk), decision="DECLINE"))
    [outcome] = _outcomes(saga)
    assert (outcome.duration_s, outcome.since_publish_s) == (0.0, 2.0)


def test_a_risk_decline_is_a_failed_outcome_with_its_reason_code() -> None:
    saga = Saga()
    saga.handle(initiate())
    saga.handle(risk_reply(saga.last_command(AssessRisk), decision="DECLINE"))
    [outcome] = _outcomes(saga)
    assert (outcome.outcome, outcome.reason_code, outcome.duration_s) == ("FAILED", "RISK_DECLINED", 0.0)
    assert outcome.since_publish_s is None  # no publish time known (a command from before the intake stamped it)


def test_a_rejected_initiation_counts_but_a_refused_later_command_does_not() -> None:
    saga = Saga()
    saga.handle(initiate(amount_minor=1250))
    saga.handle(initiate(amount_minor=999))  # same payment id and key, other terms: refused, the payment goes on
    assert saga.types() == ["PaymentRejected"]
    assert _outcomes(saga) == ()
    unknown = Saga(payment_id="unknown-payment")
    unknown.handle(cancel(payment_id="unknown-payment"))  # UNKNOWN_PAYMENT: nothing ended
    assert unknown.types() == ["PaymentRejected"] and _outcomes(unknown) == ()


def test_a_snapshot_with_a_field_this_version_does_not_know_is_read_not_refused() -> None:
    # A rolled-back (or not yet upgraded) instance reads what a newer one wrote (chaos seed 3).
    saga = committing()
    assert saga.state is not None
    newer = saga.state.model_dump_json()[:-1] + ', "field_of_a_later_version": {"x": 1}}'
    assert SagaState.model_validate_json(newer) == saga.state
