"""The risk scoring model: rules plus a logistic regression, loaded from a versioned JSON file.

The file (see docs/participants.md) carries its own `version`, which every reply records, so a
decision can always be traced to the exact weights that made it. A file that does not validate
is refused at load with `RiskModelError`: a service must not start scoring with a broken model.

Scores are probabilities, not money, so floats (math.exp) are fine here; the result is rounded
to integer basis points before it leaves this module.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from consumers.errors import ParticipantError
from payments.contracts.codes import RiskDecision
from payments.money import Money, is_known_currency
from payments.money import exponent as currency_exponent

DEFAULT_MODEL_FILE: Final = "risk-model-v1.json"
BP_MAX: Final = 10_000

FeatureName = Literal[
    "log_amount_major",   # ln(1 + amount in major units), via the currency's ISO 4217 exponent
    "currency_risk",      # the currency's risk bucket from the file, 0..1
    "payer_hash_bucket",  # stable hash bucket of the payer account, scaled to 0..1
    "payee_hash_bucket",  # stable hash bucket of the payee account, scaled to 0..1
    "round_amount",       # 1.0 when the amount is a whole multiple of 100 major units
]

# Reason codes a reply can carry (stable strings: the orchestrator and analysts read them).
AMOUNT_OVER_RISK_LIMIT: Final = "AMOUNT_OVER_RISK_LIMIT"
ACCOUNT_BLOCKED: Final = "ACCOUNT_BLOCKED"
SAME_PAYER_AND_PAYEE: Final = "SAME_PAYER_AND_PAYEE"
UNKNOWN_CURRENCY: Final = "UNKNOWN_CURRENCY"
SCORE_ABOVE_THRESHOLD: Final = "SCORE_ABOVE_THRESHOLD"


class RiskModelError(ParticipantError, ValueError):
    """The model file is missing, not JSON, or does not satisfy the model file format."""


Finite = Annotated[float, Field(allow_inf_nan=False)]


class RiskRules(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    amount_limits_minor: dict[str, Annotated[int, Field(gt=0)]]
    blocked_accounts: frozenset[str] = frozenset()


class RiskModel(BaseModel):
    """The model file's content. Validation is the file format's specification."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["logistic-regression/1"]
    version: Annotated[str, Field(min_length=1)]
    features: tuple[FeatureName, ...]
    weights: tuple[Finite, ...]
    bias: Finite
    decline_threshold_bp: Annotated[int, Field(ge=0, le=BP_MAX)]
    hash_buckets: Annotated[int, Field(ge=2, le=1_000_000)]
    currency_risk: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]]
    default_currency_risk: Annotated[float, Field(ge=0.0, le=1.0)]
    rules: RiskRules

    @model_validator(mode="after")
    def _consistent(self) -> RiskModel:
        if len(self.features) != len(self.weights):
            raise ValueError(f"{len(self.features)} features but {len(self.weights)} weights")
        if len(set(self.features)) != len(self.features):
            raise ValueError("a feature is listed twice")
        unknown = sorted(code for code in [*self.currency_risk, *self.rules.amount_limits_minor]
                         if not is_known_currency(code))
        if unknown:
            raise ValueError(f"unknown currency codes {unknown}")
        return self


def load_model(path: Path | None = None) -> RiskModel:
    """Load and validate a model file; the packaged v1 model when `path` is None."""
    try:
        if path is None:
            text = resources.files("consumers.risk.model").joinpath(DEFAULT_MODEL_FILE).read_text("utf-8")
            where = f"package consumers.risk.model/{DEFAULT_MODEL_FILE}"
        else:
            text = path.read_text("utf-8")
            where = str(path)
    except OSError as error:
        raise RiskModelError(f"cannot read risk model file: {error}") from error
    try:
        return RiskModel.model_validate(json.loads(text))
    except json.JSONDecodeError as error:
        raise RiskModelError(f"risk model {where} is not JSON: {error}") from error
    except ValidationError as error:
        raise RiskModelError(f"risk model {where} is invalid: {error}") from error


def _bucket(account: str, buckets: int) -> float:
    # sha256, not hash(): Python's str hash is salted per process and would make scores unrepeatable.
    digest = int.from_bytes(hashlib.sha256(account.encode()).digest()[:8], "big")
    return (digest % buckets) / (buckets - 1)


def features_of(model: RiskModel, payer: str, payee: str, amount: Money, exponent: int) -> dict[str, float]:
    major = amount.amount_minor / 10**exponent
    whole_hundreds = amount.amount_minor % (100 * 10**exponent) == 0
    return {
        "log_amount_major": math.log1p(max(major, 0.0)),
        "currency_risk": model.currency_risk.get(amount.currency, model.default_currency_risk),
        "payer_hash_bucket": _bucket(payer, model.hash_buckets),
        "payee_hash_bucket": _bucket(payee, model.hash_buckets),
        "round_amount": 1.0 if whole_hundreds and amount.amount_minor > 0 else 0.0,
    }


def score_bp(model: RiskModel, features: dict[str, float]) -> int:
    """The logistic score in basis points, 0..10000."""
    z = model.bias + sum(w * features[name] for name, w in zip(model.features, model.weights, strict=True))
    # Clamp z so exp cannot overflow; beyond +-50 the sigmoid is 0 or 1 in basis points anyway.
    z = max(-50.0, min(50.0, z))
    probability = 1.0 / (1.0 + math.exp(-z))
    return max(0, min(BP_MAX, round(probability * BP_MAX)))


@dataclass(frozen=True)
class Assessment:
    score_bp: int
    decision: RiskDecision
    reasons: tuple[str, ...]
    model_version: str


def assess(model: RiskModel, payer: str, payee: str, amount: Money) -> Assessment:
    """Rules first (each failed rule is a reason), then the score; any reason declines."""
    if not is_known_currency(amount.currency):
        return Assessment(BP_MAX, "DECLINE", (UNKNOWN_CURRENCY,), model.version)
    reasons: list[str] = []
    limit = model.rules.amount_limits_minor.get(amount.currency)
    if limit is not None and amount.amount_minor > limit:
        reasons.append(AMOUNT_OVER_RISK_LIMIT)
    if payer in model.rules.blocked_accounts or payee in model.rules.blocked_accounts:
        reasons.append(ACCOUNT_BLOCKED)
    if payer == payee:
        reasons.append(SAME_PAYER_AND_PAYEE)
    score = score_bp(model, features_of(model, payer, payee, amount, currency_exponent(amount.currency)))
    if score >= model.decline_threshold_bp:
        reasons.append(SCORE_ABOVE_THRESHOLD)
    return Assessment(score, "DECLINE" if reasons else "APPROVE", tuple(reasons), model.version)
