"""The dedupe: idempotency per client, keyed by (ce_source, idempotency key), within a window.

Input `intake.requests` (keyed by scope), output `payments.admitted` (keyed by payment id, co-partitioned
with everything the orchestrator reads). Per scope, the state remembers the first command: its request
hash, ids and when it was first seen. Then, for a command under that scope:
  - first time (or the window has passed): remembered, and forwarded unchanged (original envelope);
  - same request again, whatever payment id it carries: a `DuplicateCommand` SAME_REQUEST naming the
    original, so the orchestrator answers with the original outcome;
  - another request under the key: a `DuplicateCommand` KEY_REUSED, rejected as IDEMPOTENCY_KEY_REUSED.
A command without a usable key (blank, or over 255 characters) is forwarded without state: the
orchestrator rejects it (MISSING_IDEMPOTENCY_KEY / MALFORMED_ID). A scope is forgotten (tombstoned)
when its window ends, by a durable timer, so the state holds only keys inside the window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from intake.scope import has_usable_key, request_hash, scope_key, unscoped_key
from payments.contracts.base import Command
from payments.contracts.codes import CommandType
from payments.contracts.commands import RefundPayment
from payments.contracts.envelope import Envelope
from payments.contracts.intake import DuplicateCommand
from payments.contracts.messages import Message
from payments.contracts.topics import ADMITTED, INTAKE_REQUESTS
from payments.runtime.logic import Decision, Incoming, InputRejected, JsonState, Outgoing


@dataclass(frozen=True)
class DedupeConfig:
    window: timedelta = timedelta(hours=24)  # Stripe keeps keys 24 hours

    def __post_init__(self) -> None:
        if self.window <= timedelta(0):
            raise ValueError(f"the idempotency window must be positive, got {self.window}")


class Remembered(BaseModel):
    """The first command seen under one (source, idempotency key)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str
    idempotency_key: str
    request_hash: str
    command_type: CommandType
    payment_id: str
    command_id: str
    refund_id: str | None = None
    first_seen_at: datetime


class DedupeLogic(JsonState[Remembered]):
    state_model = Remembered
    service: ClassVar[str] = "dedupe"
    input_topics: ClassVar[tuple[str, ...]] = (INTAKE_REQUESTS,)
    output_topics: ClassVar[tuple[str, ...]] = (ADMITTED,)

    def __init__(self, config: DedupeConfig | None = None) -> None:
        self.config = config or DedupeConfig()

    def key_of(self, message: Message, envelope: Envelope) -> str:
        if isinstance(message, Command) and has_usable_key(message):
            return scope_key(envelope.source, message.idempotency_key)
        return unscoped_key(message.payment_id)

    def decide(self, state: Remembered | None, incoming: Incoming, now: datetime) -> Decision[Remembered]:
        command = incoming.message
        if not isinstance(command, Command):
            raise InputRejected("UnexpectedMessageType", "unexpected_message_type",
                                f"{type(command).__name__} is not a command")
        forward = Outgoing(ADMITTED, command.payment_id, command, envelope=incoming.envelope)
        if not has_usable_key(command):
            return Decision(state, (forward,))
        digest = request_hash(command)
        if state is None or self._expired(state, now):
            remembered = Remembered(
                source=incoming.envelope.source, idempotency_key=command.idempotency_key, request_hash=digest,
                command_type=type(command).__name__,
                payment_id=command.payment_id, command_id=command.command_id,
                refund_id=command.refund_id if isinstance(command, RefundPayment) else None, first_seen_at=now)
            return Decision(remembered, (forward,))
        notice = DuplicateCommand(
            payment_id=command.payment_id, command_id=command.command_id, idempotency_key=command.idempotency_key,
            source=state.source, command_type=type(command).__name__,
            verdict="SAME_REQUEST" if digest == state.request_hash else "KEY_REUSED",
            original_payment_id=state.payment_id, original_command_id=state.command_id,
            refund_id=command.refund_id if isinstance(command, RefundPayment) else None,
            original_refund_id=state.refund_id, first_seen_at=state.first_seen_at)
        return Decision(state, (Outgoing(ADMITTED, command.payment_id, notice),))

    def fire_timers(self, key: str, state: Remembered, now: datetime) -> Decision[Remembered]:
        return Decision(None) if self._expired(state, now) else Decision(state)

    def next_deadline(self, state: Remembered) -> datetime | None:
        return state.first_seen_at + self.config.window

    def _expired(self, state: Remembered, now: datetime) -> bool:
        return now >= state.first_seen_at + self.config.window
