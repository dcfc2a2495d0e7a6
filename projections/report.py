"""Settlement report read model: totals per UTC day of `settled_at`, currency and partner.

Idempotent per settlement event id: `settlement_report_applied` holds every counted event, and a
replayed event is filtered out before the totals move.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date

import psycopg

from payments.contracts.messages import Message, SettlementEvent
from payments.contracts.topics import SETTLEMENTS
from projections.runner import RecordMeta

Cursor = psycopg.Cursor[tuple[object, ...]]
ReportKey = tuple[date, str, str]  # (day, currency, partner)


@dataclass
class Totals:
    settled_count: int = 0
    settled_minor: int = 0
    refunded_count: int = 0
    refunded_minor: int = 0

    def add(self, event: SettlementEvent) -> None:
        if event.kind == "REFUND":
            self.refunded_count += 1
            self.refunded_minor += event.amount.amount_minor
        else:
            assert event.kind == "SETTLEMENT", event.kind
            self.settled_count += 1
            self.settled_minor += event.amount.amount_minor


def report_key(event: SettlementEvent) -> ReportKey:
    return (event.settled_at.astimezone(UTC).date(), event.amount.currency, event.partner)


def totals_of(events: Sequence[SettlementEvent]) -> dict[ReportKey, Totals]:
    """Pure: the report rows' increments for these (already deduplicated) events."""
    totals: dict[ReportKey, Totals] = defaultdict(Totals)
    for event in events:
        totals[report_key(event)].add(event)
    return dict(totals)


class SettlementReportFold:
    """The report tables as a pure fold of settlement events (replay verification)."""

    def __init__(self) -> None:
        self.applied: dict[str, SettlementEvent] = {}

    def apply(self, message: Message, meta: RecordMeta) -> None:
        if isinstance(message, SettlementEvent):
            self.applied.setdefault(message.event_id, message)

    def rows(self) -> dict[str, list[tuple[object, ...]]]:
        totals = totals_of(list(self.applied.values()))
        return {
            "settlement_report": [(day, currency, partner, t.settled_count, t.settled_minor, t.refunded_count,
                                   t.refunded_minor) for (day, currency, partner), t in totals.items()],
            "settlement_report_applied": [(event_id,) for event_id in self.applied],
        }


class SettlementReportProjection:
    name: str = "settlement_report"
    topics: tuple[str, ...] = (SETTLEMENTS,)

    def apply(self, cur: Cursor, message: Message, meta: RecordMeta) -> None:
        self.apply_batch(cur, [(message, meta)])

    def apply_batch(self, cur: Cursor, items: Sequence[tuple[Message, RecordMeta]]) -> None:
        """1. keep settlement events; 2. drop those already counted and in-batch duplicates;
        3. record their ids; 4. add the batch's totals per (day, currency, partner) in one upsert each."""
        events = [m for m, _ in items if isinstance(m, SettlementEvent)]
        if not events:
            return
        cur.execute("SELECT event_id FROM settlement_report_applied WHERE event_id = ANY(%s)",
                    ([e.event_id for e in events],))
        seen = {str(row[0]) for row in cur.fetchall()}
        fresh: list[SettlementEvent] = []
        for event in events:
            if event.event_id not in seen:
                seen.add(event.event_id)
                fresh.append(event)
        if not fresh:
            return
        cur.executemany("INSERT INTO settlement_report_applied (event_id) VALUES (%s)",
                        [(e.event_id,) for e in fresh])
        totals = totals_of(fresh)
        cur.executemany(
            """INSERT INTO settlement_report AS r (day, currency, partner, settled_count, settled_minor,
                   refunded_count, refunded_minor)
               VALUES (%s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (day, currency, partner) DO UPDATE SET
                   settled_count = r.settled_count + EXCLUDED.settled_count,
                   settled_minor = r.settled_minor + EXCLUDED.settled_minor,
                   refunded_count = r.refunded_count + EXCLUDED.refunded_count,
                   refunded_minor = r.refunded_minor + EXCLUDED.refunded_minor""",
            [(day, currency, partner, t.settled_count, t.settled_minor, t.refunded_count, t.refunded_minor)
             for (day, currency, partner), t in sorted(totals.items())])
