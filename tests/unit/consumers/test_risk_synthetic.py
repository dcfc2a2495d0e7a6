from __future__ import annotations

from datetime import UTC, datetime
from statistics import mean

from consumers.risk.features import FeatureFold
from consumers.risk.synthetic import PATTERNS, generate

START = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_same_seed_gives_the_same_traffic_and_another_seed_other_traffic() -> None:
    one = generate(seed=7, customers=60, days=10, start=START)
    assert one == generate(seed=7, customers=60, days=10, start=START)
    assert one.attempts != generate(seed=8, customers=60, days=10, start=START).attempts


def test_traffic_is_in_time_order_with_every_pattern_labelled_and_valid_money() -> None:
    traffic = generate(seed=1, customers=300, days=20, start=START, fraud_share=0.05)
    keys = [(a.at, a.payment_id) for a in traffic.attempts]
    assert keys == sorted(keys) and len(set(a.payment_id for a in traffic.attempts)) == len(keys)
    assert set(traffic.labels.values()) == set(PATTERNS)
    assert set(traffic.labels) <= {a.payment_id for a in traffic.attempts}
    assert 0.005 < len(traffic.labels) / len(keys) < 0.2
    assert all(a.amount.amount_minor > 0 and isinstance(a.amount.amount_minor, int) for a in traffic.attempts)


def test_each_pattern_shows_in_the_features_it_is_meant_to_move() -> None:
    traffic = generate(seed=3, customers=400, days=20, start=START, fraud_share=0.06)
    fold = FeatureFold()
    by_label: dict[str, list[dict[str, float]]] = {}
    for a in traffic.attempts:
        by_label.setdefault(traffic.labels.get(a.payment_id, "legit"), []).append(fold.step(a))

    def avg(label: str, name: str) -> float:
        return mean(f[name] for f in by_label[label])

    assert avg("card_testing", "payer_count_1h") > 5 * max(avg("legit", "payer_count_1h"), 0.1)
    assert avg("account_takeover", "payer_amount_zscore") > avg("legit", "payer_amount_zscore") + 2
    assert avg("account_takeover", "payer_first_time_payee") == 1
    assert avg("mule_fan_out", "payer_distinct_payees_24h") > 2 * avg("legit", "payer_distinct_payees_24h")
