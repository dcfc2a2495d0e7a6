"""Drive OrchestratorLogic without Kafka: build Incoming records, keep state, collect what it emits."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from orchestrator.saga import OrchestratorLogic
from orchestrator.state import SagaState, fold, hold_id, submission_id
from payments.contracts.base import Message, ParticipantCommand, SagaEvent
from payments.contracts.codec import CONTENT_TYPE_SINGLE_OBJECT
from payments.contracts.commands import CancelPayment, InitiatePayment, RefundPayment
from payments.contracts.envelope import Envelope
from payments.contracts.participants import (
    FundsCommitResult,
    FundsReleaseResult,
    FundsReservationResult,
    PartnerQueryResult,
    PartnerSubmissionResult,
    RiskAssessmentCompleted,
)
from payments.money import Money
from payments.runtime.logic import Decision, Incoming, Outgoing

T = TypeVar("T")
START = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
PAYMENT_ID = "9b2f4a34-5c1d-4a8e-9f3b-1d2c3b4a5e6f"
_NS = uuid.UUID("1f0e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b")


def uid(*parts: object) -> str:
    return str(uuid.uuid5(_NS, ":".join(map(str, parts))))


def initiate(payment_id: str = PAYMENT_ID, amount_minor: int = 1250, **overrides: Any) -> InitiatePayment:
    fields: dict[str, Any] = {
        "command_id": uid("initiate", payment_id), "idempotency_key": f"idem-{payment_id}",
        "payment_id": payment_id, "payer_account": "acc-payer-1", "payee_account": "acc-payee-1",
        "amount": Money.of(amount_minor, "EUR"), "partner": "simbank", "reference": "invoice 42",
        "requested_at": START,
    }
    fields.update(overrides)
    return InitiatePayment.model_validate(fields)


def cancel(payment_id: str = PAYMENT_ID, n: int = 1) -> CancelPayment:
    return CancelPayment(payment_id=payment_id, command_id=uid("cancel", payment_id, n),
                         idempotency_key=f"cancel-{n}", reason="customer asked")


def refund(amount_minor: int, n: int = 1, currency: str = "EUR", payment_id: str = PAYMENT_ID) -> RefundPayment:
    return RefundPayment(payment_id=payment_id, command_id=uid("refund-cmd", payment_id, n, amount_minor),
                         idempotency_key=f"refund-{n}", refund_id=uid("refund", payment_id, n),
                         amount=Money.of(amount_minor, currency), reason="returned goods")


def _reply_id(command_id: str, variant: str) -> str:
    return uid("reply", command_id, variant)


def risk_reply(command: ParticipantCommand, decision: str = "APPROVE") -> RiskAssessmentCompleted:
    return RiskAssessmentCompleted(payment_id=command.payment_id, reply_id=_reply_id(command.command_id, decision),
                                   command_id=command.command_id, score_bp=1200, decision=decision,  # type: ignore[arg-type]
                                   reasons=[] if decision == "APPROVE" else ["velocity"], model_version="v1")


def reservation_reply(command: ParticipantCommand, outcome: str = "RESERVED") -> FundsReservationResult:
    return FundsReservationResult(payment_id=command.payment_id, reply_id=_reply_id(command.command_id, outcome),
                                  command_id=command.command_id, hold_id=hold_id(command.payment_id),
                                  outcome=outcome)  # type: ignore[arg-type]


def release_reply(command: ParticipantCommand, outcome: str = "RELEASED") -> FundsReleaseResult:
    return FundsReleaseResult(payment_id=command.payment_id, reply_id=_reply_id(command.command_id, outcome),
                              command_id=command.command_id, hold_id=hold_id(command.payment_id),
                              outcome=outcome)  # type: ignore[arg-type]


def commit_reply(command: ParticipantCommand, outcome: str = "COMMITTED") -> FundsCommitResult:
    return FundsCommitResult(payment_id=command.payment_id, reply_id=_reply_id(command.command_id, outcome),
                             command_id=command.command_id, hold_id=hold_id(command.payment_id),
                             outcome=outcome)  # type: ignore[arg-type]


def submission_reply(command: ParticipantCommand, outcome: str = "ACCEPTED") -> PartnerSubmissionResult:
    return PartnerSubmissionResult(
        payment_id=command.payment_id, reply_id=_reply_id(command.command_id, outcome),
        command_id=command.command_id, submission_id=submission_id(command.payment_id), outcome=outcome,  # type: ignore[arg-type]
        partner_reference="ref-1" if outcome == "ACCEPTED" else None,
        reason_code="INSUFFICIENT_LIMIT" if outcome == "DECLINED" else None)


def query_reply(command: ParticipantCommand, status: str) -> PartnerQueryResult:
    return PartnerQueryResult(payment_id=command.payment_id, reply_id=_reply_id(command.command_id, status),
                              command_id=command.command_id, submission_id=submission_id(command.payment_id),
                              status=status,  # type: ignore[arg-type]
                              partner_reference="ref-1" if status == "ACCEPTED" else None)


def incoming(message: Message, offset: int = 0) -> Incoming:
    return Incoming(topic=message.TOPIC, partition=0, offset=offset, key=message.payment_id, message=message,
                    envelope=Envelope(id=message.message_id, type=type(message).AVRO_NAME, source="test",
                                      time=START, content_type=CONTENT_TYPE_SINGLE_OBJECT))


@dataclass
class Saga:
    """One payment's saga with a manual clock; remembers every event and command it emitted."""

    payment_id: str = PAYMENT_ID
    now: datetime = START
    state: SagaState | None = None
    logic: OrchestratorLogic = field(default_factory=OrchestratorLogic)
    events: list[SagaEvent] = field(default_factory=list)
    sent: list[Outgoing] = field(default_factory=list)
    last: tuple[Outgoing, ...] = ()

    def _take(self, decision: Decision[SagaState]) -> tuple[Outgoing, ...]:
        self.state = decision.state
        self.last = decision.outgoing
        for out in decision.outgoing:
            if isinstance(out.message, SagaEvent):
                self.events.append(out.message)
            else:
                self.sent.append(out)
        return decision.outgoing

    def handle(self, message: Message) -> tuple[Outgoing, ...]:
        return self._take(self.logic.decide(self.state, incoming(message, len(self.events)), self.now))

    def advance(self, delta: timedelta) -> tuple[Outgoing, ...]:
        """Move the clock and fire the timer if it is due (as the processor does)."""
        self.now += delta
        if self.state is None:
            return ()
        deadline = self.logic.next_deadline(self.state)
        if deadline is None or deadline > self.now:
            return ()
        return self._take(self.logic.fire_timers(self.payment_id, self.state, self.now))

    def expire(self) -> tuple[Outgoing, ...]:
        """Jump to the current timer's deadline and fire it."""
        assert self.state is not None
        deadline = self.logic.next_deadline(self.state)
        assert deadline is not None, f"no timer in {self.state.status}"
        return self.advance(deadline - self.now)

    def last_command(self, kind: type[T]) -> T:
        for out in reversed(self.sent):
            if isinstance(out.message, kind):
                return out.message
        raise AssertionError(f"no {kind.__name__} sent")

    def commands(self, kind: type[T]) -> list[T]:
        return [out.message for out in self.sent if isinstance(out.message, kind)]

    def emitted(self, kind: type[T]) -> list[T]:
        return [e for e in self.events if isinstance(e, kind)]

    @property
    def status(self) -> str:
        assert self.state is not None
        return self.state.status

    def types(self, outgoing: tuple[Outgoing, ...] | None = None) -> list[str]:
        return [type(o.message).__name__ for o in (self.last if outgoing is None else outgoing)]

    def replayed(self) -> SagaState | None:
        return fold(self.events)
