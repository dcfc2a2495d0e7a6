"""Rebuild the risk features of recorded payments by replaying what `payments.events` holds of them.

For each payment the saga records its terms (`PaymentInitiated`: payer, payee, amount, partner, and the
time the features are taken at) and the risk service's answer (`RiskAssessed` v2: the decision, the
payment's position in its payer's and its payee's histories, the failures applied to the payer's history
just before it, and the features the service computed). The replay runs the service's own functions
(consumers/risk/features.py) over each account's payments in the recorded order:

- the payer's side: per payer, in `payer_seq` order, apply the failures named, take the payer's features,
  add the payment, mark a decline;
- the payee's side: per payee, in `payee_seq` order, take the payee's features, add the payment.

A position restarts at 1 when a history idle for `IDLE_FORGET` starts again; such restarts are found by
the gap in time (nothing is accepted more than the retention out of order, far less than that gap).

The result is the features the service had, exactly, wherever the log holds every payment the service
added to those histories. It does not when an answer was never recorded (the saga had stopped waiting:
a cancel while risk was asked, a risk timeout): the replay reports each payment whose recomputed features
differ from the recorded ones, and `payments risk train` prints how many.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from consumers.risk.features import (
    EMPTY_HISTORY,
    IDLE_FORGET,
    AccountHistory,
    Attempt,
    combined,
    payee_features,
    payer_features,
    record,
    record_outcome,
)
from consumers.risk.shadow import ShadowTally
from payments.contracts.base import SagaEvent
from payments.contracts.codes import RiskDecision
from payments.contracts.events import PaymentInitiated, RiskAssessed


@dataclass(frozen=True)
class Assessed:
    """One payment as payments.events records it: its PaymentInitiated and the RiskAssessed the saga kept."""

    attempt: Attempt
    decision: RiskDecision
    payer_seq: int
    payee_seq: int
    failures_before: tuple[str, ...]
    recorded: Mapping[str, float]  # the features the service computed ({} from a v1 service)
    model_version: str


@dataclass(frozen=True)
class Replayed:
    assessed: Assessed
    features: dict[str, float] | None  # recomputed; None when the service did not add it to both histories

    @property
    def payment_id(self) -> str:
        return self.assessed.attempt.payment_id

    @property
    def matches(self) -> bool | None:
        """Whether the recomputed features equal the recorded ones (None when either is missing)."""
        if self.features is None or not self.assessed.recorded:
            return None
        return self.features == dict(self.assessed.recorded)


def _in_service_order(payments: list[Assessed], seq: Callable[[Assessed], int]) -> list[Assessed]:
    """One account's payments of one side in the order the service added them: by recorded position, within
    each run of the history (a history idle for IDLE_FORGET started again at position 1)."""
    by_time = sorted(payments, key=lambda p: (p.attempt.at, seq(p)))
    runs: list[list[Assessed]] = []
    for payment in by_time:
        if not runs or payment.attempt.at - runs[-1][-1].attempt.at > IDLE_FORGET:
            runs.append([])
        runs[-1].append(payment)
    return [payment for run in runs for payment in sorted(run, key=seq)]


def _payer_side(payments: list[Assessed]) -> dict[str, dict[str, float]]:
    side: dict[str, dict[str, float]] = {}
    for account_payments in _by(payments, lambda p: p.attempt.payer, lambda p: p.payer_seq).values():
        history: AccountHistory = EMPTY_HISTORY
        for payment in _in_service_order(account_payments, lambda p: p.payer_seq):
            for failed in payment.failures_before:
                history = record_outcome(history, failed, "FAILED")
            side[payment.attempt.payment_id] = payer_features(history, payment.attempt)
            history = record(history, payment.attempt, "payer")
            if payment.decision == "DECLINE":
                history = record_outcome(history, payment.attempt.payment_id, "DECLINED")
    return side


def _payee_side(payments: list[Assessed]) -> dict[str, dict[str, float]]:
    side: dict[str, dict[str, float]] = {}
    for account_payments in _by(payments, lambda p: p.attempt.payee, lambda p: p.payee_seq).values():
        history: AccountHistory = EMPTY_HISTORY
        for payment in _in_service_order(account_payments, lambda p: p.payee_seq):
            side[payment.attempt.payment_id] = payee_features(history, payment.attempt)
            history = record(history, payment.attempt, "payee")
    return side


def _by(payments: list[Assessed], account: Callable[[Assessed], str],
        seq: Callable[[Assessed], int]) -> dict[str, list[Assessed]]:
    grouped: dict[str, list[Assessed]] = defaultdict(list)
    for payment in payments:
        if seq(payment) > 0:  # 0: the service did not add it to this history
            grouped[account(payment)].append(payment)
    return grouped


def replay(payments: Iterable[Assessed]) -> list[Replayed]:
    """Each payment's features, rebuilt as the service computed them (in the order given)."""
    found = list(payments)
    payer, payee = _payer_side(found), _payee_side(found)
    replayed = []
    for payment in found:
        pid = payment.attempt.payment_id
        both = pid in payer and pid in payee
        replayed.append(Replayed(payment, combined(payer[pid], payee[pid]) if both else None))
    return replayed


