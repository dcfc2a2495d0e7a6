"""What the risk service exports about its models (payments.runtime.metrics): decisions by model and by
what declined, scores by bin, and for a candidate in shadow its agreement with the active model and the
PSI of its scores against the active model's (docs/risk.md, "Shipping safely").

Counted from committed answers only (the loop calls `observe` after a commit), per instance: the gauges
cover the payments this instance scored since the current candidate started in shadow here; the counters
sum across instances, for a fleet-wide view (`payments risk shadow-report` reads the recorded scores).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from consumers.risk.logic import Answer, Observer
from consumers.risk.scoring import SCORE_ABOVE_THRESHOLD
from consumers.risk.shadow import SCORE_EDGES_BP, ShadowTally, bin_of
from payments.runtime import metrics

SERVICE = "risk"
_BIN_LABELS = (*(str(edge) for edge in SCORE_EDGES_BP), "+Inf")  # a bin is named by its upper bound, as le=


def declined_by(answer: Answer) -> str:
    """What declined a payment: "model" (its score; rules may have too), "rules", or "none" (approved)."""
    if answer.decision == "APPROVE":
        return "none"
    return "model" if SCORE_ABOVE_THRESHOLD in answer.reasons else "rules"


class RiskTelemetry(Observer):
    """The risk service's model metrics. `models` tells which (active, candidate) the service scores with now."""

    def __init__(self, models: Callable[[], tuple[str, str | None]]) -> None:
        self._models = models
        self._lock = threading.Lock()
        self._pair: tuple[str, str] | None = None
        self._tally = ShadowTally()
        metrics.GAUGES.register(metrics.RISK_MODEL, SERVICE, self._model_info)
        metrics.GAUGES.register(metrics.RISK_SHADOW_AGREEMENT, SERVICE, lambda: self._shadow(lambda t: t.agreement))
        metrics.GAUGES.register(metrics.RISK_SHADOW_PSI, SERVICE, lambda: self._shadow(lambda t: t.drift))

    def __call__(self, answers: list[Answer]) -> None:
        for answer in answers:
            by = declined_by(answer)
            metrics.RISK_ASSESSMENTS.add(1, {"model_version": answer.model_version, "decision": answer.decision,
                                             "declined_by": by})
            metrics.RISK_SCORES.add(1, {"model_version": answer.model_version, "role": "active",
                                        "bin": _BIN_LABELS[bin_of(answer.score_bp)]})
            shadow = answer.shadow
            if shadow is None:
                continue
            metrics.RISK_SCORES.add(1, {"model_version": shadow.model_version, "role": "candidate",
                                        "bin": _BIN_LABELS[bin_of(shadow.score_bp)]})
            metrics.RISK_SHADOW_DECISIONS.add(1, {"active": answer.model_version, "candidate": shadow.model_version,
                                                  "active_decision": answer.decision,
                                                  "candidate_decision": shadow.decision})
            with self._lock:
                pair = (answer.model_version, shadow.model_version)
                if pair != self._pair:  # a new candidate (or a new active): judged afresh
                    self._pair, self._tally = pair, ShadowTally()
                self._tally.add(active_bp=answer.score_bp, active_declines=answer.decision == "DECLINE",
                                candidate_bp=shadow.score_bp, candidate_declines=shadow.decision == "DECLINE")

    def _model_info(self) -> Iterable[tuple[float, dict[str, str]]]:
        active, candidate = self._models()
        found = [(1.0, {"role": "active", "version": active})]
        if candidate is not None:
            found.append((1.0, {"role": "candidate", "version": candidate}))
        return found

    def _shadow(self, measure: Callable[[ShadowTally], float]) -> Iterable[tuple[float, dict[str, str]]]:
        with self._lock:
            if self._pair is None or self._pair != self._models():
                return []
            return [(measure(self._tally), {"active": self._pair[0], "candidate": self._pair[1]})]
