"""Risk scoring time per payment: the behavioural features and the ONNX model, against the v1 rules+logistic.

Trains a model on seeded synthetic traffic (as `payments risk train` does), then, for each of
`--payments` payments of fresh traffic in log order, times, on one thread:

  * features: the payer's and payee's histories decoded from JSON (as the state store holds them),
    the features computed, both histories updated and encoded again;
  * model: one onnxruntime call on the feature row;
  * explain: the batched call that gives each feature's contribution (done for declines only);
  * baseline, in the same run: the v1 model (rules plus a logistic regression over a JSON file),
    `consumers.risk.scoring.assess`, the scorer the service has today.

Figures only: nothing here asserts a speed.

    .venv/bin/python benchmarks/risk_scoring.py --payments 20000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from consumers.risk.artifact import load_artifact
from consumers.risk.features import AccountHistory, Attempt, features_of, record
from consumers.risk.scoring import assess, load_model
from consumers.risk.synthetic import generate
from consumers.risk.training import examples_of, train


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50, p99 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {p50 * 1e6:7.1f} µs   p99 {p99 * 1e6:7.1f} µs   mean {statistics.fmean(ordered) * 1e6:7.1f} µs"


def _timed(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payments", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=2_000, help="customers in the training traffic")
    args = parser.parse_args()

    start = datetime(2026, 1, 1, tzinfo=UTC)
    training = generate(seed=1, customers=args.customers, days=30, start=start)
    with tempfile.TemporaryDirectory() as out:
        manifest = train(examples_of(training.attempts, training.labels), Path(out))
        artifact = load_artifact(Path(out) / f"{manifest.version}.json")
    live = generate(seed=2, customers=max(args.customers // 2, 100), days=7, start=start).attempts[:args.payments]
    v1 = load_model()
    store: dict[str, str] = {}
    feature_s, model_s, explain_s, total_s, baseline_s = [], [], [], [], []
    declines = 0

    def features_step(a: Attempt) -> dict[str, float]:
        payer = AccountHistory.model_validate_json(store.get(f"out:{a.payer}", "{}"))
        payee = AccountHistory.model_validate_json(store.get(f"in:{a.payee}", "{}"))
        values = features_of(payer, payee, a)
        store[f"out:{a.payer}"] = record(payer, a, "payer").model_dump_json()
        store[f"in:{a.payee}"] = record(payee, a, "payee").model_dump_json()
        return values

    for a in live:
        began = time.perf_counter()
        values = features_step(a)
        feature_s.append(time.perf_counter() - began)
        t = time.perf_counter()
        score = artifact.score(values)
        model_s.append(time.perf_counter() - t)
        if score.score_bp >= manifest.decline_threshold_bp:
            declines += 1
            explain_s.append(_timed(lambda v=values: artifact.score(v, explain=True)))  # type: ignore[misc]
        total_s.append(time.perf_counter() - began)
        baseline_s.append(_timed(lambda a=a: assess(v1, a.payer, a.payee, a.amount)))  # type: ignore[misc]

    print(f"risk scoring, {len(live)} payments of synthetic traffic ({manifest.version}, "
          f"{len(manifest.features)} features, AUC {manifest.metrics.auc}), one thread on this machine:")
    print(f"  features (decode, compute, update, encode) {_percentiles(feature_s)}")
    print(f"  model (onnxruntime)                        {_percentiles(model_s)}")
    if explain_s:
        print(f"  {f'explain ({declines} declines)':43}{_percentiles(explain_s)}")
    print(f"  per payment, all of the above              {_percentiles(total_s)}")
    print(f"  baseline: v1 rules + logistic regression   {_percentiles(baseline_s)}")
    ratio = statistics.fmean(total_s) / statistics.fmean(baseline_s)
    print(f"  the model path costs {ratio:.1f}x the v1 scorer per payment (mean); target p99 <= 2 ms")


if __name__ == "__main__":
    main()
