"""The models that score, and how one payment is assessed: rules first, then the active model, a candidate
in shadow beside it.

Two kinds of model answer the same `Scorer` interface: the packaged v1 logistic regression
(consumers/risk/scoring.py, features of the payment alone) and a trained gradient-boosted artifact
(consumers/risk/artifact.py, the behavioural features). Which one is active, and which one runs in
shadow, is the operator's choice, recorded on `risk.models` (docs/risk.md, "Shipping safely"); the
service swaps its `Models` between decisions, and every reply names the model that decided.

`assess` is pure: the same rules, models, payment and features give the same answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from consumers.risk.features import Attempt
from consumers.risk.scoring import (
    BP_MAX,
    SCORE_ABOVE_THRESHOLD,
    UNKNOWN_CURRENCY,
    RiskModel,
    RiskModelError,
    RiskRules,
    features_of,
    load_model,
    rule_reasons,
    score_bp,
)
from payments.contracts.codes import RiskDecision
from payments.money import exponent as currency_exponent
from payments.money import is_known_currency

if TYPE_CHECKING:  # onnxruntime and numpy load only in a process that serves a trained model (30 MB)
    from consumers.risk.artifact import RiskArtifact

CONTRIBUTIONS_MAX: Final = 5  # in a reply: the features that raised a declining score most


class Scorer(Protocol):
    """A model that scores a payment in basis points and declines at or above its threshold."""

    @property
    def version(self) -> str: ...

    @property
    def threshold_bp(self) -> int: ...

    def score(self, attempt: Attempt, features: Mapping[str, float]) -> int: ...

    def explain(self, attempt: Attempt, features: Mapping[str, float]) -> tuple[tuple[str, int], ...]:
        """(feature, basis points it raised the score), largest first; () when the model cannot say."""
        ...


class LogisticScorer:
    """The v1 model: a logistic regression over features of the payment alone (no history)."""

    def __init__(self, model: RiskModel) -> None:
        self.model = model

    @property
    def version(self) -> str:
        return self.model.version

    @property
    def threshold_bp(self) -> int:
        return self.model.decline_threshold_bp

    def score(self, attempt: Attempt, features: Mapping[str, float]) -> int:
        amount = attempt.amount
        own = features_of(self.model, attempt.payer, attempt.payee, amount, currency_exponent(amount.currency))
        return score_bp(self.model, own)

    def explain(self, attempt: Attempt, features: Mapping[str, float]) -> tuple[tuple[str, int], ...]:
        return ()


class GbmScorer:
    """A trained artifact, served by onnxruntime (consumers/risk/artifact.py)."""

    def __init__(self, artifact: RiskArtifact) -> None:
        self.artifact = artifact

    @property
    def version(self) -> str:
        return self.artifact.version

    @property
    def threshold_bp(self) -> int:
        return self.artifact.manifest.decline_threshold_bp

    def score(self, attempt: Attempt, features: Mapping[str, float]) -> int:
        return self.artifact.score(dict(features)).score_bp

    def explain(self, attempt: Attempt, features: Mapping[str, float]) -> tuple[tuple[str, int], ...]:
        return self.artifact.score(dict(features), explain=True).contributions


def load_scorer(version: str, models_dir: Path | None, v1_file: Path | None = None) -> Scorer:
    """The model named `version`: the v1 model (packaged, or `v1_file`) when its version matches, else the
    artifact `<models_dir>/<version>.json` with its `.onnx`, verified (RiskModelError if anything is off)."""
    v1 = load_model(v1_file)
    if version == v1.version:
        return LogisticScorer(v1)
    if models_dir is None:
        raise RiskModelError(f"risk model {version} is not {v1.version} and no models directory is set "
                             "(PAYMENTS_RISK_MODELS_DIR)")
    from consumers.risk.artifact import load_artifact  # noqa: PLC0415  # see TYPE_CHECKING above

    artifact = load_artifact(models_dir / f"{version}.json")
    if artifact.version != version:
        raise RiskModelError(f"{models_dir / f'{version}.json'} declares version {artifact.version}, not {version}")
    return GbmScorer(artifact)


@dataclass(frozen=True)
class Models:
    """The active model, which decides, and a candidate, which scores in shadow (decides nothing)."""

    active: Scorer
    candidate: Scorer | None = None

    @property
    def versions(self) -> tuple[str, str | None]:
        return self.active.version, None if self.candidate is None else self.candidate.version


@dataclass(frozen=True)
class Shadow:
    model_version: str
    score_bp: int
    decision: RiskDecision


@dataclass(frozen=True)
class Assessment:
    score_bp: int
    decision: RiskDecision
    reasons: tuple[str, ...]
    model_version: str
    contributions: tuple[tuple[str, int], ...] = ()  # on a decline by the model
    shadow: Shadow | None = None
    by_model: bool = False  # the model's score declined it (rules may have too)


def assess(rules: RiskRules, models: Models, attempt: Attempt, features: Mapping[str, float]) -> Assessment:
    """Rules first (each failed rule is a reason), then the active model's score; any reason declines.

    A model decline carries the features that raised the score most. A candidate scores the same payment
    after the same rules; what it would have decided is recorded beside the answer, never acted on."""
    reasons = rule_reasons(rules, attempt.payer, attempt.payee, attempt.amount)
    if not is_known_currency(attempt.amount.currency):  # no model can score an amount it cannot read
        return Assessment(BP_MAX, "DECLINE", (UNKNOWN_CURRENCY,), models.active.version)
    active = models.active
    score = active.score(attempt, features)
    by_model = score >= active.threshold_bp
    contributions: tuple[tuple[str, int], ...] = ()
    if by_model:
        reasons.append(SCORE_ABOVE_THRESHOLD)
        contributions = tuple((name, bp) for name, bp in active.explain(attempt, features) if bp > 0)
    shadow = None
    if models.candidate is not None:
        candidate = models.candidate
        candidate_bp = candidate.score(attempt, features)
        declines = bool(rules_declined(reasons, by_model)) or candidate_bp >= candidate.threshold_bp
        shadow = Shadow(candidate.version, candidate_bp, "DECLINE" if declines else "APPROVE")
    return Assessment(score, "DECLINE" if reasons else "APPROVE", tuple(reasons), active.version,
                      contributions[:CONTRIBUTIONS_MAX], shadow, by_model)


def rules_declined(reasons: list[str], by_model: bool) -> list[str]:
    """The reasons that came from rules, not from the active model's score."""
    return reasons[:-1] if by_model else reasons
