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

import bisect
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, NamedTuple

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


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def micros(at: datetime) -> int:
    """`at` as whole microseconds since the epoch (exact: a datetime holds no finer time)."""
    return (at - _EPOCH) // _MICROSECOND


class Recent(NamedTuple):
    """One recent payment of an account, as compact as it can be: a busy account holds 200 of them, every
    payment scans them, and the snapshot writes them (a JSON array each). The time is whole microseconds
    since the epoch: integers compare several times faster than aware datetimes."""

    payment_id: str
    at_us: int
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
    recent: tuple[Recent, ...] = ()           # in time order, within HORIZON, at most RECENT_MAX
    counterparties: tuple[str, ...] = ()      # least recently used first, at most COUNTERPARTIES_MAX
    currencies: tuple[str, ...] = ()
    partners: tuple[str, ...] = ()


def _log_days(first_at: datetime | None, at: datetime) -> float:
    return 0.0 if first_at is None else math.log1p(max((at - first_at).total_seconds(), 0.0) / 86_400)


def current(history: AccountHistory, at: datetime) -> AccountHistory:
    """`history` as a payment at `at` sees it: empty when its last payment was more than IDLE_FORGET before."""
    if history.last_at is not None and at - history.last_at > IDLE_FORGET:
        return EMPTY_HISTORY
    return history


def _time(r: Recent) -> int:
    return r.at_us


def _span(recent: tuple[Recent, ...], since_us: int, until_us: int) -> tuple[Recent, ...]:
    """The payments with since_us <= time <= until_us (`recent` is in time order: two bisections)."""
    return recent[bisect.bisect_left(recent, since_us, key=_time):bisect.bisect_right(recent, until_us, key=_time)]


def payer_features(payer: AccountHistory, attempt: Attempt) -> dict[str, float]:
    """The payer's side of `attempt`'s features, from the payer's history before it.

    A payment counts in a window when `at - window <= its time <= at`; the recent payments are kept in time
    order, so each window is found by bisection, not by a scan (a busy account has 200 of them)."""
    at = attempt.at
    payer = current(payer, at)
    amount_log = math.log1p(max(attempt.major, 0.0))
    now, currency = micros(at), attempt.amount.currency
    last_7d = _span(payer.recent, micros(at - HORIZON), now)
    last_24h = _span(last_7d, micros(at - DAY), now)
    count_1h = len(_span(last_24h, micros(at - HOUR), now))
    if payer.count >= 3:
        mean = payer.log_sum / payer.count
        std = math.sqrt(max(payer.log_sq_sum / payer.count - mean * mean, 0.0))
        zscore = (amount_log - mean) / max(std, 0.1)
    else:
        zscore = 0.0
    since = NEVER_S if payer.last_at is None else max((at - payer.last_at).total_seconds(), 0.0)
    outcomes = [r.outcome for r in last_7d]
    return {
        "amount_log": amount_log,
        "payer_count_1h": float(count_1h),
        "payer_count_24h": float(len(last_24h)),
        "payer_count_7d": float(len(last_7d)),
        "payer_amount_log_24h": math.log1p(sum(r.major for r in last_24h if r.currency == currency)),
        "payer_distinct_payees_24h": float(len({r.counterparty for r in last_24h})),
        "payer_distinct_payees_7d": float(len({r.counterparty for r in last_7d})),
        "payer_first_time_payee": 0.0 if attempt.payee in payer.counterparties else 1.0,
        "payer_amount_zscore": zscore,
        "payer_declines_7d": float(outcomes.count("DECLINED")),
        "payer_failures_7d": float(outcomes.count("FAILED")),
        "payer_log_seconds_since_last": math.log1p(since),
        "payer_age_log_days": _log_days(payer.first_at, at),
        "payer_new_currency": 0.0 if currency in payer.currencies else 1.0,
        "payer_new_partner": 0.0 if attempt.partner in payer.partners else 1.0,
    }


def payee_features(payee: AccountHistory, attempt: Attempt) -> dict[str, float]:
    """The payee's side of `attempt`'s features, from the payee's history before it (windows as above)."""
    at = attempt.at
    payee = current(payee, at)
    now = micros(at)
    last_24h = _span(payee.recent, micros(at - DAY), now)
    last_1h = _span(last_24h, micros(at - HOUR), now)
    return {
        "payee_count_1h": float(len(last_1h)),
        "payee_count_24h": float(len(last_24h)),
        "payee_distinct_payers_1h": float(len({r.counterparty for r in last_1h})),
        "payee_distinct_payers_24h": float(len({r.counterparty for r in last_24h})),
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
    if items and items[-1] == item:  # the same counterparty again (a merchant's regular payer): nothing moves
        return items
    return (*(i for i in items if i != item), item)[-cap:]


def record(history: AccountHistory, attempt: Attempt, role: Role) -> AccountHistory:
    """`history` with `attempt` applied on the `role` side; older entries past the bounds dropped.

    `recent` stays in time order (a payment that arrives out of order goes where its time puts it, after
    any of the same time): what leaves the 7-day horizon is a prefix, and past RECENT_MAX the oldest go."""
    at = attempt.at
    history = current(history, at)
    at_us, recent = micros(at), history.recent
    same_time_from = bisect.bisect_left(recent, at_us, key=_time)
    insert_at = bisect.bisect_right(recent, at_us, key=_time)
    if any(r.payment_id == attempt.payment_id for r in recent[same_time_from:insert_at]):
        return history  # the same payment twice (a re-sent command) counts once
    amount_log = math.log1p(max(attempt.major, 0.0))
    counterparty = attempt.payee if role == "payer" else attempt.payer
    entry = Recent(attempt.payment_id, at_us, counterparty, attempt.amount.currency, attempt.major)
    recent = (*recent[:insert_at], entry, *recent[insert_at:])
    recent = recent[bisect.bisect_right(recent, micros(at - HORIZON), key=_time):][-RECENT_MAX:]
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
    recent = tuple(r._replace(outcome=outcome) if r.payment_id == payment_id else r for r in history.recent)
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
