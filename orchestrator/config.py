"""The saga's configuration, passed into `OrchestratorLogic` by the composition root (`ops`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass(frozen=True)
class SagaConfig:
    """`time_scale` shrinks every reply window and backoff (0.01 = 100x faster): tests and demos only.

    The decision stays a pure function of (state, message, now, config).
    """

    time_scale: float = 1.0
    # The partners a payment may name (InitiatePayment.partner); any other is rejected UNKNOWN_PARTNER.
    partners: frozenset[str] = frozenset({"simbank"})
    # A settled payment takes refunds this long after its settlement (then REFUND_WINDOW_CLOSED).
    refund_window: timedelta = timedelta(days=90)
    # A finished payment is remembered this long after its last event, and a settled one at least until
    # its refund window closes; then its state is deleted (docs/saga.md, "Retention"). An InitiatePayment
    # requested longer ago than this is rejected REQUEST_EXPIRED, so a forgotten payment id is never
    # started again by an old command.
    retention: timedelta = timedelta(days=7)
    # How far ahead of the saga's clock an InitiatePayment's requested_at may be (else REQUESTED_IN_FUTURE):
    # with it, every accepted payment is forgotten only after any retry of it has expired.
    clock_skew: timedelta = timedelta(minutes=5)

    def __post_init__(self) -> None:
        if not 0 < self.time_scale <= 1:
            raise ValueError(f"saga time scale must be in (0, 1], got {self.time_scale}")
        if not self.partners:
            raise ValueError("at least one partner must be configured")
        if self.refund_window < timedelta(0) or self.retention <= timedelta(0):
            raise ValueError(f"refund window {self.refund_window} must be >= 0 and retention {self.retention} > 0")
