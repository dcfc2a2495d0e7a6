"""Internal messages of the intake: key claims between the gate and the idempotency service, and what the
orchestrator is told (topic payments.admitted) in place of a command whose key was used before."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from payments.contracts.base import Message
from payments.contracts.codes import ClaimVerdict, CommandType, DuplicateVerdict
from payments.contracts.topics import ADMITTED, INTAKE_CLAIM_RESULTS, INTAKE_CLAIMS
from payments.contracts.types import Str, UtcMillis


class DuplicateCommand(Message):
    """The intake saw this command's (source, idempotency key) within the window.

    SAME_REQUEST: the same request again (its payment id may differ): the original outcome stands.
    KEY_REUSED: another request under a key already used: rejected with IDEMPOTENCY_KEY_REUSED.
    """

    AVRO_NAME: ClassVar[str] = "payments.intake.DuplicateCommand"
    TOPIC: ClassVar[str] = ADMITTED

    command_id: Str
    idempotency_key: Str
    source: Str
    command_type: CommandType
    verdict: DuplicateVerdict
    original_payment_id: Str
    original_command_id: Str
    refund_id: Str | None = None
    original_refund_id: Str | None = None
    first_seen_at: UtcMillis

    @property
    def message_id(self) -> str:
        return self.command_id

    @property
    def idempotency_key_header(self) -> str | None:
        return self.idempotency_key

    @property
    def message_time(self) -> datetime | None:
        return self.first_seen_at


class KeyClaim(Message):
    """The gate asks the idempotency service to claim a command's (source, idempotency key)."""

    AVRO_NAME: ClassVar[str] = "payments.intake.KeyClaim"
    TOPIC: ClassVar[str] = INTAKE_CLAIMS

    command_id: Str
    source: Str
    idempotency_key: Str
    command_type: CommandType
    request_hash: Str
    refund_id: Str | None = None
    claimed_at: UtcMillis

    @property
    def message_id(self) -> str:
        return self.command_id

    @property
    def message_time(self) -> datetime | None:
        return self.claimed_at


class KeyClaimResult(Message):
    """The idempotency service's answer to a KeyClaim, keyed by the claiming command's payment id."""

    AVRO_NAME: ClassVar[str] = "payments.intake.KeyClaimResult"
    TOPIC: ClassVar[str] = INTAKE_CLAIM_RESULTS

    command_id: Str
    verdict: ClaimVerdict
    original_payment_id: Str
    original_command_id: Str
    original_refund_id: Str | None = None
    first_seen_at: UtcMillis

    @property
    def message_id(self) -> str:
        return f"{self.command_id}:{self.verdict}"

    @property
    def message_time(self) -> datetime | None:
        return self.first_seen_at
