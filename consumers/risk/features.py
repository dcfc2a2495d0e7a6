"""Behavioural risk features: a pure, bounded fold over one account's payments, in log order.

The same functions run online and offline (docs/risk.md). The risk service (consumers/risk/logic.py)
keeps each account's `AccountHistory` as a payer and as a payee in its state, computes a payment's
features from the histories *before* the payment is applied, then applies it; a training replay of
`payments.events` (consumers/risk/replay.py) feeds the same facts in the same order through the same
functions, so there is no training/serving skew by construction, and a test holds the two equal.

The payer's and the payee's sides are separate functions: the service computes them in two stages,
keyed by payee and by payer (each account's history lives on one partition), and a replay orders each
side by the position the service recorded for it.

Features are floats: they are model inputs, not money. Amounts enter as major units through the
currency's ISO 4217 exponent, so 1,000 JPY and 10.00 EUR are both "1,000" and "10" of their own kind.

Bounds (the bounded-state issue): an account keeps at most `RECENT_MAX` payments of the last
`HORIZON` (7 days), its last `COUNTERPARTIES_MAX` counterparties and `KINDS_MAX` currencies and
partners, plus a handful of running totals. A busy merchant's history is the same size as anyone's;
its windowed counts saturate at `RECENT_MAX`, which the documentation of each feature states. A
history idle for longer than `IDLE_FORGET` (400 days) before a payment counts as empty (`current`):
a returning account starts again, and the service may delete it meanwhile without changing anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from pydantic import BaseModel

from payments.money import Money
from payments.money import exponent as currency_exponent
from payments.runtime.logic import STATE_CONFIG

HOUR: Final = timedelta(hours=1)
DAY: Final = timedelta(days=1)
HORIZON: Final = timedelta(days=7)
RECENT_MAX: Final = 200
COUNTERPARTIES_MAX: Final = 500
KINDS_MAX: Final = 16
NEVER_S: Final = 30 * 86_400.0  # "seconds since the last payment" for an account never seen: 30 days
IDLE_FORGET: Final = timedelta(days=400)  # a history older than this before a payment counts as empty

Outcome = Literal["PENDING", "DECLINED", "FAILED", "SETTLED"]  # DECLINED: by risk; FAILED: after approval
Role = Literal["payer", "payee"]

# The model's inputs, in this order. A model artifact declares the list it was trained on; the service
# refuses a model whose list differs from this one (the names are the contract, not the positions).
FEATURES: Final = (
    "amount_log",               # ln(1 + amount in major units)
    "payer_count_1h",           # the payer's payments in the hour before this one (at most RECENT_MAX)
    "payer_count_24h",
    "payer_count_7d",
    "payer_amount_log_24h",     # ln(1 + sum of the payer's major amounts in the 24 h before, same currency)
    "payer_distinct_payees_24h",
    "payer_distinct_payees_7d",
    "payer_first_time_payee",   # 1 when the payer has not paid this payee before (within its last 500)
    "payer_amount_zscore",      # (amount_log - mean) / std over the payer's lifetime; 0 below 3 payments
    "payer_declines_7d",        # the payer's payments of the last 7 d that were declined
    "payer_failures_7d",        # ... that failed after approval (funds, partner)
    "payer_log_seconds_since_last",  # ln(1 + seconds since the payer's previous payment); 30 d if none
    "payer_age_log_days",       # ln(1 + days since the payer's first payment seen); 0 for a new payer
    "payer_new_currency",       # 1 when the payer has not paid in this currency before
    "payer_new_partner",        # 1 when the payer has not paid through this partner before
    "payee_count_1h",           # payments the payee received in the hour before this one
    "payee_count_24h",
    "payee_distinct_payers_1h",
    "payee_distinct_payers_24h",
    "payee_age_log_days",       # ln(1 + days since the payee first received); 0 for a new payee
)


@dataclass(frozen=True)
class Attempt:
    """A payment as the risk service sees it when asked to assess it."""

    payment_id: str
    at: datetime
    payer: str
    payee: str
    amount: Money
    partner: str

    @property
    def major(self) -> float:
        return float(self.amount.amount_minor) / float(10 ** currency_exponent(self.amount.currency))


class Recent(BaseModel):
    model_config = STATE_CONFIG

    payment_id: str
    at: datetime
    counterparty: str
    currency: str
    major: float
    outcome: Outcome = "PENDING"


class AccountHistory(BaseModel):
    """One account's side of its payments (as payer or as payee): bounded, JSON state."""

    model_config = STATE_CONFIG

    first_at: datetime | None = None
    last_at: datetime | None = None
    count: int = 0
    log_sum: float = 0.0
    log_sq_sum: float = 0.0
    recent: tuple[Recent, ...] = ()           # oldest first, within HORIZON, at most RECENT_MAX
    counterparties: tuple[str, ...] = ()      # least recently used first, at most COUNTERPARTIES_MAX
    currencies: tuple[str, ...] = ()
    partners: tuple[str, ...] = ()


