"""A payment's saga state and how it is folded from the payment's events.

`SagaState` is nothing but `fold(events)`: `decide` emits events and applies them with `apply`, so
replaying a payment's events from `payments.events` rebuilds exactly the state it holds, pending
timer included (the timer is derived from `awaiting`, see `orchestrator.timers`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final, Literal

from pydantic import BaseModel

from orchestrator.errors import OrchestratorError
from orchestrator.ids import derived_id
from orchestrator.policy import Step
from payments.contracts.base import SagaEvent
from payments.contracts.codes import FailureStage
from payments.contracts.events import (
    CompensationFailed,
    FundsCommitted,
    FundsReleased,
    FundsReservationFailed,
    FundsReserved,
    ParticipantCommandIssued,
    PartnerAccepted,
    PartnerDeclined,
    PaymentCancelled,
    PaymentFailed,
    PaymentInitiated,
    PaymentRefunded,
    PaymentRejected,
    PaymentSettled,
    RefundRejected,
    RiskAssessed,
    SubmittedToPartner,
)
from payments.money import Money
from payments.runtime.logic import STATE_CONFIG

Status = Literal[
    "UNKNOWN",  # only rejections of commands for a payment not initiated yet; still accepts InitiatePayment
    "AWAITING_RISK",
    "RESERVING_FUNDS",
    "SUBMITTED",
    "QUERYING_PARTNER",
    "COMMITTING",
    "RELEASING",
    "COMPENSATION_FAILED",  # alert: a release kept failing; a late release result still finishes it
    "COMMIT_FAILED",  # alert: the partner paid but the commit kept failing; a late commit result settles it
    "SETTLED",
    "FAILED",
    "CANCELLED",
    "REJECTED",
]
TERMINAL: Final[frozenset[str]] = frozenset({"SETTLED", "FAILED", "CANCELLED", "REJECTED"})
ALERT: Final[frozenset[str]] = frozenset({"COMPENSATION_FAILED", "COMMIT_FAILED"})

# Why a compensating release started (ParticipantCommandIssued.reason) -> how the payment then fails.
CANCEL_REQUESTED: Final = "CANCEL_REQUESTED"
FAILURE_STAGE_BY_REASON: Final[dict[str, FailureStage]] = {
    "FUNDS_TIMEOUT": "TIMEOUT",
    "PARTNER_UNRESOLVED": "TIMEOUT",
    "PARTNER_NOT_FOUND": "PARTNER",
}


class SagaStateError(OrchestratorError):
    """An event that cannot follow the state it is applied to: a bug or a corrupted stream."""


class _Frozen(BaseModel):
    model_config = STATE_CONFIG


class Terms(_Frozen):
    """What was asked for, fixed by PaymentInitiated."""

    payer_account: str
    payee_account: str
    amount: Money
    partner: str
    reference: str | None
    idempotency_key: str
    request_hash: str


class Await(_Frozen):
    """The one participant reply the saga waits for; `since` + the step's window is the timer."""

    step: Step
    attempt: int
    command_id: str
    since: datetime


class AfterRelease(_Frozen):
    """How the payment ends once the compensating release is done."""

    outcome: Literal["FAILED", "CANCELLED"]
    stage: FailureStage
    reason_code: str
    detail: str


class SagaState(_Frozen):
    """A payment's saga state: the fold of its events (snapshotted to the changelog as JSON)."""

    version: int = 1  # snapshot format; bump when a field changes meaning
    payment_id: str
    status: Status
    seq: int
    terms: Terms | None = None
    awaiting: Await | None = None
    submit_attempt: int = 0
    partner_reference: str | None = None
    funds_reserved: bool = False
    funds_released: bool = False
    funds_committed: bool = False
    after_release: AfterRelease | None = None
    settled: Money | None = None
    refunded: Money | None = None
    refund_ids: tuple[str, ...] = ()
    # When the last event happened, and the settlement: what retention and the refund window count from.
    # None only in snapshots written before they existed (such a state is never deleted).
    updated_at: datetime | None = None
    settled_at: datetime | None = None
    initiated_at: datetime | None = None  # PaymentInitiated's time (None in snapshots from before it existed)
    published_at: datetime | None = None  # when upstream published the command (PaymentInitiated v2), if known

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    def require_terms(self) -> Terms:
        if self.terms is None:
            raise SagaStateError(f"payment {self.payment_id} in {self.status} has no terms")
        return self.terms


