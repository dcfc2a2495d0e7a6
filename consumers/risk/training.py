"""Train a gradient-boosted risk model on labelled payments and write it as a verified artifact.

The examples come from `FeatureFold`, the same fold the risk service runs, over payments in log order.
The period is cut by time, never shuffled: the first 65 % trains the trees, the next 15 % picks the
decline threshold (the one with the best F1 there), and the last 20 % is the hold-out every reported
metric is measured on, so no figure comes from data the model or its threshold has seen.

LightGBM trains (single-threaded and deterministic, so a seed gives the same trees); onnxmltools
converts the trees to ONNX, and the converted graph must agree with LightGBM on every hold-out row
to half a basis point (5e-5) before anything is written: the graph computes in float32 where LightGBM
sums its 120 trees in float64 (1e-5 apart measured), and a score leaves the service as whole basis
points. Needs the `train` extra (lightgbm, onnxmltools, scikit-learn).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import numpy as np

from consumers.risk.artifact import FORMAT, Manifest, Metrics, RiskArtifact, sha256_of
from consumers.risk.features import FEATURES, Attempt, FeatureFold, vector
from consumers.risk.scoring import BP_MAX, RiskModelError

TRAIN_SHARE: Final = 0.65
VALIDATION_SHARE: Final = 0.15
AGREEMENT: Final = 5e-5  # half a basis point: a served score rounds to the same bp or the next


@dataclass(frozen=True)
class Example:
    at: datetime
    features: dict[str, float]
    fraud: bool


def examples_of(attempts: Iterable[Attempt], labels: Mapping[str, Any],
                failures: Mapping[str, datetime] | None = None) -> list[Example]:
    """Each attempt's features from the fold (in the order given), labelled fraud when in `labels`.

    `failures` (payment id -> when its failure became known) are applied to the payer's history as
    time reaches them, as the service applies the saga's notices when they arrive."""
    fold = FeatureFold()
    pending = sorted((known_at, payment_id) for payment_id, known_at in (failures or {}).items())
    payer_of: dict[str, str] = {}
    examples, next_failure = [], 0
    for a in attempts:
        while next_failure < len(pending) and pending[next_failure][0] <= a.at:
            payment_id = pending[next_failure][1]
            if payment_id in payer_of:
                fold.outcome(payer_of[payment_id], payment_id, "FAILED")
            next_failure += 1
        payer_of[a.payment_id] = a.payer
        examples.append(Example(a.at, fold.step(a), a.payment_id in labels))
    return examples


def _split(examples: Sequence[Example]) -> tuple[list[Example], list[Example], list[Example]]:
    ordered = sorted(examples, key=lambda e: e.at)
    first, second = int(len(ordered) * TRAIN_SHARE), int(len(ordered) * (TRAIN_SHARE + VALIDATION_SHARE))
    parts = ordered[:first], ordered[first:second], ordered[second:]
    for name, part in zip(("training", "validation", "hold-out"), parts, strict=True):
        if not any(e.fraud for e in part) or all(e.fraud for e in part):
            raise RiskModelError(f"the {name} period has only one class ({len(part)} payments): more data is needed")
    return parts


