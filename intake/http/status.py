"""`GET /v1/payments/{id}`: the payment-status read model (projections/migrations/0004_payment_status.sql).

Read with plain SQL: the intake does not import the projection (the layers keep the apps apart), only
reads the tables it documents.
"""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from intake.http.database import connection
from intake.http.models import AmountView, PaymentView, TimelineEntry

TIMELINE_MAX = 1_000  # events shown; a payment has a few dozen at most

_STATUS = """SELECT payment_id, status, payer_account, payee_account, amount_minor, currency, partner,
                    reason_code, last_event_type, created_at, updated_at
             FROM payment_status WHERE payment_id = %s"""
_TIMELINE = """SELECT seq, event_type, occurred_at, detail FROM payment_timeline WHERE payment_id = %s
               ORDER BY seq LIMIT %s"""


async def read_payment(pool: AsyncConnectionPool, payment_id: str) -> PaymentView | None:
    async with connection(pool) as conn:
        row = await (await conn.execute(_STATUS, (payment_id,))).fetchone()
        events = await (await conn.execute(_TIMELINE, (payment_id, TIMELINE_MAX))).fetchall()
    timeline = [TimelineEntry(seq=seq, event_type=kind, occurred_at=at, detail=detail)
                for seq, kind, at, detail in events]
    if row is None:
        return None
    (pid, status, payer, payee, amount_minor, currency, partner, reason, last_type, created, updated) = row
    known = amount_minor is not None and currency
    amount = AmountView(amount_minor=amount_minor, currency=currency.strip()) if known else None
    return PaymentView(payment_id=pid, status=status, payer_account=payer, payee_account=payee, amount=amount,
                       partner=partner, reason_code=reason, last_event_type=last_type, created_at=created,
                       updated_at=updated, timeline=timeline)
