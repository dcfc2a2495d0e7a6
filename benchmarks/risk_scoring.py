"""Risk scoring time per payment in the risk service's own decision path, against the v1 scorer alone.

Trains a model on seeded synthetic traffic (as `payments risk train --from synthetic` does), then drives
`--payments` payments of fresh traffic, in log order, through the service's Logic (consumers/risk/logic.py)
on one thread, as its loop does, and times per payment:

  * payee stage: `decide` on the AssessRisk (the payee's features, its history updated), and the JSON
    snapshot of the changed state the checkpoint writes to the changelog;
  * payer stage: `decide` on the ScorePayment (the payer's features, rules, the model, the explanation
    of a decline, the payer's history updated), and its snapshot;
  * per payment: both stages.

Then the replay (consumers/risk/replay.py) of the first set-up's answers as payments.events records them:
payments per second and memory per payment, what rebuilding a long history for training costs.

Each in three set-ups of the same run: the trained model deciding; the same with a second trained model
in shadow; the v1 model deciding (the same features computed and recorded). The baseline, in the same run,
is the v1 scorer alone (rules + logistic regression, no features, no state): what the service did per
payment before it kept behavioural features. The snapshot is taken once per decision here, an upper bound:
the loop writes one per changed key per transaction. Figures only: nothing here asserts a speed.

    .venv/bin/python benchmarks/risk_scoring.py --payments 20000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from consumers.risk.artifact import load_artifact
from consumers.risk.features import Attempt
from consumers.risk.logic import AccountRisk, RiskLogic
from consumers.risk.models import GbmScorer, LogisticScorer, Models
from consumers.risk.replay import Assessed, replay, skew
from consumers.risk.scoring import features_of as v1_features
from consumers.risk.scoring import load_model, load_rules, rule_reasons, score_bp
from consumers.risk.synthetic import generate
from consumers.risk.training import examples_of, train
from payments.contracts.envelope import Envelope
from payments.contracts.messages import Message
from payments.contracts.participants import AssessRisk, RiskAssessmentCompleted
from payments.contracts.topics import RISK_COMMANDS, RISK_SCORING
from payments.money import exponent
from payments.runtime.logic import Incoming


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50, p99 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {p50 * 1e6:7.1f} µs   p99 {p99 * 1e6:7.1f} µs   mean {statistics.fmean(ordered) * 1e6:7.1f} µs"


def _incoming(message: Message, topic: str, key: str) -> Incoming:
    envelope = Envelope(id=message.message_id, type=message.AVRO_NAME, source="bench", time=datetime.now(UTC),
                        content_type="application/avro")
    return Incoming(topic=topic, partition=0, offset=0, key=key, message=message, envelope=envelope)


def _command(a: Attempt, n: int) -> AssessRisk:
    return AssessRisk(payment_id=a.payment_id, command_id=f"bench-{n}", issued_at=a.at, payer_account=a.payer,
                      payee_account=a.payee, amount=a.amount, partner=a.partner, initiated_at=a.at, attempt=1)


def run(logic: RiskLogic, live: tuple[Attempt, ...],
        recorded: list[Assessed] | None = None) -> dict[str, list[float]]:
    """Every payment through both stages; the time of each, snapshot included. Returns the samples; what
    RiskAssessed would record of each answer goes to `recorded`."""
    states: dict[str, AccountRisk] = {}
    timings: dict[str, list[float]] = {"payee": [], "payer": [], "total": []}
    declines = 0
    for n, a in enumerate(live):
        command = _command(a, n)
        began = time.perf_counter()
        first = logic.decide(states.get(a.payee), _incoming(command, RISK_COMMANDS, a.payee), a.at)
        assert first.state is not None
        logic.encode_state(first.state)
        states[a.payee] = first.state
        between = time.perf_counter()
        onward = first.outgoing[0].message
        second = logic.decide(states.get(a.payer), _incoming(onward, RISK_SCORING, a.payer), a.at)
        assert second.state is not None
        logic.encode_state(second.state)
        states[a.payer] = second.state
        done = time.perf_counter()
        reply = second.outgoing[0].message
        assert isinstance(reply, RiskAssessmentCompleted)
        declines += reply.decision == "DECLINE"
        if recorded is not None:
            at = command.initiated_at or a.at  # the wire's milliseconds, as PaymentInitiated records them
            recorded.append(Assessed(Attempt(a.payment_id, at, a.payer, a.payee, a.amount, a.partner),
                                     reply.decision, reply.payer_seq, reply.payee_seq,
                                     tuple(reply.failures_before), reply.features, reply.model_version))
        timings["payee"].append(between - began)
        timings["payer"].append(done - between)
        timings["total"].append(done - began)
    timings["declines"] = [float(declines)]
    return timings


def _v1_alone(live: tuple[Attempt, ...]) -> list[float]:
    rules, model = load_rules(), load_model()
    samples = []
    for a in live:
        began = time.perf_counter()
        reasons = rule_reasons(rules, a.payer, a.payee, a.amount)
        score = score_bp(model, v1_features(model, a.payer, a.payee, a.amount, exponent(a.amount.currency)))
        if score >= model.decline_threshold_bp:
            reasons.append("SCORE_ABOVE_THRESHOLD")
        samples.append(time.perf_counter() - began)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payments", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=2_000, help="customers in the training traffic")
    args = parser.parse_args()

    start = datetime(2026, 1, 1, tzinfo=UTC)
    trained = []
    with tempfile.TemporaryDirectory() as out:
        for seed in (1, 3):  # the active model and a candidate for the shadow set-up
            traffic = generate(seed=seed, customers=args.customers, days=30, start=start)
            manifest = train(examples_of(traffic.attempts, traffic.labels, traffic.failures), Path(out), seed=seed)
            trained.append(GbmScorer(load_artifact(Path(out) / f"{manifest.version}.json")))
    live = generate(seed=2, customers=max(args.customers // 2, 100), days=7, start=start).attempts[:args.payments]
    rules = load_rules()
    setups: dict[str, Callable[[], RiskLogic]] = {
        f"trained model ({trained[0].version})": lambda: RiskLogic(rules, Models(trained[0])),
        "trained model, a second in shadow": lambda: RiskLogic(rules, Models(trained[0], trained[1])),
        "v1 model (features still kept)": lambda: RiskLogic(rules, Models(LogisticScorer(load_model()))),
    }
    baseline = _v1_alone(live)
    print(f"risk scoring in the service's decision path, {len(live)} payments of synthetic traffic in log order "
          f"({len(trained[0].artifact.manifest.features)} features, one thread, this machine; snapshot per decision):")
    means = {}
    recorded: list[Assessed] = []
    for name, build in setups.items():
        timings = run(build(), live, recorded if not recorded else None)
        means[name] = statistics.fmean(timings["total"])
        print(f"  {name} ({int(timings['declines'][0])} declines):")
        print(f"    payee stage (decide + snapshot)  {_percentiles(timings['payee'])}")
        print(f"    payer stage (decide + snapshot)  {_percentiles(timings['payer'])}")
        print(f"    per payment, both stages         {_percentiles(timings['total'])}")
    print(f"  baseline: the v1 scorer alone        {_percentiles(baseline)}")
    first = next(iter(means))
    print(f"  per payment (mean), the trained model costs {means[first] / statistics.fmean(baseline):.1f}x the v1 "
          f"scorer alone and {means[first] / means['v1 model (features still kept)']:.2f}x the v1 model with the "
          "same features kept; target p99 <= 2 ms")
    tracemalloc.start()
    began = time.perf_counter()
    report = skew(replay(recorded))
    elapsed = time.perf_counter() - began
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"  replay of the recorded answers: {report.rebuilt} payments in {elapsed:.2f} s, "
          f"{report.rebuilt / elapsed:,.0f} payments/s, peak {peak / len(recorded) / 1024:.1f} KiB per payment "
          f"(records in, histories, features out); equal to the online features for {report.equal} of "
          f"{report.compared}")


if __name__ == "__main__":
    main()