def _within(history: AccountHistory, at: datetime, window: timedelta) -> list[Recent]:
    return [r for r in history.recent if at - window <= r.at <= at]


def _log_days(first_at: datetime | None, at: datetime) -> float:
    return 0.0 if first_at is None else math.log1p(max((at - first_at).total_seconds(), 0.0) / 86_400)


def current(history: AccountHistory, at: datetime) -> AccountHistory:
    """`history` as a payment at `at` sees it: empty when its last payment was more than IDLE_FORGET before."""
    if history.last_at is not None and at - history.last_at > IDLE_FORGET:
        return EMPTY_HISTORY
    return history


def payer_features(payer: AccountHistory, attempt: Attempt) -> dict[str, float]:
    """The payer's side of `attempt`'s features, from the payer's history before it."""
    at = attempt.at
    payer = current(payer, at)
    amount_log = math.log1p(max(attempt.major, 0.0))
    out_1h, out_24h, out_7d = (_within(payer, at, w) for w in (HOUR, DAY, HORIZON))
    if payer.count >= 3:
        mean = payer.log_sum / payer.count
        std = math.sqrt(max(payer.log_sq_sum / payer.count - mean * mean, 0.0))
        zscore = (amount_log - mean) / max(std, 0.1)
    else:
        zscore = 0.0
    since = NEVER_S if payer.last_at is None else max((at - payer.last_at).total_seconds(), 0.0)
    same_currency_24h = sum(r.major for r in out_24h if r.currency == attempt.amount.currency)
    return {
        "amount_log": amount_log,
        "payer_count_1h": float(len(out_1h)),
        "payer_count_24h": float(len(out_24h)),
        "payer_count_7d": float(len(out_7d)),
        "payer_amount_log_24h": math.log1p(same_currency_24h),
        "payer_distinct_payees_24h": float(len({r.counterparty for r in out_24h})),
        "payer_distinct_payees_7d": float(len({r.counterparty for r in out_7d})),
        "payer_first_time_payee": 0.0 if attempt.payee in payer.counterparties else 1.0,
        "payer_amount_zscore": zscore,
        "payer_declines_7d": float(sum(r.outcome == "DECLINED" for r in out_7d)),
        "payer_failures_7d": float(sum(r.outcome == "FAILED" for r in out_7d)),
        "payer_log_seconds_since_last": math.log1p(since),
        "payer_age_log_days": _log_days(payer.first_at, at),
        "payer_new_currency": 0.0 if attempt.amount.currency in payer.currencies else 1.0,
        "payer_new_partner": 0.0 if attempt.partner in payer.partners else 1.0,
    }


def payee_features(payee: AccountHistory, attempt: Attempt) -> dict[str, float]:
    """The payee's side of `attempt`'s features, from the payee's history before it."""
    at = attempt.at
    payee = current(payee, at)
    in_1h, in_24h = (_within(payee, at, w) for w in (HOUR, DAY))
    return {
        "payee_count_1h": float(len(in_1h)),
        "payee_count_24h": float(len(in_24h)),
        "payee_distinct_payers_1h": float(len({r.counterparty for r in in_1h})),
        "payee_distinct_payers_24h": float(len({r.counterparty for r in in_24h})),
        "payee_age_log_days": _log_days(payee.first_at, at),
    }


PAYER_FEATURES: Final = tuple(name for name in FEATURES if not name.startswith("payee_"))
PAYEE_FEATURES: Final = tuple(name for name in FEATURES if name.startswith("payee_"))


