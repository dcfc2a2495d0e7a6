"""The payment saga's decision logic: pure, `(state, message, now) -> (state, messages)`.

This is the first slice: an InitiatePayment becomes PaymentInitiated, once per payment.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from orchestrator.ids import event_id
from payments.contracts.messages import InitiatePayment, Message, PaymentInitiated
from payments.runtime.logic import Decision, Incoming, Outgoing

EVENTS = "payments.events"
COMMANDS = "payments.commands"


class SagaState(BaseModel):
    """A payment's saga state: the fold of its events (snapshotted to the changelog)."""

    model_config = ConfigDict(frozen=True)

    payment_id: str
    status: str
    seq: int
    idempotency_key: str
    request_hash: str


def request_hash(command: InitiatePayment) -> str:
    """What makes two InitiatePayment commands 'the same request' for idempotency."""
    fields = (command.payment_id, command.payer_account, command.payee_account,
              str(command.amount.amount_minor), command.amount.currency, command.partner, command.reference or "")
    return hashlib.sha256("\x1f".join(fields).encode()).hexdigest()


def initiate(state: SagaState | None, command: InitiatePayment, causation_id: str,
             now: datetime) -> Decision[SagaState]:
    if state is not None:
        return Decision(state)  # a redelivered or repeated command: nothing new happens
    digest = request_hash(command)
    event = PaymentInitiated(
        event_id=event_id(command.payment_id, 1), payment_id=command.payment_id, seq=1, occurred_at=now,
        causation_id=causation_id, payer_account=command.payer_account, payee_account=command.payee_account,
        amount=command.amount, partner=command.partner, reference=command.reference,
        idempotency_key=command.idempotency_key, request_hash=digest)
    new_state = SagaState(payment_id=command.payment_id, status="INITIATED", seq=1,
                          idempotency_key=command.idempotency_key, request_hash=digest)
    return Decision(new_state, (Outgoing(EVENTS, command.payment_id, event),))


class OrchestratorLogic:
    service: str = "orchestrator"
    input_topics: tuple[str, ...] = (COMMANDS,)

    def key_of(self, message: Message) -> str:
        payment_id = getattr(message, "payment_id", None)
        assert isinstance(payment_id, str), f"{type(message).__name__} carries no payment_id"
        return payment_id

    def decide(self, state: SagaState | None, incoming: Incoming, now: datetime) -> Decision[SagaState]:
        message = incoming.message
        if isinstance(message, InitiatePayment):
            return initiate(state, message, incoming.envelope.id, now)
        return Decision(state)

    def fire_timers(self, key: str, state: SagaState, now: datetime) -> Decision[SagaState]:
        return Decision(state)

    def next_deadline(self, state: SagaState) -> datetime | None:
        return None

    def encode_state(self, state: SagaState) -> bytes:
        return state.model_dump_json().encode()

    def decode_state(self, data: bytes) -> SagaState:
        return SagaState.model_validate_json(data)
