"""The saga's configuration, passed into `OrchestratorLogic` by the composition root (`ops`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SagaConfig:
    """`time_scale` shrinks every reply window and backoff (0.01 = 100x faster): tests and demos only.

    The decision stays a pure function of (state, message, now, config).
    """

    time_scale: float = 1.0
    # The partners a payment may name (InitiatePayment.partner); any other is rejected UNKNOWN_PARTNER.
    partners: frozenset[str] = frozenset({"simbank"})

    def __post_init__(self) -> None:
        if not 0 < self.time_scale <= 1:
            raise ValueError(f"saga time scale must be in (0, 1], got {self.time_scale}")
        if not self.partners:
            raise ValueError("at least one partner must be configured")
