"""The public downstream contract (topic payments.settlements, key payment_id).

Stability promise: fields are only ever added, with defaults; nothing is removed, renamed or
re-typed. Every published version stays in schemas/payments.settlements.SettlementEvent/.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from payments.contracts.base import Message
from payments.contracts.codes import SettlementKind
from payments.contracts.topics import SETTLEMENTS
from payments.contracts.types import Int, Str, UtcMillis
from payments.money import Money

SETTLEMENT_SCHEMA_VERSION = 1


class SettlementEvent(Message):
    AVRO_NAME: ClassVar[str] = "payments.settlements.SettlementEvent"
    TOPIC: ClassVar[str] = SETTLEMENTS

    event_id: Str
    settled_at: UtcMillis
    amount: Money
    payer_account: Str
    payee_account: Str
    partner: Str
    partner_reference: Str
    kind: SettlementKind
    refund_id: Str | None = None
    schema_version: Int = SETTLEMENT_SCHEMA_VERSION

    @property
    def message_id(self) -> str:
        return self.event_id

    @property
    def message_time(self) -> datetime | None:
        return self.settled_at
