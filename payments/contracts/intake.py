"""Internal messages of the intake (topic payments.admitted, key payment_id): what the orchestrator is told
in place of a command whose idempotency key the intake has seen before."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from payments.contracts.base import Message
from payments.contracts.codes import CommandType, DuplicateVerdict
from payments.contracts.topics import ADMITTED
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
