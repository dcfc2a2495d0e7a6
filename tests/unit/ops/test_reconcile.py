"""`payments reconcile`: the pure comparison of our settlements with a partner's report, and the report's parser."""

from __future__ import annotations

import csv
from datetime import date, timedelta
from fractions import Fraction
from pathlib import Path

import pytest

from ops.cli import build_parser
from ops.reconcile import (
    CSV_COLUMNS,
    OurSettlement,
    PartnerReportError,
    PartnerRow,
    Reconciliation,
    Totals,
    combine,
    compare,
    compare_totals,
    handler,
    ledger_totals,
    parse_report,
    write_csv,
)
from orchestrator.state import submission_id

D = date(2026, 11, 30)
BEFORE, AFTER = D - timedelta(days=1), D + timedelta(days=1)


def ours(payment_id: str, amount: int = 1000, currency: str = "EUR", day: date = D, partner: str = "simbank",
         event: str | None = None) -> OurSettlement:
    return OurSettlement(payment_id, partner, amount, currency, day, event or f"ev-{payment_id}-{day}")


def theirs(payment_id: str, amount: int = 1000, currency: str = "EUR", day: date = D,
           status: str = "ACCEPTED", reference: str | None = None) -> PartnerRow:
    assert status in ("ACCEPTED", "DECLINED")
    return PartnerRow(submission_id(payment_id), reference or f"SIM-{payment_id}", amount, currency,
                      "ACCEPTED" if status == "ACCEPTED" else "DECLINED", day)


def kinds(result: Reconciliation) -> list[tuple[str, str]]:
    return [(d.kind, d.payment_id or d.submission_id) for d in result.discrepancies]


def test_a_day_where_both_sides_agree_is_clean_and_fully_accurate() -> None:
    result = compare(D, [ours("p1"), ours("p2", 250, "JPY")], [theirs("p1"), theirs("p2", 250, "JPY")],
                     partner_label="simbank")
    assert result.discrepancies == ()
    assert (result.matched, result.total, result.accuracy, result.percent) == (2, 2, Fraction(1), "100.00")
    assert result.clean


def test_an_empty_day_is_clean_with_no_accuracy_figure() -> None:
    result = compare(D, [], [], partner_label="simbank")
    assert (result.clean, result.total, result.accuracy, result.percent) == (True, 0, None, None)
    assert result.accuracy_text().startswith("0/0")


def test_a_settlement_the_partner_has_no_record_of_is_missing_at_partner() -> None:
    result = compare(D, [ours("p1"), ours("p2")], [theirs("p1")], partner_label="simbank")
    [found] = result.discrepancies
    assert (found.kind, found.payment_id, found.submission_id) == ("missing_at_partner", "p2", submission_id("p2"))
    assert (found.our_amount_minor, found.our_currency, found.partner_amount_minor) == (1000, "EUR", None)
    assert (result.matched, result.total, result.percent) == (1, 2, "50.00")


def test_a_transfer_the_partner_accepted_and_we_never_settled_is_missing_in_ledger() -> None:
    stray = theirs("p9", 777)
    result = compare(D, [ours("p1")], [theirs("p1"), stray], partner_label="simbank",
                     known={stray.submission_id: "we submitted it as payment p9, now FAILED"})
    [found] = result.discrepancies
    assert (found.kind, found.payment_id, found.submission_id) == ("missing_in_ledger", "", stray.submission_id)
    assert (found.our_amount_minor, found.partner_amount_minor, found.partner_currency) == (None, 777, "EUR")
    assert found.partner == "simbank"
    assert "payment p9, now FAILED" in found.detail


def test_a_transfer_the_partner_declined_and_we_never_settled_agrees() -> None:
    result = compare(D, [], [theirs("p1", status="DECLINED")], partner_label="simbank")
    assert (result.clean, result.total) == (True, 0)


def test_a_settlement_of_a_transfer_the_partner_declined_is_reported() -> None:
    result = compare(D, [ours("p1")], [theirs("p1", status="DECLINED")], partner_label="simbank")
    assert kinds(result) == [("declined_at_partner", "p1")]


def test_another_amount_at_the_partner_is_an_amount_mismatch_with_the_difference() -> None:
    result = compare(D, [ours("p1", 1000)], [theirs("p1", 1001)], partner_label="simbank")
    [found] = result.discrepancies
    assert (found.kind, found.our_amount_minor, found.partner_amount_minor) == ("amount_mismatch", 1000, 1001)
    assert "difference 1" in found.detail
    assert result.matched == 0


