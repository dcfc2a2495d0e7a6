"""`payments risk`: train a risk model, check the features online against a replay, and ship a model safely.

- `train --from events --labels FILE`: replay `payments.events` through the risk service's own feature
  functions (consumers/risk/replay.py), check the rebuilt features against those the service recorded,
  join the labels (confirmed fraud, chargebacks) and train; `train --from synthetic`: the same fold over
  seeded synthetic traffic (consumers/risk/synthetic.py). Either writes a verified artifact.
- `replay`: rebuild and compare only (no training): is what the service computed reproducible?
- `models`: which model decides and which runs in shadow, and every recorded change.
- `shadow VERSION`, `unshadow`, `promote [VERSION]`, `rollback`: one operator command each, recorded on
  `risk.models` after the model loads and verifies as the service will load it (ops/risk_models.py).
- `shadow-report`: the candidate's agreement and score drift (PSI) against the active model, from the
  scores every RiskAssessed recorded (all instances, since the log began).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from consumers.risk.deployment import current
from consumers.risk.replay import Collector, SkewReport, replay, skew
from consumers.risk.scoring import RiskModelError
from ops.risk_models import configured, read_changes, record_change
from ops.settings import Settings
from payments.contracts.base import SagaEvent
from payments.contracts.errors import ContractError
from payments.runtime.reader import committed_records, partitions_of

READ_TIMEOUT_S = 1_800.0


def read_events(settings: Settings, out: TextIO | None = None) -> Collector:
    """Every committed record of payments.events up to its end now, into a Collector (undecodable ones skipped,
    counted on `out`)."""
    topic = settings.topics.events
    serde, collector, undecodable, shown = settings.serde(), Collector(), 0, time.monotonic()
    for record in committed_records(settings.kafka, partitions_of(settings.kafka, [topic]), timeout_s=READ_TIMEOUT_S):
        value = record.value()
        if value is None:
            continue
        try:
            event = serde.decode(value)
        except ContractError:
            undecodable += 1
            continue
        if isinstance(event, SagaEvent):
            collector.add(event)
        if out is not None and time.monotonic() - shown > 1.0:
            shown = time.monotonic()
            print(f"read {collector.events} events", file=out, flush=True)
    if undecodable and out is not None:
        print(f"{undecodable} records of {topic} could not be decoded and were skipped", file=out)
    return collector


def describe(report: SkewReport, topic: str) -> str:
    line = (f"replayed {report.payments} payments with a risk answer from {topic}: features rebuilt for "
            f"{report.rebuilt}; equal to those the service recorded for {report.equal} of {report.compared}")
    if report.differing:
        line += (f"; {report.compared - report.equal} differ (an earlier payment of the same account is missing "
                 f"from the log, docs/risk.md), first: {', '.join(report.differing)}")
    return line


def _train(args: argparse.Namespace, settings: Settings) -> int:
    from consumers.risk.training import Example, examples_of, read_labels, train  # noqa: PLC0415  # LightGBM

    if args.source == "synthetic":
        from consumers.risk.synthetic import generate  # noqa: PLC0415

        start = datetime.fromisoformat(args.start).replace(tzinfo=UTC)
        traffic = generate(seed=args.seed, customers=args.customers, days=args.days, start=start,
                           fraud_share=args.fraud_share)
        examples = examples_of(traffic.attempts, traffic.labels, traffic.failures)
        source = f"{len(traffic.attempts)} synthetic payments of {args.customers} customers over {args.days} days"
    else:
        if args.labels is None:
            print("payments risk train --from events: name the labels file (--labels FILE)", file=sys.stderr)
            return 2
        labels = read_labels(Path(args.labels))
        replayed = replay(read_events(settings, sys.stderr).assessed())
        report = skew(replayed)
        print(describe(report, settings.topics.events), file=sys.stderr)
        examples = [Example(r.assessed.attempt.at, r.features, r.payment_id in labels)
                    for r in replayed if r.features is not None]
        if not examples:
            raise RiskModelError(f"no payment in {settings.topics.events} has features to train on (a risk "
                                 "service before v2 recorded none)")
        found = sum(r.payment_id in labels for r in replayed if r.features is not None)
        source = (f"{len(examples)} payments replayed from {settings.topics.events}, {found} of the "
                  f"{len(labels)} labelled fraudulent found among them")
    manifest = train(examples, Path(args.out), seed=args.seed, trees=args.trees)
    if args.json:
        path = Path(args.out) / f"{manifest.version}.json"
        print(json.dumps({**manifest.model_dump(mode="json"), "path": str(path)}))
        return 0
    m = manifest.metrics
    print(f"{manifest.version}: AUC {m.auc:.4f}, precision {m.precision:.4f} and recall {m.recall:.4f} at "
          f"{manifest.decline_threshold_bp} bp, on a hold-out of {m.holdout_payments} payments "
          f"({m.holdout_fraud} fraudulent) from {manifest.holdout_from:%Y-%m-%d %H:%M}; trained on {source}; "
          f"written to {Path(args.out) / manifest.version}.{{onnx,json}}")
    return 0


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    collector = read_events(settings, sys.stderr)
    report = skew(replay(collector.assessed()))
    print(describe(report, settings.topics.events))
    if collector.v1_answers:
        print(f"{collector.v1_answers} answers came from a risk service that recorded no features (v1)")
    return 0 if report.exact else 1


def _models(args: argparse.Namespace, settings: Settings) -> int:
    changes, _ = read_changes(settings)
    now = current(changes, configured(settings))
    source = "recorded" if now.changed_by is not None else "the settings' (PAYMENTS_RISK_MODEL), nothing recorded"
    print(f"active:    {now.active}   ({source})")
    print(f"candidate: {now.candidate or '-'}")
    print(f"rollback:  {now.previous_active or '-'}")
    for change in changes:
        print(f"{change.at:%Y-%m-%dT%H:%M:%SZ}  {change.action:9} active={change.active} "
              f"candidate={change.candidate or '-'}  by {change.operator}: {change.reason}")
    return 0


def _change(args: argparse.Namespace, settings: Settings) -> int:
    recorded = record_change(settings, args.action, getattr(args, "version", None), reason=args.reason,
                             operator=args.operator)
    change = recorded.change
    print(f"{change.action}: active {change.active}, candidate {change.candidate or '-'} (rollback returns to "
          f"{change.previous_active or '-'}); recorded at offset {recorded.offset} of "
          f"{settings.topics.name('risk.models')}; every risk instance follows within seconds")
    return 0


def _shadow_report(args: argparse.Namespace, settings: Settings) -> int:
    collector = read_events(settings, sys.stderr)
    if not collector.shadows:
        print(f"no payment in {settings.topics.events} was scored by a candidate in shadow")
        return 0
    for (active, candidate), tally in sorted(collector.shadows.items()):
        both = tally.pairs.get((True, True), 0)
        only_candidate, only_active = tally.pairs.get((False, True), 0), tally.pairs.get((True, False), 0)
        print(f"{candidate} in shadow of {active}: {tally.payments} payments, agreement {tally.agreement:.4f} "
              f"(both decline {both}, only the candidate {only_candidate}, only the active {only_active}), "
              f"PSI {tally.drift:.4f}")
    return 0


def add_parser(commands: Any) -> None:  # argparse's subparsers action: its class is private
    """Add `payments risk` to the CLI's subcommands (ops.cli.OPERATOR_COMMANDS)."""
    parser = commands.add_parser("risk", help="the risk model: train it, check its features, ship it")
    actions = parser.add_subparsers(dest="action", required=True)

    train = actions.add_parser("train", help="train a gradient-boosted model on replayed payments.events or on "
                               "seeded synthetic traffic")
    train.add_argument("--from", dest="source", choices=["events", "synthetic"], required=True,
                       help="events: replay payments.events, labels from --labels; synthetic: generate traffic")
    train.add_argument("--labels", help="events: CSV with a payment_id column, the confirmed fraudulent payments")
    train.add_argument("--customers", type=int, default=2_000, help="synthetic: customers")
    train.add_argument("--days", type=int, default=30, help="synthetic: days of traffic")
    train.add_argument("--fraud-share", type=float, default=0.03,
                       help="synthetic: share of customers hit by a fraud pattern")
    train.add_argument("--start", default="2026-01-01", help="synthetic: the first day of the traffic (UTC)")
    train.add_argument("--seed", type=int, default=1)
    train.add_argument("--trees", type=int, default=120)
    train.add_argument("--out", default="models", help="directory for <version>.onnx and <version>.json")
    train.add_argument("--json", action="store_true", help="print the manifest as JSON")
    train.set_defaults(handler=_train)

    check = actions.add_parser("replay", help="rebuild every recorded payment's features from payments.events and "
                               "compare them with what the service recorded; exit 1 if any differ")
    check.set_defaults(handler=_replay)

    models = actions.add_parser("models", help="which model decides, which runs in shadow, and every change")
    models.set_defaults(handler=_models)

    for action, help_text, takes_version in (
            ("shadow", "run a model in shadow beside the active one (scores recorded, decisions unchanged)", True),
            ("unshadow", "stop the model in shadow", False),
            ("promote", "make a model (by default the one in shadow) the active one", None),
            ("rollback", "make the previously active model active again", False)):
        sub = actions.add_parser(action, help=help_text)
        if takes_version:
            sub.add_argument("version", help="a model version in PAYMENTS_RISK_MODELS_DIR, or risk-model-v1")
        elif takes_version is None:
            sub.add_argument("version", nargs="?", help="default: the model in shadow")
        sub.add_argument("--reason", required=True, help="why: recorded with the change")
        sub.add_argument("--operator", help="who: recorded with the change (default: the user name)")
        sub.set_defaults(handler=_change)

    report = actions.add_parser("shadow-report", help="agreement and score drift (PSI) of each candidate against "
                                "the active model, from the scores payments.events recorded")
    report.set_defaults(handler=_shadow_report)

