"""Upstream commands (topic payments.commands, key payment_id)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field

from payments.contracts.base import Command
from payments.contracts.types import Str, UtcMillis
from payments.money import Money


class InitiatePayment(Command):
    AVRO_NAME: ClassVar[str] = "payments.commands.InitiatePayment"

    payer_account: Str
    payee_account: Str
    amount: Money
    partner: Str
    reference: Str | None = None
    requested_at: UtcMillis
    metadata: dict[Str, Str] = Field(default_factory=dict)  # since v2

    @property
    def message_time(self) -> datetime | None:
        return self.requested_at


class CancelPayment(Command):
    AVRO_NAME: ClassVar[str] = "payments.commands.CancelPayment"

    reason: Str


class RefundPayment(Command):
    AVRO_NAME: ClassVar[str] = "payments.commands.RefundPayment"

    refund_id: Str
    amount: Money
    reason: Str