# -- deterministic ids ---------------------------------------------------------------------------


def hold_id(payment_id: str) -> str:
    return derived_id(payment_id, "hold")


def submission_id(payment_id: str) -> str:
    """One submission id per payment: every resubmission reuses it, so the partner pays at most once."""
    return derived_id(payment_id, "submission")


def command_id(payment_id: str, step: Step, attempt: int, submit_attempt: int = 0) -> str:
    """The id of attempt `attempt` of `step`; partner queries are also scoped by the submission attempt."""
    scope = f"{step}.{submit_attempt}" if step == "PARTNER_QUERY" else step
    return derived_id(payment_id, "command", scope, str(attempt))


# -- the fold ------------------------------------------------------------------------------------


def _awaiting(state: SagaState, step: Step, attempt: int, at: datetime, submit_attempt: int = 0) -> Await:
    return Await(step=step, attempt=attempt, since=at,
                 command_id=command_id(state.payment_id, step, attempt, submit_attempt))


def _initiated(event: PaymentInitiated, prior: SagaState | None) -> SagaState:
    if prior is not None and prior.status != "UNKNOWN":
        raise SagaStateError(f"PaymentInitiated after {prior.status}")
    terms = Terms(payer_account=event.payer_account, payee_account=event.payee_account, amount=event.amount,
                  partner=event.partner, reference=event.reference, idempotency_key=event.idempotency_key,
                  request_hash=event.request_hash)
    state = SagaState(payment_id=event.payment_id, status="AWAITING_RISK", seq=event.seq, terms=terms,
                      initiated_at=event.occurred_at, published_at=event.published_at)
    return state.model_copy(update={"awaiting": _awaiting(state, "RISK", 1, event.occurred_at)})


def _first(event: SagaEvent) -> SagaState:
    """The state a payment's first event creates."""
    if isinstance(event, PaymentInitiated):
        return _initiated(event, None)
    if isinstance(event, PaymentRejected) and event.reason_code != "UNKNOWN_PAYMENT":
        return SagaState(payment_id=event.payment_id, status="REJECTED", seq=event.seq)
    if isinstance(event, PaymentRejected | RefundRejected):
        return SagaState(payment_id=event.payment_id, status="UNKNOWN", seq=event.seq)
    raise SagaStateError(f"{type(event).__name__} cannot start a payment's events")


def _issued(state: SagaState, event: ParticipantCommandIssued) -> dict[str, object]:
    step: Step = event.step  # type: ignore[assignment]  # the wire carries a string; checked below
    if step not in ("RISK", "FUNDS_RESERVE", "PARTNER_QUERY", "FUNDS_COMMIT", "FUNDS_RELEASE"):
        raise SagaStateError(f"unknown step {event.step}")
    update: dict[str, object] = {
        "awaiting": Await(step=step, attempt=event.attempt, command_id=event.command_id, since=event.occurred_at)}
    if step == "PARTNER_QUERY":
        update["status"] = "QUERYING_PARTNER"
    if step == "FUNDS_RELEASE":
        update["status"] = "RELEASING"
        if state.after_release is None:  # the compensation starts; a retry keeps the original outcome
            if event.reason == CANCEL_REQUESTED:
                update["after_release"] = AfterRelease(outcome="CANCELLED", stage="VALIDATION",
                                                       reason_code=CANCEL_REQUESTED, detail=event.detail)
            else:
                update["after_release"] = AfterRelease(
                    outcome="FAILED", stage=FAILURE_STAGE_BY_REASON.get(event.reason, "TIMEOUT"),
                    reason_code=event.reason, detail=event.detail)
    return update


