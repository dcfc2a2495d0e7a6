"""A trained risk model as shipped: an ONNX graph plus a JSON manifest, served by onnxruntime.

`<name>.onnx` holds the gradient-boosted trees; `<name>.json` (the manifest) declares the feature list
the model was trained on, its version, its metrics on the time-based hold-out, the range of the data
it was trained on, each feature's training median (the baseline of the explanations) and the SHA-256
of the ONNX file. `load_artifact` refuses, with `RiskModelError`, a manifest that does not validate,
an ONNX file whose hash differs, a feature list other than the service's `FEATURES`, and a graph whose
input width differs from the list: a risk service must not start scoring with a model it cannot trust.

Scores are probabilities, so floats are fine here; they leave as integer basis points.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Final, Literal

import numpy as np
import onnxruntime as ort
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from consumers.risk.features import FEATURES, vector
from consumers.risk.scoring import BP_MAX, RiskModelError

FORMAT: Final = "onnx-gbm/1"


class Metrics(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    auc: float
    precision: float          # at the manifest's decline threshold, on the hold-out
    recall: float
    holdout_payments: int
    holdout_fraud: int


class Manifest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["onnx-gbm/1"]
    version: Annotated[str, Field(min_length=1)]
    features: tuple[str, ...]
    baseline: tuple[float, ...]   # each feature's training median, in `features` order
    decline_threshold_bp: Annotated[int, Field(ge=0, le=BP_MAX)]
    onnx_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    trained_from: datetime
    trained_until: datetime
    holdout_from: datetime
    metrics: Metrics


@dataclass(frozen=True)
class Score:
    score_bp: int
    contributions: tuple[tuple[str, int], ...]  # (feature, basis points it added), largest first


class RiskArtifact:
    """A loaded, verified model: one onnxruntime session, single-threaded (the service's loop is)."""

    def __init__(self, manifest: Manifest, onnx_bytes: bytes) -> None:
        self.manifest = manifest
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # onnxruntime warns about the label output's shape on every batch
        try:
            self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own untyped errors for a bad graph
            raise RiskModelError(f"risk model {manifest.version}: onnxruntime cannot load it: {error}") from error
        inputs = self.session.get_inputs()
        width = inputs[0].shape[1] if inputs and len(inputs[0].shape) == 2 else None
        if len(inputs) != 1 or width != len(manifest.features):
            raise RiskModelError(f"risk model {manifest.version}: its graph takes {[i.shape for i in inputs]}, "
                                 f"not one row of the {len(manifest.features)} declared features")
        self.input_name = inputs[0].name
        self.baseline = np.asarray(manifest.baseline, dtype=np.float32)

    @property
    def version(self) -> str:
        return self.manifest.version

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        probabilities = self.session.run(None, {self.input_name: rows})[1]
        return np.asarray(probabilities, dtype=np.float64)[:, 1]

    def score(self, features: dict[str, float], *, explain: bool = False) -> Score:
        """The score of one payment; with `explain`, each feature's contribution in one more batch.

        A contribution is how much the score falls when that feature alone is set to its training
        median: the same single batched run for all features (0.1 ms), exact for what it measures.
        """
        row = np.asarray([vector(features)], dtype=np.float32)
        if not explain:
            return Score(_bp(self.probabilities(row)[0]), ())
        rows = np.repeat(row, len(FEATURES) + 1, axis=0)
        for i in range(len(FEATURES)):
            rows[i + 1, i] = self.baseline[i]
        probabilities = self.probabilities(rows)
        score = _bp(probabilities[0])
        deltas = [(name, score - _bp(probabilities[i + 1])) for i, name in enumerate(FEATURES)]
        deltas.sort(key=lambda item: (-item[1], item[0]))
        return Score(score, tuple(deltas))


def _bp(probability: float) -> int:
    return max(0, min(BP_MAX, round(float(probability) * BP_MAX)))


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_artifact(manifest_path: Path) -> RiskArtifact:
    """Load `<name>.json` and the `<name>.onnx` beside it, verified (RiskModelError if anything is off)."""
    try:
        manifest = Manifest.model_validate_json(manifest_path.read_text("utf-8"))
        onnx_bytes = manifest_path.with_suffix(".onnx").read_bytes()
    except OSError as error:
        raise RiskModelError(f"cannot read risk model: {error}") from error
    except ValidationError as error:
        raise RiskModelError(f"risk model manifest {manifest_path} is invalid: {error}") from error
    if sha256_of(onnx_bytes) != manifest.onnx_sha256:
        raise RiskModelError(f"risk model {manifest.version}: {manifest_path.with_suffix('.onnx')} does not "
                             f"have the SHA-256 its manifest declares")
    if manifest.features != FEATURES:
        missing, extra = sorted(set(FEATURES) - set(manifest.features)), sorted(set(manifest.features) - set(FEATURES))
        raise RiskModelError(f"risk model {manifest.version} was trained on other features than this service "
                             f"computes (missing {missing}, unknown {extra}, or another order)")
    if len(manifest.baseline) != len(manifest.features):
        raise RiskModelError(f"risk model {manifest.version}: {len(manifest.baseline)} baselines for "
                             f"{len(manifest.features)} features")
    return RiskArtifact(manifest, onnx_bytes)
