"""From payments.events to training examples: the events the saga records are collected into what the
replay needs, the replay's report, labels files, and failures in synthetic traffic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from consumers.risk.replay import Collector, replay, skew
from consumers.risk.scoring import RiskModelError
from consumers.risk.synthetic import generate
from consumers.risk.training import examples_of, read_labels
from orchestrator.ids import event_id
from payments.contracts.events import PaymentInitiated, PaymentSettled, RiskAssessed
from payments.contracts.participants import AssessRisk, RiskAssessmentCompleted
from tests.unit.consumers.helpers import NOW
from tests.unit.consumers.risk_harness import Harness, assess_risk, later
from tests.unit.consumers.test_risk import v1_logic


def _events(command: AssessRisk, reply: RiskAssessmentCompleted) -> list[object]:
    """What the saga writes of one payment: PaymentInitiated (at the features' time), RiskAssessed, an end."""
    assert command.initiated_at is not None
    common = {"payment_id": command.payment_id, "causation_id": "c"}
    return [
        PaymentInitiated(**common, event_id=event_id(command.payment_id, 1, "c"), seq=1,
                         occurred_at=command.initiated_at, payer_account=command.payer_account,
                         payee_account=command.payee_account, amount=command.amount, partner=command.partner,
                         idempotency_key="k", request_hash="h"),
        RiskAssessed(**common, event_id=event_id(command.payment_id, 2, "c"), seq=2,
                     occurred_at=command.initiated_at + timedelta(milliseconds=30),
                     **reply.model_dump(include={"score_bp", "decision", "reasons", "model_version", "features",
                                                 "contributions", "payer_seq", "payee_seq", "failures_before",
                                                 "shadow"})),
        PaymentSettled(**common, event_id=event_id(command.payment_id, 3, "c"), seq=3,
                       occurred_at=command.initiated_at + timedelta(seconds=1), amount=command.amount,
                       partner=command.partner, partner_reference="r", payer_account=command.payer_account,
                       payee_account=command.payee_account),
    ]


def test_the_collector_finds_in_the_saga_events_what_the_replay_needs() -> None:
    harness = Harness(v1_logic())
    commands = [assess_risk(f"pay-{n}", payer=f"acc-{n % 3}", payee=f"acc-{(n + 1) % 3}", at=later(NOW, 7 * n))
                for n in range(12)]
    collector = Collector()
    for command in commands:
        reply = harness.assess(command)
        for event in _events(command, reply):
            collector.add(event)  # type: ignore[arg-type]
    assert collector.assessed() == harness.recorded()
    report = skew(replay(collector.assessed()))
    assert (report.payments, report.rebuilt, report.compared, report.equal, report.exact) == (12, 12, 12, 12, True)


def test_an_answer_without_its_initiation_in_the_log_is_left_out_and_a_v1_answer_is_counted() -> None:
    harness = Harness(v1_logic())
    command = assess_risk("pay-1", at=NOW)
    initiated, assessed, _ = _events(command, harness.assess(command))
    collector = Collector()
    collector.add(assessed)  # type: ignore[arg-type]  # its PaymentInitiated fell out of the log
    assert collector.assessed() == []
    v1 = RiskAssessed.model_validate({**assessed.model_dump(), "features": {}, "payer_seq": 0,  # type: ignore[attr-defined]
                                      "payee_seq": 0})
    collector.add(initiated)  # type: ignore[arg-type]
    collector.add(v1)
    assert collector.v1_answers == 1 and replay(collector.assessed())[0].features is None


def test_differing_features_are_reported_with_their_payment_ids() -> None:
    harness = Harness(v1_logic())
    for n in range(3):
        harness.assess(assess_risk(f"pay-{n}", at=later(NOW, 60 * n)))
    recorded = harness.recorded()
    tampered = recorded[2].__class__(**{**recorded[2].__dict__, "recorded": {**recorded[2].recorded,
                                                                              "payer_count_1h": 99.0}})
    report = skew(replay([*recorded[:2], tampered]))
    assert (report.compared, report.equal, report.differing, report.exact) == (3, 2, ("pay-2",), False)


def test_a_labels_file_names_the_fraudulent_payments_by_id(tmp_path: Path) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("payment_id,reason,reported_at\npay-1,chargeback,2026-01-02\n pay-2 ,fraud,\n,,\n")
    assert read_labels(labels) == {"pay-1", "pay-2"}
    labels.write_text("id,reason\npay-1,chargeback\n")
    with pytest.raises(RiskModelError, match="no payment_id column"):
        read_labels(labels)
    with pytest.raises(RiskModelError, match="cannot read"):
        read_labels(tmp_path / "missing.csv")


def test_synthetic_failures_are_known_after_their_payment_and_reach_the_payers_features() -> None:
    traffic = generate(seed=4, customers=300, days=10, start=datetime(2026, 1, 1, tzinfo=UTC), fraud_share=0.1)
    at = {a.payment_id: a.at for a in traffic.attempts}
    assert traffic.failures and all(known > at[pid] for pid, known in traffic.failures.items())
    card_tests = [pid for pid, pattern in traffic.labels.items() if pattern == "card_testing"]
    assert sum(pid in traffic.failures for pid in card_tests) > 0.4 * len(card_tests)
    with_failures = examples_of(traffic.attempts, traffic.labels, traffic.failures)
    without = examples_of(traffic.attempts, traffic.labels)
    assert max(e.features["payer_failures_7d"] for e in with_failures) > 0
    assert max(e.features["payer_failures_7d"] for e in without) == 0
