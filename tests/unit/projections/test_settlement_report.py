"""Pure totals of the settlement report."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

from projections.report import SettlementReportFold, report_key, totals_of
from projections.runner import RecordMeta
from tests.unit.projections.events import settlement

META = RecordMeta("payments.settlements", 0, 0, 0)


def test_report_day_is_the_utc_day_of_settled_at() -> None:
    late_in_new_york = datetime(2025, 3, 1, 22, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert report_key(settlement("p1", settled_at=late_in_new_york)) == (date(2025, 3, 2), "EUR", "simbank")


def test_settlements_and_refunds_are_totalled_separately_per_day_currency_partner() -> None:
    day = datetime(2025, 3, 1, 9, tzinfo=UTC)
    totals = totals_of([settlement("p1", 1000, settled_at=day), settlement("p2", 500, settled_at=day),
                        settlement("p1", 300, kind="REFUND", settled_at=day),
                        settlement("p3", 900, currency="USD", settled_at=day),
                        settlement("p4", 100, partner="bank2", settled_at=day)])
    eur = totals[(date(2025, 3, 1), "EUR", "simbank")]
    assert (eur.settled_count, eur.settled_minor, eur.refunded_count, eur.refunded_minor) == (2, 1500, 1, 300)
    assert totals[(date(2025, 3, 1), "USD", "simbank")].settled_minor == 900
    assert totals[(date(2025, 3, 1), "EUR", "bank2")].settled_count == 1


def test_fold_counts_a_repeated_event_once() -> None:
    event = settlement("p1", 1000)
    fold = SettlementReportFold()
    fold.apply(event, META)
    fold.apply(event, META)
    assert fold.rows()["settlement_report"] == [(date(2025, 3, 1), "EUR", "simbank", 1, 1000, 0, 0)]