def test_another_currency_at_the_partner_is_a_currency_mismatch_even_with_the_same_amount() -> None:
    result = compare(D, [ours("p1", 1000, "EUR")], [theirs("p1", 1000, "USD")], partner_label="simbank")
    [found] = result.discrepancies
    assert (found.kind, found.our_currency, found.partner_currency) == ("currency_mismatch", "EUR", "USD")


def test_a_payment_settled_twice_in_our_ledger_is_a_duplicate_counted_once() -> None:
    result = compare(D, [ours("p1", event="e1"), ours("p1", event="e2")], [theirs("p1")], partner_label="simbank")
    assert kinds(result) == [("duplicate_in_ledger", "p1")]
    assert "e1, e2" in result.discrepancies[0].detail
    assert (result.matched, result.total) == (0, 1)


def test_a_payment_settled_again_after_midnight_is_a_duplicate_on_both_days_never_matched_twice() -> None:
    settlements = [ours("p1", day=D, event="e1"), ours("p1", day=AFTER, event="e2")]
    for day in (D, AFTER):
        result = compare(day, settlements, [theirs("p1", day=D)], partner_label="simbank")
        assert kinds(result) == [("duplicate_in_ledger", "p1")]
        assert (result.matched, result.total) == (0, 1)


def test_a_submission_reported_twice_by_the_partner_is_a_duplicate() -> None:
    result = compare(D, [ours("p1")], [theirs("p1", reference="SIM-A"), theirs("p1", day=BEFORE, reference="SIM-B")],
                     partner_label="simbank")
    assert kinds(result) == [("duplicate_at_partner", "p1")]
    assert "SIM-A, SIM-B" in result.discrepancies[0].detail


def test_a_booking_the_day_before_our_settlement_is_a_cut_off_not_a_discrepancy() -> None:
    """Submitted at 23:59:59 (the partner books it at receipt), settled by us at 00:00:01."""
    result = compare(D, [ours("p1")], [theirs("p1", day=BEFORE)], partner_label="simbank")
    assert (result.clean, result.matched, result.total) == (True, 1, 1)


def test_a_booking_we_settled_the_next_day_belongs_to_the_next_day() -> None:
    today = compare(D, [ours("p1", day=AFTER)], [theirs("p1", day=D)], partner_label="simbank")
    tomorrow = compare(AFTER, [ours("p1", day=AFTER)], [theirs("p1", day=D)], partner_label="simbank")
    assert (today.clean, today.total) == (True, 0)
    assert (tomorrow.clean, tomorrow.matched, tomorrow.total) == (True, 1, 1)


def test_each_payment_counts_once_and_every_kind_is_found_on_one_day() -> None:
    our_side = [ours("ok"), ours("gone"), ours("amount", 500), ours("fx", 500, "GBP"), ours("twice", event="a"),
                ours("twice", event="b")]
    their_side = [theirs("ok"), theirs("amount", 505), theirs("fx", 500, "EUR"), theirs("twice"), theirs("extra")]
    result = compare(D, our_side, their_side, partner_label="simbank")
    assert sorted(kinds(result)) == sorted([
        ("missing_at_partner", "gone"), ("amount_mismatch", "amount"), ("currency_mismatch", "fx"),
        ("duplicate_in_ledger", "twice"), ("missing_in_ledger", submission_id("extra"))])
    assert (result.matched, result.total, result.settlements, result.partner_rows) == (1, 6, 6, 5)
    assert (result.accuracy, result.percent) == (Fraction(1, 6), "16.66")  # rounded down, never up


def test_the_percentage_never_rounds_a_miss_up_to_a_hundred() -> None:
    result = compare(D, [ours(f"p{i}") for i in range(10_000)], [theirs(f"p{i}") for i in range(9_999)],
                     partner_label="simbank")
    assert (result.matched, result.total, result.percent) == (9_999, 10_000, "99.99")
    assert result.accuracy == Fraction(9_999, 10_000)


def test_refunds_are_in_the_totals_not_in_the_partner_comparison() -> None:
    settlements = [ours("p1", 1000), ours("p2", 300), ours("p3", 99, day=AFTER)]
    ledger = ledger_totals(settlements, [("EUR", "simbank", 400)], D)
    assert ledger == {("EUR", "simbank"): Totals(2, 1300, 1, 400)}
    assert compare_totals(ledger, {("EUR", "simbank"): Totals(2, 1300, 1, 400)}) == []
    result = compare(D, settlements, [theirs("p1", 1000), theirs("p2", 300)], partner_label="simbank")
    assert result.clean