def _update(state: SagaState, event: SagaEvent) -> dict[str, object]:  # noqa: PLR0911, PLR0912 - one branch per event type
    at = event.occurred_at
    match event:
        case PaymentRejected() | RefundRejected():
            if isinstance(event, PaymentRejected) and state.status == "UNKNOWN" \
                    and event.reason_code != "UNKNOWN_PAYMENT":
                return {"status": "REJECTED"}
            return {}  # a signal about one command; the payment itself does not change
        case RiskAssessed():
            if event.decision == "APPROVE":
                return {"status": "RESERVING_FUNDS", "awaiting": _awaiting(state, "FUNDS_RESERVE", 1, at)}
            return {"awaiting": None}
        case FundsReserved():
            return {"funds_reserved": True, "awaiting": None}
        case FundsReservationFailed():
            return {"awaiting": None}
        case SubmittedToPartner():
            return {"status": "SUBMITTED", "submit_attempt": event.attempt,
                    "awaiting": _awaiting(state, "PARTNER_SUBMIT", event.attempt, at)}
        case ParticipantCommandIssued():
            return _issued(state, event)
        case PartnerAccepted():
            return {"status": "COMMITTING", "partner_reference": event.partner_reference,
                    "awaiting": _awaiting(state, "FUNDS_COMMIT", 1, at)}
        case PartnerDeclined():
            return {"status": "RELEASING", "awaiting": _awaiting(state, "FUNDS_RELEASE", 1, at),
                    "after_release": AfterRelease(outcome="FAILED", stage="PARTNER",
                                                  reason_code=event.reason_code, detail=event.detail)}
        case FundsReleased():
            return {"funds_released": True, "awaiting": None}
        case FundsCommitted():
            return {"funds_committed": True, "awaiting": None}
        case PaymentSettled():
            return {"status": "SETTLED", "awaiting": None, "settled": event.amount,
                    "refunded": Money.zero(event.amount.currency), "settled_at": at}
        case PaymentFailed():
            return {"status": "FAILED", "awaiting": None}
        case PaymentCancelled():
            return {"status": "CANCELLED", "awaiting": None}
        case PaymentRefunded():
            return {"refunded": event.refunded_total, "refund_ids": (*state.refund_ids, event.refund_id)}
        case CompensationFailed():
            return {"status": "COMMIT_FAILED" if event.step == "FUNDS_COMMIT" else "COMPENSATION_FAILED"}
    raise SagaStateError(f"no rule folds {type(event).__name__}")


def apply(state: SagaState | None, event: SagaEvent) -> SagaState:
    """The state after `event`. Events must come in seq order, each exactly once."""
    if state is None:
        if event.seq != 1:
            raise SagaStateError(f"the first event of {event.payment_id} has seq {event.seq}")
        return _first(event).model_copy(update={"updated_at": event.occurred_at})
    if event.payment_id != state.payment_id or event.seq != state.seq + 1:
        raise SagaStateError(f"event {event.payment_id}#{event.seq} cannot follow {state.payment_id}#{state.seq}")
    if isinstance(event, PaymentInitiated):
        return _initiated(event, state).model_copy(update={"updated_at": event.occurred_at})
    update = _update(state, event)
    return state.model_copy(update={**update, "seq": event.seq, "updated_at": event.occurred_at})


def fold(events: Iterable[SagaEvent]) -> SagaState | None:
    """The state of a payment from all of its events, in seq order (None for no events)."""
    state: SagaState | None = None
    for event in events:
        state = apply(state, event)
    return state


# -- retention -----------------------------------------------------------------------------------

# States that wait for nothing more: deleted once retained long enough. UNKNOWN holds only rejections of
# commands for a payment that does not exist. An alert state (ALERT) waits for an operator: never deleted.
RETIRABLE: Final[frozenset[str]] = TERMINAL | {"UNKNOWN"}


def forget_at(state: SagaState, retention: timedelta, refund_window: timedelta,
              clock_skew: timedelta = timedelta(0)) -> datetime | None:
    """When the state may be deleted: `retention` (+ the tolerated clock skew of requested_at) after its
    last event, and for a settled payment not before its refund window closed. None while it may still
    change on its own, or for an old snapshot without `updated_at`."""
    if state.status not in RETIRABLE or state.updated_at is None:
        return None
    at = state.updated_at + retention + clock_skew
    if state.status == "SETTLED" and state.settled_at is not None:
        at = max(at, state.settled_at + refund_window)
    return at
