"""Builders of saga and settlement events for projection unit tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from payments.contracts.messages import (
    FundsCommitted,
    FundsReleased,
    FundsReserved,
    Message,
    PaymentInitiated,
    PaymentRefunded,
    PaymentSettled,
    SettlementEvent,
)
from payments.money import Money

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _base(payment_id: str, seq: int) -> dict[str, Any]:
    return {"payment_id": payment_id, "event_id": str(uuid.uuid4()), "seq": seq, "occurred_at": T0,
            "causation_id": str(uuid.uuid4())}


def initiated(payment_id: str, amount: int = 1000, currency: str = "EUR", payer: str = "alice",
              payee: str = "bob", partner: str = "simbank") -> PaymentInitiated:
    return PaymentInitiated(**_base(payment_id, 1), payer_account=payer, payee_account=payee,
                            amount=Money(amount_minor=amount, currency=currency), partner=partner,
                            idempotency_key=f"idem-{payment_id}", request_hash="h")


def reserved(payment_id: str, amount: int = 1000, currency: str = "EUR", seq: int = 2) -> FundsReserved:
    return FundsReserved(**_base(payment_id, seq), hold_id=f"hold-{payment_id}",
                         amount=Money(amount_minor=amount, currency=currency))


def released(payment_id: str, amount: int = 1000, currency: str = "EUR", seq: int = 3) -> FundsReleased:
    return FundsReleased(**_base(payment_id, seq), hold_id=f"hold-{payment_id}",
                         amount=Money(amount_minor=amount, currency=currency), reason="declined")


def committed(payment_id: str, amount: int = 1000, currency: str = "EUR", seq: int = 3) -> FundsCommitted:
    return FundsCommitted(**_base(payment_id, seq), hold_id=f"hold-{payment_id}",
                          amount=Money(amount_minor=amount, currency=currency))


def settled(payment_id: str, amount: int = 1000, currency: str = "EUR", payer: str = "alice", payee: str = "bob",
            partner: str = "simbank", seq: int = 4) -> PaymentSettled:
    return PaymentSettled(**_base(payment_id, seq), amount=Money(amount_minor=amount, currency=currency),
                          partner=partner, partner_reference=f"ref-{payment_id}", payer_account=payer,
                          payee_account=payee)


def refunded(payment_id: str, amount: int = 400, currency: str = "EUR", seq: int = 5) -> PaymentRefunded:
    return PaymentRefunded(**_base(payment_id, seq), refund_id=str(uuid.uuid4()),
                           amount=Money(amount_minor=amount, currency=currency),
                           refunded_total=Money(amount_minor=amount, currency=currency))


def settlement(payment_id: str, amount: int = 1000, currency: str = "EUR", partner: str = "simbank",
               kind: str = "SETTLEMENT", settled_at: datetime = T0) -> SettlementEvent:
    return SettlementEvent(payment_id=payment_id, event_id=str(uuid.uuid4()), settled_at=settled_at,
                           amount=Money(amount_minor=amount, currency=currency), payer_account="alice",
                           payee_account="bob", partner=partner, partner_reference=f"ref-{payment_id}",
                           kind=kind, refund_id=str(uuid.uuid4()) if kind == "REFUND" else None)


def lifecycle(index: int, currencies: tuple[str, ...] = ("EUR", "USD", "JPY")) -> list[Message]:
    """One payment's saga events, varied by `index`: settled, settled then partly refunded, or released."""
    payment_id = str(uuid.uuid4())
    currency = currencies[index % len(currencies)]
    amount = 100 + index
    payer, payee, partner = f"payer-{index % 7}", f"payee-{index % 5}", ("simbank", "bank2")[index % 2]
    events: list[Message] = [initiated(payment_id, amount, currency, payer, payee, partner),
                             reserved(payment_id, amount, currency)]
    if index % 4 == 3:
        return [*events, released(payment_id, amount, currency)]
    events += [committed(payment_id, amount, currency),
               settled(payment_id, amount, currency, payer, payee, partner)]
    if index % 4 == 2:
        events.append(refunded(payment_id, amount // 2, currency))
    return events
