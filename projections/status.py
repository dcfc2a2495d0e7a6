"""Payment status read model: the current state of each payment plus its full timeline.

The rules are one pure fold, `PaymentStatusFold`, used both by the projection (which loads the
touched rows, folds the batch into them and writes the changed rows back) and by replay
verification (which folds every record from scratch):

  - timeline: one row per event id; an event id already present makes the whole event a no-op
    (a replayed record);
  - `PaymentInitiated` creates the status row (never overwrites an existing one);
  - `PaymentRejected` never changes an existing row: it only creates the row of a payment refused
    at intake; a rejection of a command for a payment that does not exist yet (`UNKNOWN_PAYMENT`)
    stays on the timeline only;
  - every other status-changing event (STATUS_BY_EVENT) creates the row if missing, else updates
    status, last_seq, last_event_type, reason_code (kept when the event has none) and updated_at,
    only when its seq is higher than the row's last_seq;
  - events not in STATUS_BY_EVENT only append to the timeline.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final, NamedTuple

import psycopg
from psycopg.types.json import Jsonb

from payments.contracts.base import SagaEvent
from payments.contracts.messages import Message, PaymentInitiated, PaymentRejected
from payments.contracts.topics import EVENTS
from projections.runner import RecordMeta

Cursor = psycopg.Cursor[tuple[object, ...]]

# Terminal and intermediate statuses each event moves a payment to; an event not listed only
# appends to the timeline.
STATUS_BY_EVENT: Final = {
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


class StatusRow(NamedTuple):
    """A payment_status row, in the table's column order."""

    payment_id: str
    status: str
    payer_account: str | None
    payee_account: str | None
    amount_minor: int | None
    currency: str | None
    partner: str | None
    last_seq: int
    last_event_type: str
    reason_code: str | None
    created_at: datetime
    updated_at: datetime


STATUS_COLUMNS: Final = ", ".join(StatusRow._fields)  # named, never `SELECT *`: column order is not a contract


_UPSERT_STATUS: Final = f"""
    INSERT INTO payment_status ({STATUS_COLUMNS}) VALUES ({", ".join(["%s"] * len(StatusRow._fields))})
    ON CONFLICT (payment_id) DO UPDATE SET
        status = EXCLUDED.status, last_seq = EXCLUDED.last_seq, last_event_type = EXCLUDED.last_event_type,
        reason_code = EXCLUDED.reason_code, updated_at = EXCLUDED.updated_at"""


class TimelineRow(NamedTuple):
    """A payment_timeline row, in the table's column order (`detail` is the event as JSON)."""

    event_id: str
    payment_id: str
    seq: int
    event_type: str
    occurred_at: datetime
    detail: dict[str, Any]


class PaymentStatusFold:
    """Both tables as a pure fold of saga events (module docstring), in the rows the tables hold.

    `status` and `seen` may be preloaded with the current rows: the projection folds a batch into
    the rows it touches; replay verification starts empty.
    """

    def __init__(self) -> None:
        self.status: dict[str, StatusRow] = {}
        self.timeline: dict[str, TimelineRow] = {}  # new timeline rows, by event id
        self.seen: set[str] = set()  # event ids on the timeline (preloaded ones included)
        self.changed: set[str] = set()  # payment ids whose status row was created or updated

    def apply(self, message: Message, meta: RecordMeta) -> None:
        if not isinstance(message, SagaEvent) or message.event_id in self.seen:
            return
        data: dict[str, Any] = json.loads(message.model_dump_json())
        event_type = type(message).__name__
        payment_id, seq, at = message.payment_id, message.seq, message.occurred_at
        self.seen.add(message.event_id)
        self.timeline[message.event_id] = TimelineRow(message.event_id, payment_id, seq, event_type, at, data)
        status = STATUS_BY_EVENT.get(event_type)
        if status is None:
            return
        current = self.status.get(payment_id)
        reason: str | None = data.get("reason_code")
        if isinstance(message, PaymentInitiated):
            if current is None:
                amount = message.amount
                self._put(StatusRow(payment_id, status, message.payer_account, message.payee_account,
                                    amount.amount_minor, amount.currency, message.partner, seq, event_type, None,
                                    at, at))
        elif isinstance(message, PaymentRejected):
            if current is None and message.reason_code != "UNKNOWN_PAYMENT":
                self._put(StatusRow(payment_id, status, None, None, None, None, None, seq, event_type, reason,
                                    at, at))
        elif current is None:
            self._put(StatusRow(payment_id, status, None, None, None, None, None, seq, event_type, reason, at, at))
        elif current.last_seq < seq:
            self._put(current._replace(status=status, last_seq=seq, last_event_type=event_type,
                                       reason_code=reason if reason is not None else current.reason_code,
                                       updated_at=at))

    def _put(self, row: StatusRow) -> None:
        self.status[row.payment_id] = row
        self.changed.add(row.payment_id)

    def rows(self) -> dict[str, list[tuple[object, ...]]]:
        return {"payment_status": [tuple(row) for row in self.status.values()],
                "payment_timeline": [tuple(row) for row in self.timeline.values()]}


class PaymentStatusProjection:
    """Writes a batch with a bounded number of statements: the fold does the logic, SQL stores rows."""

    name: str = "payment_status"
    topics: tuple[str, ...] = (EVENTS,)

    def apply(self, cur: Cursor, message: Message, meta: RecordMeta) -> None:
        self.apply_batch(cur, [(message, meta)])

    def apply_batch(self, cur: Cursor, items: Sequence[tuple[Message, RecordMeta]]) -> None:
        """1. load the timeline event ids and status rows the batch touches; 2. fold the batch into
        them (already applied events are no-ops); 3. insert the new timeline rows and upsert the
        created or changed status rows (executemany, pipelined by psycopg)."""
        events = [(m, meta) for m, meta in items if isinstance(m, SagaEvent)]
        if not events:
            return
        fold = PaymentStatusFold()
        cur.execute("SELECT event_id FROM payment_timeline WHERE event_id = ANY(%s)",
                    ([m.event_id for m, _ in events if isinstance(m, SagaEvent)],))
        fold.seen.update(str(row[0]) for row in cur.fetchall())
        cur.execute(f"SELECT {STATUS_COLUMNS} FROM payment_status WHERE payment_id = ANY(%s) "
                    "ORDER BY payment_id FOR UPDATE", (sorted({m.payment_id for m, _ in events}),))
        for row in cur.fetchall():
            loaded = StatusRow(*row)  # type: ignore[arg-type]  # STATUS_COLUMNS is StatusRow's fields, in order
            fold.status[loaded.payment_id] = loaded
        for message, meta in events:
            fold.apply(message, meta)
        if fold.timeline:
            cur.executemany(
                """INSERT INTO payment_timeline (event_id, payment_id, seq, event_type, occurred_at, detail)
                   VALUES (%s, %s, %s, %s, %s, %s)""",
                [(*row[:5], Jsonb(row.detail)) for row in fold.timeline.values()])
        if fold.changed:
            cur.executemany(_UPSERT_STATUS, [tuple(fold.status[pid]) for pid in sorted(fold.changed)])
