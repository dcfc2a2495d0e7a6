"""The payment saga's decision logic: pure, `(state, message, now) -> (state, messages)`.

Each decision emits events and folds them into the state as it goes (`orchestrator.steps.Draft`),
so the state is always `fold(events)`; participant commands are derived from that state.
See docs/saga.md for the state machine, timers, compensation and idempotency rules.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from orchestrator import commands, replies, timers
from orchestrator.commands import request_hash
from orchestrator.config import SagaConfig
from orchestrator.state import RETIRABLE, SagaState, fold, forget_at
from orchestrator.steps import Draft
from payments.contracts.commands import CancelPayment, InitiatePayment, RefundPayment
from payments.contracts.envelope import Envelope
from payments.contracts.events import PaymentCancelled, PaymentFailed, PaymentRejected, PaymentSettled
from payments.contracts.intake import DuplicateCommand
from payments.contracts.messages import Message
from payments.contracts.participants import (
    FundsCommitResult,
    FundsReleaseResult,
    FundsReservationResult,
    PartnerQueryResult,
    PartnerSubmissionResult,
    RiskAssessmentCompleted,
)
from payments.contracts.topics import (
    ADMITTED,
    EVENTS,
    FUNDS_COMMANDS,
    FUNDS_REPLIES,
    PARTNER_COMMANDS,
    PARTNER_REPLIES,
    RISK_COMMANDS,
    RISK_OUTCOMES,
    RISK_REPLIES,
)
from payments.runtime.logic import Decision, Incoming, JsonState, Outcome

__all__ = ["OrchestratorLogic", "SagaState", "fold", "request_hash"]


def _route(draft: Draft, message: Message, envelope: Envelope,  # noqa: PLR0911 - a branch per type
           config: SagaConfig) -> None:
    match message:
        case InitiatePayment():
            return commands.initiate(draft, message, config, published_at=envelope.published_at)
        case DuplicateCommand():
            return commands.duplicate(draft, message)
        case CancelPayment():
            return commands.cancel(draft, message)
        case RefundPayment():
            return commands.refund(draft, message, config)
        case RiskAssessmentCompleted():
            return replies.risk_completed(draft, message)
        case FundsReservationResult():
            return replies.reservation_result(draft, message)
        case FundsReleaseResult():
            return replies.release_result(draft, message)
        case FundsCommitResult():
            return replies.commit_result(draft, message)
        case PartnerSubmissionResult():
            return replies.submission_result(draft, message)
        case PartnerQueryResult():
            return replies.query_result(draft, message)
    return None  # not ours (e.g. a message type added later): ignore it


class OrchestratorLogic(JsonState[SagaState]):
    """The saga as a `payments.runtime.logic.Logic[SagaState]`: one state per payment id."""

    state_model = SagaState
    service: ClassVar[str] = "orchestrator"
    input_topics: ClassVar[tuple[str, ...]] = (ADMITTED, RISK_REPLIES, FUNDS_REPLIES, PARTNER_REPLIES)
    output_topics: ClassVar[tuple[str, ...]] = (EVENTS, RISK_COMMANDS, RISK_OUTCOMES, FUNDS_COMMANDS, PARTNER_COMMANDS)

    def __init__(self, config: SagaConfig | None = None) -> None:
        self.config = config or SagaConfig()

    def key_of(self, message: Message, envelope: Envelope) -> str:
        return message.payment_id

    def decide(self, state: SagaState | None, incoming: Incoming, now: datetime) -> Decision[SagaState]:
        message = incoming.message
        draft = Draft(payment_id=message.payment_id, state=state, now=now, causation_id=incoming.envelope.id,
                      time_scale=self.config.time_scale)
        _route(draft, message, incoming.envelope, self.config)
        return draft.decision()

    def fire_timers(self, key: str, state: SagaState, now: datetime) -> Decision[SagaState]:
        deadline = self.next_deadline(state)
        if deadline is None or deadline > now:
            return Decision(state)
        if state.status in RETIRABLE:  # retained long enough: forget it (a tombstone; no event)
            return Decision(None)
        draft = Draft(payment_id=key, state=state, now=now, causation_id=timers.timer_id(state),
                      time_scale=self.config.time_scale)
        timers.fire(draft)
        return draft.decision()

    def outcomes(self, decision: Decision[SagaState]) -> tuple[Outcome, ...]:
        """The terminal event a decision emitted, if any, as an Outcome for the metrics: a rejection only
        when it is the payment's own end (its first event), not a refused later command."""
        found = []
        state = decision.state
        started = state.initiated_at if state is not None else None
        published = state.published_at if state is not None else None
        for out in decision.outgoing:
            event = out.message
            if isinstance(event, PaymentRejected):
                if event.seq == 1 and event.reason_code != "UNKNOWN_PAYMENT":
                    found.append(Outcome("REJECTED", event.reason_code, None))
                continue
            if not isinstance(event, PaymentSettled | PaymentFailed | PaymentCancelled):
                continue
            duration = (event.occurred_at - started).total_seconds() if started is not None else None
            since = (event.occurred_at - published).total_seconds() if published is not None else None
            outcome = {PaymentSettled: "SETTLED", PaymentFailed: "FAILED", PaymentCancelled: "CANCELLED"}[type(event)]
            reason = event.reason_code if isinstance(event, PaymentFailed) else ""
            found.append(Outcome(outcome, reason, duration, since))
        return tuple(found)

    def next_deadline(self, state: SagaState) -> datetime | None:
        """The awaited step's reply window, or for a finished payment the end of its retention."""
        step = timers.next_deadline(state, self.config.time_scale)
        if step is not None:
            return step
        return forget_at(state, self.config.retention, self.config.refund_window, self.config.clock_skew)
