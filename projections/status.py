"""Payment status read model: the current state of each payment plus its full timeline.

Idempotent per event: the timeline insert on the event id comes first, and the status row is only
touched when that insert actually happened.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from payments.contracts.messages import Message, PaymentInitiated, PaymentRejected
from projections.runner import RecordMeta

# Terminal and intermediate statuses each event moves a payment to; an event not listed only
# appends to the timeline.
STATUS_BY_EVENT = {
    "PaymentInitiated": "INITIATED",
    "RiskAssessed": "RISK_ASSESSED",
    "FundsReserved": "FUNDS_RESERVED",
    "SubmittedToPartner": "SUBMITTED",
    "PartnerAccepted": "PARTNER_ACCEPTED",
    "PartnerDeclined": "PARTNER_DECLINED",
    "PaymentSettled": "SETTLED",
    "PaymentFailed": "FAILED",
    "PaymentCancelled": "CANCELLED",
    "PaymentRefunded": "REFUNDED",
    "PaymentRejected": "REJECTED",
    "CompensationFailed": "COMPENSATION_FAILED",
}


class PaymentStatusProjection:
    name: str = "payment_status"
    topics: tuple[str, ...] = ("payments.events",)

    def apply(self, cur: psycopg.Cursor[tuple[object, ...]], message: Message, meta: RecordMeta) -> None:
        data: dict[str, Any] = json.loads(message.model_dump_json())
        event_type = type(message).__name__
        event_id, payment_id, seq = data["event_id"], data["payment_id"], data["seq"]
        occurred_at: datetime = getattr(message, "occurred_at")  # noqa: B009 — every saga event has it
        cur.execute(
            """INSERT INTO payment_timeline (event_id, payment_id, seq, event_type, occurred_at, detail)
               VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING""",
            (event_id, payment_id, seq, event_type, occurred_at, Jsonb(data)))
        if cur.rowcount == 0:
            return  # already applied: a replayed record
        status = STATUS_BY_EVENT.get(event_type)
        if isinstance(message, PaymentInitiated):
            cur.execute(
                """INSERT INTO payment_status (payment_id, status, payer_account, payee_account, amount_minor,
                       currency, partner, last_seq, last_event_type, created_at, updated_at)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (payment_id) DO NOTHING""",
                (payment_id, status, message.payer_account, message.payee_account, message.amount.amount_minor,
                 message.amount.currency, message.partner, seq, event_type, occurred_at, occurred_at))
            return
        if status is None:
            return
        reason = data.get("reason_code")
        if isinstance(message, PaymentRejected):
            # A rejection never changes a live payment (a late cancel, a reused idempotency key): it
            # only creates the row of a payment refused at intake. A command for a payment that does
            # not exist yet (UNKNOWN_PAYMENT) stays on the timeline only.
            if message.reason_code != "UNKNOWN_PAYMENT":
                cur.execute(
                    """INSERT INTO payment_status (payment_id, status, last_seq, last_event_type, reason_code,
                           created_at, updated_at)
                       VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (payment_id) DO NOTHING""",
                    (payment_id, status, seq, event_type, reason, occurred_at, occurred_at))
            return
        cur.execute(
            """INSERT INTO payment_status (payment_id, status, last_seq, last_event_type, reason_code,
                   created_at, updated_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (payment_id) DO UPDATE SET
                   status = EXCLUDED.status, last_seq = EXCLUDED.last_seq,
                   last_event_type = EXCLUDED.last_event_type,
                   reason_code = COALESCE(EXCLUDED.reason_code, payment_status.reason_code),
                   updated_at = EXCLUDED.updated_at
               WHERE payment_status.last_seq < EXCLUDED.last_seq""",
            (payment_id, status, seq, event_type, reason, occurred_at, occurred_at))
