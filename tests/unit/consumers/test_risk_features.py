from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.risk.features import (
    COUNTERPARTIES_MAX,
    FEATURES,
    NEVER_S,
    RECENT_MAX,
    AccountHistory,
    Attempt,
    FeatureFold,
    features_of,
    record,
    record_outcome,
    vector,
)
from payments.money import Money

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
EMPTY = AccountHistory()


def attempt(n: int, *, minutes: float = 0, payer: str = "alice", payee: str = "bob", amount: str = "10.00",
            currency: str = "EUR", partner: str = "acme") -> Attempt:
    return Attempt(payment_id=f"pay-{n}", at=T0 + timedelta(minutes=minutes), payer=payer, payee=payee,
                   amount=Money.parse(amount, currency), partner=partner)


def fold(attempts: list[Attempt]) -> tuple[dict[str, AccountHistory], list[dict[str, float]]]:
    """Features before each attempt, then the attempt applied (FeatureFold, the replay's path)."""
    fold = FeatureFold()
    seen = [fold.step(a) for a in attempts]
    return fold.histories, seen


def test_a_first_payment_has_no_history() -> None:
    features = features_of(EMPTY, EMPTY, attempt(1, amount="99.00"))
    assert list(features) == list(FEATURES)
    assert features["amount_log"] == math.log1p(99.0)
    assert features["payer_count_24h"] == 0 and features["payee_count_24h"] == 0
    assert features["payer_first_time_payee"] == 1 and features["payer_new_currency"] == 1
    assert features["payer_log_seconds_since_last"] == math.log1p(NEVER_S)
    assert features["payer_amount_zscore"] == 0 and features["payer_age_log_days"] == 0


def test_windows_count_only_the_payments_before_and_inside_them() -> None:
    attempts = [attempt(1, minutes=0), attempt(2, minutes=30, payee="carol"),
                attempt(3, minutes=24 * 60 + 10, payee="dave"), attempt(4, minutes=24 * 60 + 20)]
    _, seen = fold(attempts)
    fourth = seen[3]
    assert fourth["payer_count_1h"] == 1           # pay-3, ten minutes before
    assert fourth["payer_count_24h"] == 2          # pay-2 (23 h 50 min before) and pay-3; pay-1 is 24 h 20 min old
    assert fourth["payer_count_7d"] == 3
    assert fourth["payer_distinct_payees_7d"] == 3
    assert fourth["payer_first_time_payee"] == 0   # bob was paid by pay-1
    assert fourth["payee_count_24h"] == 0          # bob's pay-1 is past 24 h
    assert fourth["payer_log_seconds_since_last"] == math.log1p(600)
    assert fourth["payer_amount_log_24h"] == math.log1p(20.0)


def test_amounts_are_compared_in_major_units_of_their_own_currency() -> None:
    eur, jpy = attempt(1, amount="10.00"), attempt(2, amount="10", currency="JPY")
    assert features_of(EMPTY, EMPTY, eur)["amount_log"] == features_of(EMPTY, EMPTY, jpy)["amount_log"]
    _, seen = fold([eur, jpy, attempt(3, minutes=1, amount="5.00")])
    assert seen[2]["payer_amount_log_24h"] == math.log1p(10.0)  # the JPY payment is not summed with euros
    assert seen[1]["payer_new_currency"] == 1 and seen[2]["payer_new_currency"] == 0


def test_an_unusual_amount_stands_out_against_the_payers_history() -> None:
    usual = [attempt(n, minutes=n * 60, amount=f"{20 + n}.00") for n in range(10)]
    _, seen = fold([*usual, attempt(99, minutes=700, amount="5000.00")])
    assert seen[-1]["payer_amount_zscore"] > 5
    assert abs(seen[5]["payer_amount_zscore"]) < 3


def test_fan_in_to_one_payee_counts_distinct_payers() -> None:
    attempts = [attempt(n, minutes=n, payer=f"payer-{n % 7}", payee="mule") for n in range(20)]
    _, seen = fold(attempts)
    assert seen[-1]["payee_count_1h"] == 19 and seen[-1]["payee_distinct_payers_1h"] == 7


def test_outcomes_count_as_declines_and_failures_within_seven_days() -> None:
    histories, _ = fold([attempt(1), attempt(2, minutes=1), attempt(3, minutes=2)])
    payer = record_outcome(histories["out:alice"], "pay-1", "DECLINED")
    payer = record_outcome(payer, "pay-2", "FAILED")
    payer = record_outcome(payer, "pay-unknown", "FAILED")  # left the window, or never seen: no change
    now = features_of(payer, EMPTY, attempt(4, minutes=3))
    assert (now["payer_declines_7d"], now["payer_failures_7d"]) == (1, 1)
    later = features_of(payer, EMPTY, attempt(5, minutes=8 * 24 * 60))
    assert (later["payer_declines_7d"], later["payer_failures_7d"], later["payer_count_7d"]) == (0, 0, 0)


def test_the_same_payment_applied_twice_counts_once() -> None:
    once, _ = fold([attempt(1), attempt(2, minutes=1)])
    twice, _ = fold([attempt(1), attempt(1), attempt(2, minutes=1)])
    assert once == twice


def test_history_stays_bounded_for_a_busy_account() -> None:
    history = EMPTY
    for n in range(RECENT_MAX + COUNTERPARTIES_MAX + 50):
        history = record(history, attempt(n, minutes=n / 100, payee=f"shop-{n}"), "payer")
    assert len(history.recent) == RECENT_MAX
    assert len(history.counterparties) == COUNTERPARTIES_MAX
    assert history.count == RECENT_MAX + COUNTERPARTIES_MAX + 50
    assert features_of(history, EMPTY, attempt(10**6, minutes=10))["payer_count_1h"] == RECENT_MAX


def test_vector_is_in_feature_order() -> None:
    features = features_of(EMPTY, EMPTY, attempt(1))
    assert vector(features) == [features[name] for name in FEATURES]


accounts = st.sampled_from(["a", "b", "c", "d"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(accounts, accounts, st.integers(1, 10**7), st.integers(0, 600)), max_size=40))
def test_state_that_goes_through_json_gives_the_same_features(rows: list[tuple[str, str, int, int]]) -> None:
    """The store keeps histories as JSON between records: a restart must not change any feature."""
    attempts, minutes = [], 0
    for n, (payer, payee, minor, gap) in enumerate(rows):
        minutes += gap
        attempts.append(Attempt(f"pay-{n}", T0 + timedelta(minutes=minutes), payer, payee,
                                Money(amount_minor=minor, currency="EUR"), "acme"))
    _, direct = fold(attempts)
    histories: dict[str, str] = {}
    through_json = []
    for a in attempts:
        outgoing = AccountHistory.model_validate_json(histories.get(f"out:{a.payer}", "{}"))
        incoming = AccountHistory.model_validate_json(histories.get(f"in:{a.payee}", "{}"))
        through_json.append(features_of(outgoing, incoming, a))
        histories[f"out:{a.payer}"] = record(outgoing, a, "payer").model_dump_json()
        incoming = AccountHistory.model_validate_json(histories.get(f"in:{a.payee}", "{}"))
        histories[f"in:{a.payee}"] = record(incoming, a, "payee").model_dump_json()
    assert through_json == direct
