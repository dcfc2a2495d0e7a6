"""`payments risk train`: train a risk model and write its verified artifact (docs/risk.md).

Today it trains on seeded synthetic traffic (consumers/risk/synthetic.py) through the same feature fold
the risk service runs; `--json` prints the manifest, otherwise one line of metrics.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ops.settings import Settings


def _train(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.risk.synthetic import generate  # noqa: PLC0415  # LightGBM loads only for this command
    from consumers.risk.training import examples_of, train  # noqa: PLC0415

    start = datetime.fromisoformat(args.start).replace(tzinfo=UTC)
    traffic = generate(seed=args.seed, customers=args.customers, days=args.days, start=start,
                       fraud_share=args.fraud_share)
    manifest = train(examples_of(traffic.attempts, traffic.labels), Path(args.out), seed=args.seed)
    if args.json:
        path = Path(args.out) / f"{manifest.version}.json"
        print(json.dumps({**manifest.model_dump(mode="json"), "path": str(path)}))
        return 0
    m = manifest.metrics
    print(f"{manifest.version}: AUC {m.auc:.4f}, precision {m.precision:.4f} and recall {m.recall:.4f} at "
          f"{manifest.decline_threshold_bp} bp, on a hold-out of {m.holdout_payments} payments "
          f"({m.holdout_fraud} fraudulent) from {manifest.holdout_from:%Y-%m-%d %H:%M}; "
          f"trained on {len(traffic.attempts)} synthetic payments of {args.customers} customers over {args.days} days; "
          f"written to {Path(args.out) / manifest.version}.{{onnx,json}}")
    return 0


def add_parser(commands: Any) -> None:  # argparse's subparsers action: its class is private
    """Add `payments risk` to the CLI's subcommands (ops.cli.OPERATOR_COMMANDS)."""
    parser = commands.add_parser("risk", help="the risk model: train it")
    actions = parser.add_subparsers(dest="action", required=True)
    train = actions.add_parser("train", help="train a gradient-boosted model on seeded synthetic traffic")
    train.add_argument("--customers", type=int, default=2_000)
    train.add_argument("--days", type=int, default=30)
    train.add_argument("--seed", type=int, default=1)
    train.add_argument("--fraud-share", type=float, default=0.03, help="share of customers hit by a fraud pattern")
    train.add_argument("--start", default="2026-01-01", help="the first day of the traffic (UTC)")
    train.add_argument("--out", default="models", help="directory for <version>.onnx and <version>.json")
    train.add_argument("--json", action="store_true", help="print the manifest as JSON")
    train.set_defaults(handler=_train)
