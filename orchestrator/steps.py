"""Building one decision: events are numbered, folded into the state as they are emitted, and the
participant command the new state awaits is derived from that state.

Every id here is derived from the payment id and the event seq or step attempt: no uuid4, no clock
(`now` is an argument), so the same input always yields the same decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from orchestrator.ids import derived_id, event_id
from orchestrator.policy import window
from orchestrator.state import SagaState, SagaStateError, apply, command_id, hold_id, submission_id
from payments.contracts.base import ParticipantCommand, SagaEvent
from payments.contracts.events import FundsReleased, ParticipantCommandIssued, PaymentCancelled, PaymentFailed
from payments.contracts.participants import (
    AssessRisk,
    CommitFunds,
    QueryPartnerPayment,
    RecordRiskOutcome,
    ReleaseFunds,
    ReserveFunds,
    SubmitToPartner,
)
from payments.contracts.topics import EVENTS, FUNDS_COMMANDS, PARTNER_COMMANDS, RISK_COMMANDS, RISK_OUTCOMES
from payments.runtime.logic import Decision, Outgoing

E = TypeVar("E", bound=SagaEvent)


@dataclass
class Draft:
    """A decision under construction for one payment."""

    payment_id: str
    state: SagaState | None
    now: datetime
    causation_id: str
    time_scale: float = 1.0  # SagaConfig.time_scale: the partner commands' expires_at is the window's end
    outgoing: list[Outgoing] = field(default_factory=list)

    @property
    def current(self) -> SagaState:
        if self.state is None:
            raise SagaStateError(f"payment {self.payment_id} has no state yet")
        return self.state

    def event(self, cls: type[E], **fields: Any) -> E:
        """Emit the next event of the payment and fold it into the state."""
        before = self.state
        seq = (before.seq if before is not None else 0) + 1
        made = cls(event_id=event_id(self.payment_id, seq, self.causation_id), payment_id=self.payment_id, seq=seq,
                   occurred_at=self.now, causation_id=self.causation_id, **fields)
        self.state = apply(before, made)
        self.outgoing.append(Outgoing(EVENTS, self.payment_id, made))
        if isinstance(made, PaymentFailed) and before is not None and before.status != "AWAITING_RISK":
            self._tell_risk(made)
        return made

    def _tell_risk(self, failed: PaymentFailed) -> None:
        """A payment risk approved failed afterwards: the risk service counts it in the payer's failures
        (docs/risk.md). Keyed by the payer, where the risk service keeps the payer's history."""
        payer = self.current.require_terms().payer_account
        self.send(RISK_OUTCOMES, payer, RecordRiskOutcome(
            payment_id=self.payment_id, command_id=derived_id(self.payment_id, "risk-outcome"), issued_at=self.now,
            payer_account=payer, outcome="FAILED", reason_code=failed.reason_code))

    def send(self, destination: str, key: str, command: ParticipantCommand) -> None:
        self.outgoing.append(Outgoing(destination, key, command))

    def send_awaited(self) -> None:
        """Issue the participant command whose reply the state now awaits (first attempt or retry)."""
        state = self.current
        awaiting = state.awaiting
        assert awaiting is not None, "nothing is awaited"
        terms = state.require_terms()
        common: dict[str, Any] = {"payment_id": self.payment_id, "command_id": awaiting.command_id,
                                  "issued_at": self.now}
        match awaiting.step:
            case "RISK":  # keyed by the payee: the risk service's first stage keeps the payee's history
                self.send(RISK_COMMANDS, terms.payee_account, AssessRisk(
                    **common, payer_account=terms.payer_account, payee_account=terms.payee_account,
                    amount=terms.amount, partner=terms.partner, initiated_at=state.initiated_at,
                    attempt=awaiting.attempt))
            case "FUNDS_RESERVE":  # the funds participant keys its state by account
                self.send(FUNDS_COMMANDS, terms.payer_account, ReserveFunds(
                    **common, account=terms.payer_account, amount=terms.amount, hold_id=hold_id(self.payment_id)))
            case "FUNDS_COMMIT":
                self.send(FUNDS_COMMANDS, terms.payer_account, CommitFunds(
                    **common, account=terms.payer_account, hold_id=hold_id(self.payment_id),
                    payee_account=terms.payee_account))
            case "FUNDS_RELEASE":
                self.send(FUNDS_COMMANDS, terms.payer_account, ReleaseFunds(
                    **common, account=terms.payer_account, hold_id=hold_id(self.payment_id)))
            case "PARTNER_SUBMIT":  # never sent after the saga's window: by then it asks instead
                self.send(PARTNER_COMMANDS, self.payment_id, SubmitToPartner(
                    **common, partner=terms.partner, submission_id=submission_id(self.payment_id),
                    amount=terms.amount, payer_account=terms.payer_account, payee_account=terms.payee_account,
                    expires_at=self._window_end()))
            case "PARTNER_QUERY":
                self.send(PARTNER_COMMANDS, self.payment_id, QueryPartnerPayment(
                    **common, partner=terms.partner, submission_id=submission_id(self.payment_id),
                    expires_at=self._window_end()))

    def _window_end(self) -> datetime:
        """When the awaited attempt's reply window ends (the saga's timer for it fires)."""
        awaiting = self.current.awaiting
        assert awaiting is not None
        return awaiting.since + window(self.payment_id, awaiting.step, awaiting.attempt, self.time_scale)

    def decision(self) -> Decision[SagaState]:
        return Decision(self.state, tuple(self.outgoing))


# -- steps shared by commands, replies and timers ------------------------------------------------


def issue(draft: Draft, step: str, attempt: int, reason: str, detail: str = "") -> None:
    """Record and send a participant command no other event implies (retry, query, compensation)."""
    state = draft.current
    cid = command_id(state.payment_id, step, attempt, state.submit_attempt)  # type: ignore[arg-type]
    draft.event(ParticipantCommandIssued, step=step, attempt=attempt, command_id=cid, reason=reason, detail=detail)
    draft.send_awaited()


def start_release(draft: Draft, reason: str, detail: str) -> None:
    """Compensate: release the hold (sent even when the reservation's outcome is unknown; the funds
    participant processes an account's commands in order, so a late reservation is released too)."""
    issue(draft, "FUNDS_RELEASE", 1, reason, detail)


def finish_release(draft: Draft, outcome: str) -> None:
    """The release is done (or the hold was unknown): record it and end the payment as planned."""
    state = draft.current
    after = state.after_release
    assert after is not None, "a release without a planned outcome"
    terms = state.require_terms()
    if state.funds_reserved and not state.funds_released:
        draft.event(FundsReleased, hold_id=hold_id(state.payment_id), amount=terms.amount,
                    reason=after.reason_code if outcome == "RELEASED" else f"{after.reason_code}; hold {outcome}")
    if after.outcome == "CANCELLED":
        draft.event(PaymentCancelled, reason=after.detail)
    else:
        draft.event(PaymentFailed, stage=after.stage, reason_code=after.reason_code, detail=after.detail)