class Collector:
    """Gathers, from `payments.events` read in any partition order, each payment's terms and its risk answer.

    Keeps only what the replay needs (a few hundred bytes a payment). A payment id seen initiated again
    (a new generation after the saga forgot it) starts over."""

    def __init__(self) -> None:
        self._initiated: dict[str, Attempt] = {}  # only what the replay needs of each PaymentInitiated
        self._assessed: dict[str, Assessed] = {}
        self.events = 0
        self.v1_answers = 0  # RiskAssessed from a service before features were recorded (nothing to replay)
        self.shadows: dict[tuple[str, str], ShadowTally] = {}  # (active, candidate) -> the recorded comparison

    def add(self, event: SagaEvent) -> None:
        self.events += 1
        if isinstance(event, PaymentInitiated):
            self._initiated[event.payment_id] = Attempt(event.payment_id, event.occurred_at, event.payer_account,
                                                        event.payee_account, event.amount, event.partner)
            self._assessed.pop(event.payment_id, None)
        elif isinstance(event, RiskAssessed):
            if event.shadow is not None:
                tally = self.shadows.setdefault((event.model_version, event.shadow.model_version), ShadowTally())
                tally.add(active_bp=event.score_bp, active_declines=event.decision == "DECLINE",
                          candidate_bp=event.shadow.score_bp, candidate_declines=event.shadow.decision == "DECLINE")
            attempt = self._initiated.get(event.payment_id)
            if attempt is None:
                return  # its initiation is before the log's start (retention, compaction): nothing to replay
            if not event.features and event.payer_seq == 0:
                self.v1_answers += 1
            self._assessed[event.payment_id] = Assessed(
                attempt, event.decision, event.payer_seq, event.payee_seq, tuple(event.failures_before),
                event.features, event.model_version)

    def assessed(self) -> list[Assessed]:
        """Every payment with a risk answer, in the order its answer was read."""
        return list(self._assessed.values())


@dataclass(frozen=True)
class SkewReport:
    """How the replayed features compare with the recorded ones."""

    payments: int  # with a risk answer in the log
    rebuilt: int  # features rebuilt (added to both histories)
    compared: int  # ... of which the service recorded features
    equal: int
    differing: tuple[str, ...]  # payment ids whose features differ (the first ones)

    @property
    def exact(self) -> bool:
        return self.equal == self.compared


def skew(replayed: list[Replayed], shown_max: int = 10) -> SkewReport:
    compared = [r for r in replayed if r.matches is not None]
    differing = [r.payment_id for r in compared if not r.matches]
    return SkewReport(len(replayed), sum(r.features is not None for r in replayed), len(compared),
                      len(compared) - len(differing), tuple(differing[:shown_max]))
