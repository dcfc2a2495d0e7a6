"""Behavioural features in the payment path, end to end: the whole command path, the risk service (the v1
model deciding, a trained gradient-boosted model in shadow beside it), funds and the partner gateway,
every one its own process.

The features the service computed online are rebuilt exactly by a replay of payments.events (the same
functions in the order the service recorded), a model trains on that replay with labels from a file, a
decline and a failure after approval reach the payer's later assessments, and the shadow model's scores
are recorded on every payment. (A trained model deciding: tests/integration/test_risk_models.py.)"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.risk.artifact import load_artifact
from ops.cli import main
from payments.contracts.events import PaymentCancelled, PaymentFailed, PaymentSettled, RiskAssessed
from payments.contracts.messages import InitiatePayment, Message
from payments.money import Money
from tests.e2e.pipeline import Pipeline, start_pipeline
from tests.support import COMMAND_PATH, make_initiate, wait_for

pytestmark = pytest.mark.e2e
TERMINAL = (PaymentSettled, PaymentFailed, PaymentCancelled)
PAYERS = ["acc-alice", "acc-bob", "acc-carol", "acc-dave", "acc-erin", "acc-frank", "acc-grace", "acc-heidi"]


@pytest.fixture(scope="module")
def scored(kafka_bootstrap: str, postgres_server_url: str, risk_model: tuple[Path, str]) -> Iterator[Pipeline]:
    processes = [["partner-sim"], *([name] for name in COMMAND_PATH), ["risk"], ["funds"], ["partner"]]
    yield from start_pipeline(kafka_bootstrap, postgres_server_url, processes,
                              PAYMENTS_RISK_MODELS_DIR=str(risk_model[0]), PAYMENTS_RISK_CANDIDATE=risk_model[1])


def _payment(payer: str, payee: str, amount: str) -> InitiatePayment:
    return make_initiate(payer_account=payer, payee_account=payee,
                         amount_minor=Money.parse(amount, "EUR").amount_minor)


def _wave(n: int) -> list[InitiatePayment]:
    """Ordinary payments between the seeded accounts, one that risk's rules decline, one that the partner
    declines, one the funds service refuses, and (every fourth) a card test from acc-mallory to a stranger."""
    wave = []
    for k in range(16):
        if k % 4 == 3:
            wave.append(_payment("acc-mallory", f"stranger-{n}-{k % 2}", "1.00"))
        else:
            payer = PAYERS[(n + k) % len(PAYERS)]
            wave.append(_payment(payer, PAYERS[(n + k + 3) % len(PAYERS)], f"{12 + 7 * k}.{n}0"))
    wave.append(_payment(PAYERS[n + 1], "acc-blocked", "5.00"))  # the rules decline it
    wave.append(_payment(PAYERS[n], "acc-sim-decline-1", "19.99"))  # the partner declines: a failure
    wave.append(_payment("acc-poor", "acc-bob", "500.00"))  # insufficient funds: a failure
    return wave


def _settle_all(pipeline: Pipeline, sent: list[InitiatePayment]) -> dict[str, list[Message]]:
    ids = {c.payment_id for c in sent}

    def done() -> dict[str, list[Message]] | None:
        events: dict[str, list[Message]] = {}
        for event in pipeline.topic("payments.events"):
            if event.payment_id in ids:
                events.setdefault(event.payment_id, []).append(event)
        finished = {pid for pid, found in events.items() if any(isinstance(e, TERMINAL) for e in found)}
        return events if finished == ids else None

    events = wait_for(done, 120, f"an outcome for each of {len(ids)} payments")
    assert events is not None
    return events


def test_online_features_are_rebuilt_by_a_replay_and_a_model_trains_on_it(
        scored: Pipeline, risk_model: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    sent: list[InitiatePayment] = []
    events: dict[str, list[Message]] = {}
    for n in range(3):  # in waves: a failure of one wave reaches its payer's assessments in the next
        wave = _wave(n)
        scored.send(*wave)
        sent += wave
        events.update(_settle_all(scored, wave))
    assessed = {pid: next(e for e in found if isinstance(e, RiskAssessed)) for pid, found in events.items()}
    assert len(assessed) == len(sent)
    assert all(a.features and a.payer_seq > 0 and a.payee_seq > 0 for a in assessed.values())
    assert {a.model_version for a in assessed.values()} == {"risk-model-v1"}
    assert {a.shadow.model_version for a in assessed.values() if a.shadow is not None} == {risk_model[1]}
    assert all(a.shadow is not None for a in assessed.values())
    assert any(a.shadow.decision == "DECLINE" for a in assessed.values() if a.shadow is not None)

    blocked = [pid for pid in assessed if _payee(sent, pid) == "acc-blocked"]
    assert len(blocked) == 3 and all(assessed[pid].reasons == ["ACCOUNT_BLOCKED"] for pid in blocked)
    later = [a for pid, a in assessed.items() if _payer(sent, pid) == _payer(sent, blocked[0])
             and a.payer_seq > assessed[blocked[0]].payer_seq]
    assert later and all(a.features["payer_declines_7d"] >= 1.0 for a in later)
    poor = sorted((a for pid, a in assessed.items() if _payer(sent, pid) == "acc-poor"), key=lambda a: a.payer_seq)
    assert [a.payer_seq for a in poor] == [1, 2, 3]
    # A payment risk approved that failed afterwards is named once, in a later assessment of the same payer
    failed_after_approval = {pid for pid, found in events.items()
                             if any(isinstance(e, PaymentFailed) and e.stage != "RISK" for e in found)}
    named = [(pid, failed) for pid, a in assessed.items() for failed in a.failures_before]
    assert failed_after_approval and named, (failed_after_approval, named)
    assert len({failed for _, failed in named}) == len(named)
    assert all(failed in failed_after_approval and _payer(sent, failed) == _payer(sent, pid) for pid, failed in named)
    assert all(assessed[pid].features["payer_failures_7d"] >= 1.0 for pid, _ in named)

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", scored.bootstrap)
    monkeypatch.setenv("PAYMENTS_TOPIC_PREFIX", scored.topics.prefix)
    capsys.readouterr()
    assert main(["risk", "replay"]) == 0
    out = capsys.readouterr().out
    assert f"features rebuilt for {len(sent)}; equal to those the service recorded for {len(sent)} of {len(sent)}" \
        in out, out

    labels = tmp_path / "chargebacks.csv"
    with labels.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["payment_id", "reason"])
        writer.writerows([c.payment_id, "card testing"] for c in sent if c.payer_account == "acc-mallory")
    out_dir = tmp_path / "trained"
    assert main(["risk", "train", "--from", "events", "--labels", str(labels), "--out", str(out_dir),
                 "--trees", "20"]) == 0
    captured = capsys.readouterr()
    assert f"trained on {len(sent)} payments replayed from {scored.topics.events}, 12 of the 12 labelled" \
        in captured.out, captured
    assert f"equal to those the service recorded for {len(sent)} of {len(sent)}" in captured.err
    (manifest,) = out_dir.glob("*.json")
    trained = load_artifact(manifest).manifest
    assert trained.metrics.holdout_fraud >= 1 and trained.metrics.holdout_payments >= 8

    assert main(["risk", "shadow-report"]) == 0
    report = capsys.readouterr().out
    assert f"{risk_model[1]} in shadow of risk-model-v1: {len(sent)} payments, agreement" in report, report


def _payer(sent: list[InitiatePayment], payment_id: str) -> str:
    return next(c.payer_account for c in sent if c.payment_id == payment_id)


def _payee(sent: list[InitiatePayment], payment_id: str) -> str:
    return next(c.payee_account for c in sent if c.payment_id == payment_id)