def combined(payer_side: dict[str, float], payee_side: dict[str, float]) -> dict[str, float]:
    """Both sides in FEATURES order (KeyError if one is missing)."""
    values = {**payer_side, **payee_side}
    return {name: values[name] for name in FEATURES}


def features_of(payer: AccountHistory, payee: AccountHistory, attempt: Attempt) -> dict[str, float]:
    """The features of `attempt` from its payer's and payee's histories before it (in FEATURES order)."""
    return combined(payer_features(payer, attempt), payee_features(payee, attempt))


def _most_recent_last(items: tuple[str, ...], item: str, cap: int) -> tuple[str, ...]:
    return (*(i for i in items if i != item), item)[-cap:]


def record(history: AccountHistory, attempt: Attempt, role: Role) -> AccountHistory:
    """`history` with `attempt` applied on the `role` side; older entries past the bounds dropped."""
    at = attempt.at
    history = current(history, at)
    if any(r.payment_id == attempt.payment_id for r in history.recent):
        return history  # the same payment twice (a re-sent command) counts once
    amount_log = math.log1p(max(attempt.major, 0.0))
    counterparty = attempt.payee if role == "payer" else attempt.payer
    entry = Recent.model_construct(payment_id=attempt.payment_id, at=at, counterparty=counterparty,
                                   currency=attempt.amount.currency, major=attempt.major, outcome="PENDING")
    recent = tuple(r for r in (*history.recent, entry) if r.at > at - HORIZON)[-RECENT_MAX:]
    # model_construct: every value is built here from valid ones; validating 200 recent payments and 500
    # counterparties again on every payment was a third of the service's time per payment.
    return AccountHistory.model_construct(
        first_at=at if history.first_at is None else min(history.first_at, at),
        last_at=at if history.last_at is None else max(history.last_at, at),
        count=history.count + 1, log_sum=history.log_sum + amount_log,
        log_sq_sum=history.log_sq_sum + amount_log * amount_log, recent=recent,
        counterparties=_most_recent_last(history.counterparties, counterparty, COUNTERPARTIES_MAX),
        currencies=_most_recent_last(history.currencies, attempt.amount.currency, KINDS_MAX),
        partners=_most_recent_last(history.partners, attempt.partner, KINDS_MAX))


def knows(history: AccountHistory, payment_id: str) -> bool:
    """Whether `payment_id` is among the history's recent payments (so an outcome of it would count)."""
    return any(r.payment_id == payment_id for r in history.recent)


def record_outcome(history: AccountHistory, payment_id: str, outcome: Outcome) -> AccountHistory:
    """`history` with a payment's outcome set; unchanged when the payment has left the window."""
    if not knows(history, payment_id):
        return history
    recent = tuple(r.model_copy(update={"outcome": outcome}) if r.payment_id == payment_id else r
                   for r in history.recent)
    return history.model_copy(update={"recent": recent})


def vector(features: dict[str, float]) -> list[float]:
    """The features as the model's input row, in FEATURES order (KeyError if one is missing)."""
    return [features[name] for name in FEATURES]


class FeatureFold:
    """The fold over a log held in memory, in one order for both sides (synthetic traffic, tests): each
    attempt's features, then the attempt. Histories are keyed `out:<account>` (as payer) and
    `in:<account>` (as payee). A replay of the service's log orders each side by its own recorded
    positions instead (consumers/risk/replay.py)."""

    def __init__(self) -> None:
        self.histories: dict[str, AccountHistory] = {}

    def history(self, key: str) -> AccountHistory:
        return self.histories.get(key, EMPTY_HISTORY)

    def step(self, attempt: Attempt) -> dict[str, float]:
        payer_key, payee_key = f"out:{attempt.payer}", f"in:{attempt.payee}"
        features = features_of(self.history(payer_key), self.history(payee_key), attempt)
        self.histories[payer_key] = record(self.history(payer_key), attempt, "payer")
        self.histories[payee_key] = record(self.history(payee_key), attempt, "payee")
        return features

    def outcome(self, payer: str, payment_id: str, outcome: Outcome) -> None:
        self.histories[f"out:{payer}"] = record_outcome(self.history(f"out:{payer}"), payment_id, outcome)


EMPTY_HISTORY: Final = AccountHistory()