def test_a_settlement_report_that_disagrees_with_the_ledger_is_reported_per_currency_and_partner() -> None:
    ledger = {("EUR", "simbank"): Totals(2, 1300, 0, 0)}
    report = {("EUR", "simbank"): Totals(1, 1000, 0, 0), ("USD", "simbank"): Totals(1, 5, 0, 0)}
    found = compare_totals(ledger, report)
    assert [(d.kind, d.our_currency, d.partner) for d in found] == [("report_total_mismatch", "EUR", "simbank"),
                                                                     ("report_total_mismatch", "USD", "simbank")]
    assert "ledger: 2 settled (1300)" in found[0].detail and "settlement_report: 1 settled (1000)" in found[0].detail


def test_combining_partners_adds_their_counts_and_keeps_every_discrepancy() -> None:
    one = compare(D, [ours("p1")], [theirs("p1")], partner_label="a")
    two = compare(D, [ours("p2", partner="b")], [], partner_label="b")
    totals = compare_totals({("EUR", "b"): Totals(1, 1000)}, {})
    result = combine(D, [one, two], totals, refunds=0, sources={"a": "http://a", "b": "http://b"})
    assert (result.matched, result.total) == (1, 2)
    assert [d.kind for d in result.discrepancies] == ["missing_at_partner", "report_total_mismatch"]


# -- the report's format ----------------------------------------------------------------------------

HEADER = "date,submission_id,partner_reference,amount_minor,currency,status\n"


def test_a_report_is_parsed_into_integer_minor_units() -> None:
    text = HEADER + f"{D},s1,SIM-1,1250,EUR,ACCEPTED\n{D},s2,,99,JPY,DECLINED\n"
    assert parse_report(text, D, "simbank") == [PartnerRow("s1", "SIM-1", 1250, "EUR", "ACCEPTED", D),
                                                PartnerRow("s2", "", 99, "JPY", "DECLINED", D)]
    assert parse_report(HEADER, D, "simbank") == []


@pytest.mark.parametrize(("line", "problem"), [
    (f"{D},s1,SIM-1,12.50,EUR,ACCEPTED", "amount_minor"),
    (f"{D},s1,SIM-1,-5,EUR,ACCEPTED", "amount_minor"),
    (f"{D},s1,SIM-1,100,eur,ACCEPTED", "currency"),
    (f"{D},s1,SIM-1,100,EUR,SETTLED", "status"),
    (f"{BEFORE},s1,SIM-1,100,EUR,ACCEPTED", "booked on"),
    (f"{D},s1,SIM-1,100,EUR", "fields"),
    (f"{D},,SIM-1,100,EUR,ACCEPTED", "submission_id"),
])
def test_a_malformed_report_row_is_refused_naming_the_line(line: str, problem: str) -> None:
    with pytest.raises(PartnerReportError, match=rf"line 2: .*{problem}"):
        parse_report(HEADER + line + "\n", D, "simbank")


def test_a_report_without_the_documented_header_is_refused() -> None:
    with pytest.raises(PartnerReportError, match="header"):
        parse_report("<html>maintenance</html>\n", D, "simbank")


# -- the command's surface --------------------------------------------------------------------------


def test_the_cli_has_the_reconcile_command_and_refuses_a_malformed_day(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["reconcile", "--date", "2026-11-30", "--json"])
    assert (args.handler, args.date, args.json, args.csv) == (handler, D, True, None)
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["reconcile", "--date", "30/11/2026"])
    assert exit_info.value.code == 2
    assert "is not a day (YYYY-MM-DD)" in capsys.readouterr().err


def test_the_csv_has_one_row_per_discrepancy_with_empty_cells_for_what_a_side_lacks(tmp_path: Path) -> None:
    result = compare(D, [ours("p1"), ours("p2", 500)], [theirs("p2", 505), theirs("p3", 9, "JPY")],
                     partner_label="simbank")
    path = tmp_path / "out" / "reconcile.csv"
    write_csv(path, result)
    with path.open() as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == list(CSV_COLUMNS)
    assert sorted(row[:8] for row in rows[1:]) == sorted([
        ["missing_at_partner", "simbank", "p1", submission_id("p1"), "1000", "EUR", "", ""],
        ["amount_mismatch", "simbank", "p2", submission_id("p2"), "500", "EUR", "505", "EUR"],
        ["missing_in_ledger", "simbank", "", submission_id("p3"), "", "", "9", "JPY"]])
    assert [p.name for p in path.parent.iterdir()] == ["reconcile.csv"]  # no temporary file left
