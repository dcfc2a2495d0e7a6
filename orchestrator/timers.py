"""Durable timers. The only timer of a payment is derived from what it awaits: the reply window of
the awaited step's current attempt (see `orchestrator.policy`). Nothing else is stored, so a state
folded from the payment's events has the same timer as the state that emitted them.
"""

from __future__ import annotations

from datetime import datetime

from orchestrator.ids import derived_id
from orchestrator.policy import POLICIES, window
from orchestrator.state import ALERT, TERMINAL, SagaState
from orchestrator.steps import Draft, issue, start_release
from payments.contracts.events import CompensationFailed, FundsReservationFailed, PaymentFailed


def next_deadline(state: SagaState, time_scale: float = 1.0) -> datetime | None:
    awaiting = state.awaiting
    if awaiting is None or state.status in TERMINAL or state.status in ALERT:
        return None  # an alert state waits for a late reply or an operator, not for a clock
    return awaiting.since + window(state.payment_id, awaiting.step, awaiting.attempt, time_scale)


def timer_id(state: SagaState) -> str:
    """The causation id of what a timer firing emits (a timer has no incoming message)."""
    awaiting = state.awaiting
    assert awaiting is not None
    return derived_id(state.payment_id, "timer", awaiting.step, str(state.submit_attempt), str(awaiting.attempt),
                      awaiting.since.isoformat())


def fire(draft: Draft) -> None:
    """The awaited reply did not come in its window: retry, query, compensate or raise an alert."""
    state = draft.current
    awaiting = state.awaiting
    assert awaiting is not None
    step, attempt = awaiting.step, awaiting.attempt
    exhausted = attempt >= POLICIES[step].attempts_max
    detail = f"no {step} reply after {attempt} attempt(s)"
    match step:
        case "PARTNER_SUBMIT":  # outcome unknown: query, never resubmit blindly
            issue(draft, "PARTNER_QUERY", 1, "TIMEOUT", detail)
        case _ if not exhausted:
            issue(draft, step, attempt + 1, "TIMEOUT", detail)
        case "RISK":
            draft.event(PaymentFailed, stage="TIMEOUT", reason_code="RISK_TIMEOUT", detail=detail)
        case "FUNDS_RESERVE":
            draft.event(FundsReservationFailed, reason_code="TIMEOUT", detail=detail)
            start_release(draft, "FUNDS_TIMEOUT", detail)
        case "PARTNER_QUERY":
            start_release(draft, "PARTNER_UNRESOLVED", detail)
        case "FUNDS_COMMIT" | "FUNDS_RELEASE":
            draft.event(CompensationFailed, step=step, attempts=attempt, detail=detail)
