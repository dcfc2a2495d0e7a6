"""Pure posting rules of the ledger: which accounts each saga event moves, and that every entry balances."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments.contracts.messages import Message
from projections.ledger import (
    LedgerFold,
    MissingPartiesError,
    Parties,
    Posting,
    entry_for,
    entry_id_of,
    postings_for,
)
from projections.runner import RecordMeta
from tests.unit.projections.events import committed, initiated, refunded, released, reserved, settled

PARTIES = Parties(payer_account="alice", payee_account="bob", partner="simbank", currency="EUR")
META = RecordMeta("payments.events", 0, 0, 0)


def test_funds_reserved_moves_payer_available_to_held() -> None:
    assert postings_for(reserved("p1", 1000), PARTIES) == [
        Posting("customer:alice:available", "EUR", -1000), Posting("customer:alice:held", "EUR", 1000)]


def test_funds_released_moves_held_back_to_available() -> None:
    assert postings_for(released("p1", 700), PARTIES) == [
        Posting("customer:alice:held", "EUR", -700), Posting("customer:alice:available", "EUR", 700)]


def test_funds_committed_moves_held_to_partner_clearing() -> None:
    assert postings_for(committed("p1", 1000), PARTIES) == [
        Posting("customer:alice:held", "EUR", -1000), Posting("partner:simbank:clearing", "EUR", 1000)]


def test_payment_settled_moves_clearing_to_payee_without_needing_parties() -> None:
    assert postings_for(settled("p1", 1000, payee="carol", partner="bank2"), None) == [
        Posting("partner:bank2:clearing", "EUR", -1000), Posting("customer:carol:available", "EUR", 1000)]


def test_payment_refunded_moves_payee_available_back_to_payer() -> None:
    assert postings_for(refunded("p1", 400), PARTIES) == [
        Posting("customer:bob:available", "EUR", -400), Posting("customer:alice:available", "EUR", 400)]


def test_events_that_move_no_money_post_nothing() -> None:
    assert postings_for(initiated("p1"), None) == []
    assert entry_for(initiated("p1"), None) is None


def test_posting_event_of_an_unknown_payment_raises_missing_parties() -> None:
    with pytest.raises(MissingPartiesError):
        postings_for(reserved("p1"), None)


def test_entry_id_is_derived_from_the_event_id() -> None:
    event = reserved("p1")
    entry = entry_for(event, PARTIES)
    assert entry is not None and entry.entry_id == entry_id_of(event.event_id)
    assert entry.source_event_id == event.event_id and entry.kind == "FundsReserved"


def test_full_lifecycle_with_full_refund_leaves_every_balance_at_zero() -> None:
    fold = LedgerFold()
    for event in [initiated("p1", 1000), reserved("p1", 1000), committed("p1", 1000), settled("p1", 1000),
                  refunded("p1", 1000)]:
        fold.apply(event, META)
    balances = {(a, c): b for a, c, b in fold.rows()["account_balances"]}
    assert set(balances.values()) == {0}
    assert len(fold.rows()["journal_entries"]) == 4


def test_fold_applies_a_repeated_event_once() -> None:
    fold = LedgerFold()
    event = reserved("p1")
    for message in [initiated("p1"), event, event]:
        fold.apply(message, META)
    assert len(fold.rows()["journal_entries"]) == 1
    assert len(fold.rows()["postings"]) == 2


amounts = st.integers(min_value=1, max_value=10**12)
currencies = st.sampled_from(["EUR", "USD", "JPY", "BHD"])


@given(st.lists(st.tuples(st.sampled_from(["reserve", "release", "commit", "settle", "refund"]), amounts, currencies),
                max_size=30))
def test_every_entry_sums_to_zero_per_currency_and_balances_sum_to_zero(
        steps: list[tuple[str, int, str]]) -> None:
    builders = {"reserve": reserved, "release": released, "commit": committed, "refund": refunded,
                "settle": settled}
    fold = LedgerFold()
    fold.apply(initiated("p1"), META)
    for kind, amount, currency in steps:
        event: Message = builders[kind]("p1", amount, currency)  # type: ignore[operator]
        fold.apply(event, META)
    per_entry: dict[tuple[object, object], int] = defaultdict(int)
    for entry_id, _line, _account, currency, amount in fold.rows()["postings"]:
        assert amount != 0
        per_entry[(entry_id, currency)] += amount  # type: ignore[operator]
    assert all(total == 0 for total in per_entry.values())
    per_currency: dict[object, int] = defaultdict(int)
    for _account, currency, balance in fold.rows()["account_balances"]:
        per_currency[currency] += balance  # type: ignore[operator]
    assert all(total == 0 for total in per_currency.values())
    assert len(fold.rows()["journal_entries"]) == len(steps)
