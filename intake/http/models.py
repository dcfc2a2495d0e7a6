"""Request and response bodies of the HTTP intake: what its OpenAPI document describes.

The request models validate shape and the rules any payment must meet (a known currency, a positive
amount that fits the wire's 64-bit `long`, account ids as the contracts define them), so a request the
saga would reject for its form is refused here with 422 instead of being accepted and rejected later.
Business decisions (funds, risk, an unknown partner, the refund window) stay with the saga.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr

from payments.money import CURRENCY_EXPONENTS, INT64_MAX

CURRENCIES = sorted(CURRENCY_EXPONENTS)
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,255}$"  # 1 to 255 visible ASCII characters (docs/contracts.md §2a)


def _known_currency(code: str) -> str:
    if code not in CURRENCY_EXPONENTS:
        raise ValueError(f"{code!r} is not an ISO 4217 currency this service knows")
    return code


Currency = Annotated[StrictStr, AfterValidator(_known_currency),
                     Field(description="ISO 4217 alphabetic code", json_schema_extra={"enum": CURRENCIES})]
Account = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="an account id")]
Reason = Annotated[StrictStr, Field(min_length=1, max_length=500)]
MetadataKey = Annotated[StrictStr, Field(min_length=1, max_length=64)]
MetadataValue = Annotated[StrictStr, Field(max_length=500)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Amount(Body):
    """Money: an integer number of minor units (cents, yen, fils) of an ISO 4217 currency; never a float."""

    amount_minor: Annotated[StrictInt, Field(gt=0, le=INT64_MAX, description="minor units: 1234 EUR is 12.34 EUR")]
    currency: Currency


class InitiatePaymentRequest(Body):
    amount: Amount
    payer_account: Account
    payee_account: Account
    partner: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="the payment partner")]
    reference: Annotated[StrictStr, Field(min_length=1, max_length=140)] | None = None
    metadata: Annotated[dict[MetadataKey, MetadataValue], Field(max_length=20)] = Field(default_factory=dict)


class CancelPaymentRequest(Body):
    reason: Reason


class RefundPaymentRequest(Body):
    refund_id: UUID | None = Field(None, description="the refund's id; derived from the Idempotency-Key when absent")
    amount: Amount
    reason: Reason


class Accepted(BaseModel):
    """The command was accepted by Kafka: the saga decides what happens to it (GET the payment to see)."""

    status: Literal["ACCEPTED"] = "ACCEPTED"
    payment_id: str
    command_id: str
    refund_id: str | None = None


class AmountView(BaseModel):
    """An amount as recorded (the currency as the command carried it, known or not)."""

    amount_minor: int
    currency: str


class TimelineEntry(BaseModel):
    seq: int
    event_type: str
    occurred_at: datetime
    detail: dict[str, Any]


class PaymentView(BaseModel):
    """A payment as the payment-status read model holds it (it trails Kafka by a moment).

    `ACCEPTED`: this service accepted the payment and the read model has not seen it yet."""

    payment_id: str
    status: str
    payer_account: str | None = None
    payee_account: str | None = None
    amount: AmountView | None = None
    partner: str | None = None
    reason_code: str | None = None
    last_event_type: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    timeline: list[TimelineEntry] = Field(default_factory=list)