def _matrix(examples: Sequence[Example]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray([vector(e.features) for e in examples], dtype=np.float32)
    return x, np.asarray([e.fraud for e in examples], dtype=np.int32)


def _best_threshold_bp(scores: np.ndarray, fraud: np.ndarray) -> int:
    best, best_f1 = BP_MAX // 2, -1.0
    for threshold in range(100, BP_MAX, 100):
        declined = scores >= threshold
        caught = int(np.sum(declined & (fraud == 1)))
        if caught == 0:
            continue
        precision, recall = caught / int(np.sum(declined)), caught / int(np.sum(fraud == 1))
        f1 = 2 * precision * recall / (precision + recall)
        if f1 > best_f1:
            best, best_f1 = threshold, f1
    return best


def train(examples: Sequence[Example], out_dir: Path, *, seed: int = 1, trees: int = 120) -> Manifest:
    """Train, check the ONNX graph against LightGBM, and write `<version>.onnx` + `<version>.json`."""
    import lightgbm  # noqa: PLC0415  # the `train` extra: a risk service never loads it
    from onnxmltools import convert_lightgbm  # noqa: PLC0415
    from onnxmltools.convert.common.data_types import FloatTensorType  # noqa: PLC0415
    from sklearn.metrics import roc_auc_score  # noqa: PLC0415

    fit, validation, holdout = _split(examples)
    x_fit, y_fit = _matrix(fit)
    model = lightgbm.LGBMClassifier(
        n_estimators=trees, num_leaves=15, learning_rate=0.08, min_child_samples=10, subsample=1.0,
        random_state=seed, deterministic=True, force_row_wise=True, n_jobs=1, verbose=-1)
    model.fit(x_fit, y_fit)
    onnx_model = convert_lightgbm(model, initial_types=[("features", FloatTensorType([None, len(FEATURES)]))],
                                  zipmap=False, target_opset=15)
    onnx_model.graph.name = "payments_risk_gbm"  # the converter names it by a random UUID: same trees, same bytes
    onnx_bytes = onnx_model.SerializeToString()
    digest = sha256_of(onnx_bytes)

    def fraud_probability(x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict_proba(x), dtype=np.float64)[:, 1]

    def bp(x: np.ndarray) -> np.ndarray:
        return np.asarray(np.clip(np.rint(fraud_probability(x) * BP_MAX), 0, BP_MAX), dtype=np.float64)

    x_val, y_val = _matrix(validation)
    threshold = _best_threshold_bp(bp(x_val), y_val)
    x_hold, y_hold = _matrix(holdout)
    probabilities = fraud_probability(x_hold)
    declined = bp(x_hold) >= threshold
    caught = int(np.sum(declined & (y_hold == 1)))
    metrics = Metrics(auc=round(float(roc_auc_score(y_hold, probabilities)), 4),
                      precision=round(caught / max(int(np.sum(declined)), 1), 4),
                      recall=round(caught / int(np.sum(y_hold == 1)), 4),
                      holdout_payments=len(holdout), holdout_fraud=int(np.sum(y_hold == 1)))
    manifest = Manifest(
        format=FORMAT, version=f"gbm-{holdout[-1].at:%Y%m%d}-{digest[:10]}", features=FEATURES,
        baseline=tuple(float(v) for v in np.median(x_fit, axis=0)), decline_threshold_bp=threshold,
        onnx_sha256=digest, trained_from=fit[0].at, trained_until=fit[-1].at, holdout_from=holdout[0].at,
        metrics=metrics)
    served = RiskArtifact(manifest, onnx_bytes)
    onnx_probabilities = served.probabilities(x_hold)
    disagreement = float(np.max(np.abs(onnx_probabilities - probabilities)))
    if disagreement > AGREEMENT:
        raise RiskModelError(f"the ONNX graph disagrees with LightGBM by {disagreement:.2e} on the hold-out")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{manifest.version}.onnx").write_bytes(onnx_bytes)
    (out_dir / f"{manifest.version}.json").write_text(manifest.model_dump_json(indent=2) + "\n", "utf-8")
    return manifest


def read_labels(path: Path) -> set[str]:
    """The fraudulent payment ids of a labels file: CSV with a header naming a `payment_id` column (confirmed
    fraud, chargebacks; any other column is ignored). RiskModelError for a file without that column."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = csv.DictReader(handle)
            if rows.fieldnames is None or "payment_id" not in rows.fieldnames:
                raise RiskModelError(f"labels file {path} has no payment_id column in its header")
            return {row["payment_id"].strip() for row in rows if (row.get("payment_id") or "").strip()}
    except OSError as error:
        raise RiskModelError(f"cannot read labels file: {error}") from error
    except (csv.Error, UnicodeDecodeError) as error:
        raise RiskModelError(f"labels file {path} is not CSV: {error}") from error
