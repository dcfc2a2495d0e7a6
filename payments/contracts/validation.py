"""Pure business validation of decoded commands.

The models accept any well-typed value (a negative amount, an empty idempotency key, an
unknown currency) so that such a command becomes a `PaymentRejected` / `RefundRejected` with a
machine-readable code here, instead of a decode error nobody upstream ever sees.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from payments.contracts.codes import RejectCode
from payments.contracts.commands import CancelPayment, InitiatePayment, RefundPayment
from payments.money import Money, exponent, is_known_currency

UUID_PATTERN: Final = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
ACCOUNT_PATTERN: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
IDEMPOTENCY_KEY_LENGTH_MAX: Final = 255

# Limits in minor units for currencies whose unit is worth far less than a euro.
_DEFAULT_OVERRIDES: Final[Mapping[str, int]] = MappingProxyType({
    "JPY": 150_000_000,
    "KRW": 1_400_000_000,
    "ISK": 140_000_000,
    "CLP": 950_000_000,
    "VND": 25_000_000_000,
    "INR": 85_000_000_00,
})


@dataclass(frozen=True)
class Limits:
    """Per-payment amount ceilings. A currency without an override gets
    `amount_major_max` whole units (1,000,000 EUR = 100,000,000 minor units)."""

    amount_major_max: int = 1_000_000
    amount_minor_max_by_currency: Mapping[str, int] = field(default_factory=lambda: _DEFAULT_OVERRIDES)

    def amount_minor_max(self, currency: str) -> int:
        override = self.amount_minor_max_by_currency.get(currency)
        if override is not None:
            return override
        return int(self.amount_major_max * 10 ** exponent(currency))


DEFAULT_LIMITS: Final = Limits()


@dataclass(frozen=True)
class RejectReason:
    code: RejectCode
    field: str
    detail: str


def _uuid(name: str, value: str) -> list[RejectReason]:
    if UUID_PATTERN.match(value):
        return []
    return [RejectReason("MALFORMED_ID", name, f"{name} must be a UUID, got {value[:80]!r}")]


def _account(name: str, value: str) -> list[RejectReason]:
    if ACCOUNT_PATTERN.match(value):
        return []
    return [RejectReason("MALFORMED_ID", name, f"{name} must match {ACCOUNT_PATTERN.pattern}, got {value[:80]!r}")]


def _idempotency_key(value: str) -> list[RejectReason]:
    if not value.strip():
        return [RejectReason("MISSING_IDEMPOTENCY_KEY", "idempotency_key", "idempotency_key is empty")]
    if len(value) > IDEMPOTENCY_KEY_LENGTH_MAX:
        return [RejectReason("MALFORMED_ID", "idempotency_key",
                             f"idempotency_key is longer than {IDEMPOTENCY_KEY_LENGTH_MAX} characters")]
    return []


def _amount(amount: Money, limits: Limits) -> list[RejectReason]:
    if not is_known_currency(amount.currency):
        return [RejectReason("UNKNOWN_CURRENCY", "amount.currency", f"unknown currency {amount.currency[:16]!r}")]
    if amount.amount_minor <= 0:
        return [RejectReason("AMOUNT_NOT_POSITIVE", "amount.amount_minor",
                             f"amount must be positive, got {amount.amount_minor}")]
    ceiling = limits.amount_minor_max(amount.currency)
    if amount.amount_minor > ceiling:
        return [RejectReason("AMOUNT_OVER_LIMIT", "amount.amount_minor",
                             f"{amount.format()} exceeds the limit of {Money.of(ceiling, amount.currency).format()}")]
    return []


def validate_initiate(cmd: InitiatePayment, limits: Limits = DEFAULT_LIMITS) -> list[RejectReason]:
    """Every reason to reject `cmd`, in field order; empty when it may proceed."""
    reasons = [
        *_uuid("payment_id", cmd.payment_id),
        *_uuid("command_id", cmd.command_id),
        *_idempotency_key(cmd.idempotency_key),
        *_account("payer_account", cmd.payer_account),
        *_account("payee_account", cmd.payee_account),
    ]
    if cmd.payer_account == cmd.payee_account:
        reasons.append(RejectReason("SAME_PAYER_AND_PAYEE", "payee_account", "payer and payee are the same account"))
    reasons.extend(_amount(cmd.amount, limits))
    return reasons


def validate_refund(cmd: RefundPayment, limits: Limits = DEFAULT_LIMITS) -> list[RejectReason]:
    """Checks that need no payment state. Whether the refund fits the settled amount and
    currency (REFUND_EXCEEDS_SETTLED, CURRENCY_MISMATCH) is the saga's decision."""
    return [
        *_uuid("payment_id", cmd.payment_id),
        *_uuid("command_id", cmd.command_id),
        *_idempotency_key(cmd.idempotency_key),
        *_uuid("refund_id", cmd.refund_id),
        *_amount(cmd.amount, limits),
    ]


def validate_cancel(cmd: CancelPayment) -> list[RejectReason]:
    return [
        *_uuid("payment_id", cmd.payment_id),
        *_uuid("command_id", cmd.command_id),
        *_idempotency_key(cmd.idempotency_key),
    ]
