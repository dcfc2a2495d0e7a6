"""The risk rules, and the v1 scoring model: a logistic regression loaded from a versioned JSON file.

Rules (amount limits per currency, blocked accounts) are the service's configuration, applied before
any model (`risk-rules.json`, PAYMENTS_RISK_RULES_FILE). The v1 model (`risk-model-v1.json`) scores
features of the payment alone (a hash bucket of each account, which carries no signal: it is the
baseline a trained model is measured against, consumers/risk/artifact.py). Each file carries its own
`version`; a file that does not validate is refused at load with `RiskModelError`: a service must not
start scoring with broken rules or a broken model.

Scores are probabilities, not money, so floats (math.exp) are fine here; the result is rounded
to integer basis points before it leaves this module.
"""

from __future__ import annotations

import hashlib
import json
import math
from importlib import resources
from pathlib import Path
from typing import Annotated, Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from consumers.errors import ParticipantError
from payments.money import Money, is_known_currency

DEFAULT_MODEL_FILE: Final = "risk-model-v1.json"
DEFAULT_RULES_FILE: Final = "risk-rules.json"
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
    """A model or rules file is missing, not JSON, or does not satisfy its format; a model artifact fails
    its checks (consumers/risk/artifact.py); a model named to score is not to be found."""


Finite = Annotated[float, Field(allow_inf_nan=False)]


class RiskRules(BaseModel):
    """The rules file's content: any failed rule declines, whatever a model says."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["risk-rules/1"]
    version: Annotated[str, Field(min_length=1)]
    amount_limits_minor: dict[str, Annotated[int, Field(gt=0)]]
    blocked_accounts: frozenset[str] = frozenset()

    @model_validator(mode="after")
    def _known_currencies(self) -> RiskRules:
        unknown = sorted(code for code in self.amount_limits_minor if not is_known_currency(code))
        if unknown:
            raise ValueError(f"unknown currency codes {unknown}")
        return self


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

    @model_validator(mode="after")
    def _consistent(self) -> RiskModel:
        if len(self.features) != len(self.weights):
            raise ValueError(f"{len(self.features)} features but {len(self.weights)} weights")
        if len(set(self.features)) != len(self.features):
            raise ValueError("a feature is listed twice")
        unknown = sorted(code for code in self.currency_risk if not is_known_currency(code))
        if unknown:
            raise ValueError(f"unknown currency codes {unknown}")
        return self


_Loaded = TypeVar("_Loaded", bound=BaseModel)


def _load(cls: type[_Loaded], path: Path | None, packaged: str, what: str) -> _Loaded:
    try:
        if path is None:
            text = resources.files("consumers.risk.model").joinpath(packaged).read_text("utf-8")
            where = f"package consumers.risk.model/{packaged}"
        else:
            text = path.read_text("utf-8")
            where = str(path)
    except OSError as error:
        raise RiskModelError(f"cannot read risk {what} file: {error}") from error
    try:
        return cls.model_validate(json.loads(text))
    except json.JSONDecodeError as error:
        raise RiskModelError(f"risk {what} {where} is not JSON: {error}") from error
    except ValidationError as error:
        raise RiskModelError(f"risk {what} {where} is invalid: {error}") from error


def load_model(path: Path | None = None) -> RiskModel:
    """Load and validate a v1 model file; the packaged v1 model when `path` is None."""
    return _load(RiskModel, path, DEFAULT_MODEL_FILE, "model")


def load_rules(path: Path | None = None) -> RiskRules:
    """Load and validate a rules file; the packaged rules when `path` is None."""
    return _load(RiskRules, path, DEFAULT_RULES_FILE, "rules")


def rule_reasons(rules: RiskRules, payer: str, payee: str, amount: Money) -> list[str]:
    """The reason of each rule the payment fails, in a fixed order (none: the rules pass it)."""
    if not is_known_currency(amount.currency):
        return [UNKNOWN_CURRENCY]
    reasons: list[str] = []
    limit = rules.amount_limits_minor.get(amount.currency)
    if limit is not None and amount.amount_minor > limit:
        reasons.append(AMOUNT_OVER_RISK_LIMIT)
    if payer in rules.blocked_accounts or payee in rules.blocked_accounts:
        reasons.append(ACCOUNT_BLOCKED)
    if payer == payee:
        reasons.append(SAME_PAYER_AND_PAYEE)
    return reasons


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
