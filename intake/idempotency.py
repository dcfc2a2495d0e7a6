"""The idempotency service: per client, keyed by (ce_source, idempotency key), within a window.

Input `intake.claims` (keyed by scope), output `intake.claim-results` (keyed by the claiming command's
payment id, where the gate waits). Per scope, the state remembers the first command claimed: its
request hash, ids and when it was first seen. A claim is answered:
  - GRANTED: the first claim of the key (or of a key whose window has passed), or a claim re-sent for
    that same command (same payment id and command id): answers are idempotent;
  - SAME_REQUEST: the same request under the key, whatever payment id it carries;
  - KEY_REUSED: another request under a key already used.
A scope is forgotten (tombstoned) when its window ends, by a durable timer, so the state holds only
keys inside the window. Claims of one scope are answered in the order they arrive: the first wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

from pydantic import BaseModel

from intake.errors import IntakeConfigError
from intake.scope import scope_key
from payments.contracts.codes import ClaimVerdict, CommandType
from payments.contracts.envelope import Envelope
from payments.contracts.intake import KeyClaim, KeyClaimResult
from payments.contracts.messages import Message
from payments.contracts.topics import INTAKE_CLAIM_RESULTS, INTAKE_CLAIMS
from payments.runtime.logic import STATE_CONFIG, Decision, Incoming, InputRejected, JsonState, Outgoing


@dataclass(frozen=True)
class IdempotencyConfig:
    window: timedelta = timedelta(hours=24)  # Stripe keeps keys 24 hours

    def __post_init__(self) -> None:
        if self.window <= timedelta(0):
            raise IntakeConfigError(f"the idempotency window must be positive, got {self.window}")


class Remembered(BaseModel):
    """The first command claimed under one (source, idempotency key)."""

    model_config = STATE_CONFIG

    source: str
    idempotency_key: str
    request_hash: str
    command_type: CommandType
    payment_id: str
    command_id: str
    refund_id: str | None = None
    first_seen_at: datetime


class IdempotencyLogic(JsonState[Remembered]):
    state_model = Remembered
    service: ClassVar[str] = "idempotency"
    input_topics: ClassVar[tuple[str, ...]] = (INTAKE_CLAIMS,)
    output_topics: ClassVar[tuple[str, ...]] = (INTAKE_CLAIM_RESULTS,)

    def __init__(self, config: IdempotencyConfig | None = None) -> None:
        self.config = config or IdempotencyConfig()

    def key_of(self, message: Message, envelope: Envelope) -> str:
        if isinstance(message, KeyClaim):
            return scope_key(message.source, message.idempotency_key)
        return message.payment_id

    def decide(self, state: Remembered | None, incoming: Incoming, now: datetime) -> Decision[Remembered]:
        claim = incoming.message
        if not isinstance(claim, KeyClaim):
            raise InputRejected("UnexpectedMessageType", "unexpected_message_type",
                                f"{type(claim).__name__} is not a KeyClaim")
        verdict: ClaimVerdict
        if state is None or self._expired(state, now):
            state = Remembered(source=claim.source, idempotency_key=claim.idempotency_key,
                               request_hash=claim.request_hash, command_type=claim.command_type,
                               payment_id=claim.payment_id, command_id=claim.command_id, refund_id=claim.refund_id,
                               first_seen_at=now)
            verdict = "GRANTED"
        elif (claim.payment_id, claim.command_id) == (state.payment_id, state.command_id):
            verdict = "GRANTED"  # the same command's claim again (re-sent, or the command redelivered)
        else:
            verdict = "SAME_REQUEST" if claim.request_hash == state.request_hash else "KEY_REUSED"
        result = KeyClaimResult(payment_id=claim.payment_id, command_id=claim.command_id, verdict=verdict,
                                original_payment_id=state.payment_id, original_command_id=state.command_id,
                                original_refund_id=state.refund_id, first_seen_at=state.first_seen_at)
        return Decision(state, (Outgoing(INTAKE_CLAIM_RESULTS, claim.payment_id, result),))

    def fire_timers(self, key: str, state: Remembered, now: datetime) -> Decision[Remembered]:
        return Decision(None) if self._expired(state, now) else Decision(state)

    def next_deadline(self, state: Remembered) -> datetime | None:
        return state.first_seen_at + self.config.window

    def _expired(self, state: Remembered, now: datetime) -> bool:
        return now >= state.first_seen_at + self.config.window
