"""The demo's risk part: a model trained on synthetic traffic runs in shadow beside the v1 model while the
sample payments go through, is promoted by the operator's command (recorded on risk.models), and then
declines a card-testing burst by its own score, with the features that drove each decline.

Kept apart from ops/demo.py: it trains with LightGBM (the `train` extra, which `make demo` installs).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from consumers.risk.replay import Collector
from ops.risk_models import record_change
from ops.settings import Settings
from ops.supervisor import ServiceProcess
from payments.contracts.base import SagaEvent
from payments.contracts.errors import ContractError
from payments.contracts.events import RiskAssessed
from payments.contracts.messages import InitiatePayment
from payments.money import Money
from payments.runtime.reader import committed_records, partitions_of

TRAINING: Final = {"seed": 1, "customers": 400, "days": 20, "fraud_share": 0.08}  # about 4 s on 2 cores
CARD_TESTER: Final = "acc-mallory"
BURST: Final = 6  # tiny payments to two accounts it never paid
FOLLOW_TIMEOUT_S: Final = 30.0


@dataclass(frozen=True)
class DemoModel:
    directory: Path
    version: str
    summary: str


def train_model(directory: Path) -> DemoModel:
    """Train the demo's model on seeded synthetic traffic (docs/risk.md, "Training data")."""
    from consumers.risk.synthetic import generate  # noqa: PLC0415  # LightGBM loads only for the demo
    from consumers.risk.training import examples_of, train  # noqa: PLC0415

    traffic = generate(start=datetime(2026, 1, 1, tzinfo=UTC), **TRAINING)  # type: ignore[arg-type]
    manifest = train(examples_of(traffic.attempts, traffic.labels, traffic.failures), directory, seed=1)
    m = manifest.metrics
    summary = (f"trained {manifest.version} on {len(traffic.attempts)} synthetic payments "
               f"({TRAINING['customers']} customers, {TRAINING['days']} days): AUC {m.auc:.4f}, precision "
               f"{m.precision:.4f}, recall {m.recall:.4f} at {manifest.decline_threshold_bp} bp on a hold-out of "
               f"{m.holdout_payments} payments")
    return DemoModel(directory, manifest.version, summary)


def promote(settings: Settings, risk: ServiceProcess) -> str:
    """Promote the model in shadow as an operator would (`payments risk promote`), and wait for the risk
    service to follow the recorded change."""
    recorded = record_change(settings, "promote", None, operator="demo",
                             reason="demo: promoted after a handful of payments in shadow, to show its declines")
    deadline = time.monotonic() + FOLLOW_TIMEOUT_S
    while '"event": "risk_models_changed"' not in risk.run_log():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the risk service did not follow the promotion:\n{risk.log_tail()}")
        time.sleep(0.2)
    change = recorded.change
    return (f"payments risk promote: {change.active} is the active model now (was {change.previous_active}; "
            f"recorded by {change.operator} at offset {recorded.offset} of {settings.topics.name('risk.models')})")


def card_testing_burst() -> list[InitiatePayment]:
    now = datetime.now(UTC)
    burst = []
    for n in range(BURST):
        payment_id = str(uuid.uuid4())
        burst.append(InitiatePayment(
            command_id=str(uuid.uuid4()), idempotency_key=f"demo-{payment_id}", payment_id=payment_id,
            payer_account=CARD_TESTER, payee_account=f"acc-stranger-{n % 2 + 1}",
            amount=Money.parse("1.00", "EUR"), partner="simbank", reference="demo card test", requested_at=now))
    return burst


def risk_answers(settings: Settings, payment_ids: set[str]) -> tuple[dict[str, RiskAssessed], Collector]:
    """The RiskAssessed of each of `payment_ids`, and every risk answer of the run (for the shadow counts)."""
    collector, found = Collector(), {}
    serde = settings.serde()
    topic = settings.topics.events
    for record in committed_records(settings.kafka, partitions_of(settings.kafka, [topic])):
        try:
            event = serde.decode(record.value() or b"")
        except ContractError:
            continue
        if isinstance(event, SagaEvent):
            collector.add(event)
        if isinstance(event, RiskAssessed) and event.payment_id in payment_ids:
            found[event.payment_id] = event
    return found, collector


def describe_burst(burst: list[InitiatePayment], answers: dict[str, RiskAssessed], threshold_bp: int) -> list[str]:
    lines = [f"card-testing burst from {CARD_TESTER} ({BURST} x 1.00 EUR to accounts it never paid), scored by the "
             f"promoted model (declines at {threshold_bp} bp), in the order the risk service saw them:"]
    for command in sorted(burst, key=lambda c: answers[c.payment_id].payer_seq if c.payment_id in answers else 0):
        answer = answers.get(command.payment_id)
        if answer is None:
            lines.append(f"  {command.payment_id}  no risk answer yet")
            continue
        by = "the model" if "SCORE_ABOVE_THRESHOLD" in answer.reasons else "rules" if answer.reasons else "-"
        lines.append(f"  {command.payment_id}  -> {command.payee_account:16} {answer.decision:7} "
                     f"score {answer.score_bp:5} bp by {by} ({answer.model_version}); features: count_1h "
                     f"{answer.features.get('payer_count_1h', 0):.0f}, distinct payees 24h "
                     f"{answer.features.get('payer_distinct_payees_24h', 0):.0f}")
        if answer.contributions:
            top = ", ".join(f"{c.feature} +{c.bp} bp" for c in answer.contributions)
            lines.append(f"      why: {top}")
    return lines


def describe_shadow(collector: Collector) -> list[str]:
    lines = []
    for (active, candidate), tally in sorted(collector.shadows.items()):
        lines.append(f"in shadow, {candidate} scored the {tally.payments} payments that reached risk beside {active}: "
                     f"they agreed on {tally.agreement:.0%} of them, score drift (PSI) {tally.drift:.2f} "
                     "(payments risk shadow-report; a real rollout watches this for days, not seconds)")
    return lines
