"""Timeouts, retry bounds and backoff of every awaited saga step, in one place.

An awaited reply's window is `timeout + jittered backoff(attempt)`: the command is (re)issued at the
start of the window and the next attempt is issued when it ends. Folding the backoff into the window
keeps one timer per payment and lets a reply that arrives during the backoff still count.

Jitter must be pure (the same decision twice yields the same deadline), so it is derived from a hash
of the payment id, the step and the attempt instead of a random number generator.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Final, Literal

Step = Literal["RISK", "FUNDS_RESERVE", "PARTNER_SUBMIT", "PARTNER_QUERY", "FUNDS_COMMIT", "FUNDS_RELEASE"]


@dataclass(frozen=True)
class StepPolicy:
    timeout_ms: int
    attempts_max: int  # reissues of the same step, including the first one


BACKOFF_BASE_MS: Final = 1_000
BACKOFF_CAP_MS: Final = 60_000

POLICIES: Final[dict[Step, StepPolicy]] = {
    "RISK": StepPolicy(timeout_ms=30_000, attempts_max=3),
    "FUNDS_RESERVE": StepPolicy(timeout_ms=30_000, attempts_max=3),
    # A submission is never reissued on a timeout: the outcome is unknown, so the partner is queried.
    # attempts_max bounds resubmissions after the partner said NOT_FOUND.
    "PARTNER_SUBMIT": StepPolicy(timeout_ms=60_000, attempts_max=3),
    "PARTNER_QUERY": StepPolicy(timeout_ms=30_000, attempts_max=8),
    "FUNDS_COMMIT": StepPolicy(timeout_ms=30_000, attempts_max=10),
    "FUNDS_RELEASE": StepPolicy(timeout_ms=30_000, attempts_max=10),
}


def backoff_ms(payment_id: str, step: Step, attempt: int) -> int:
    """Full jitter: uniform in [0, min(cap, base * 2**(attempt-1))], deterministic per (payment, step, attempt).

    The first attempt has no backoff: it is issued as soon as the saga gets there.
    """
    assert attempt >= 1
    if attempt == 1:
        return 0
    ceiling: int = min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** min(attempt - 1, 30))
    digest = hashlib.sha256(f"{payment_id}:{step}:{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (ceiling + 1)


def window(payment_id: str, step: Step, attempt: int, time_scale: float = 1.0) -> timedelta:
    """How long attempt `attempt` of `step` waits for its reply before the timer fires.

    `time_scale` (SagaConfig) shrinks it for tests and demos; production runs at 1.
    """
    return timedelta(milliseconds=round((POLICIES[step].timeout_ms + backoff_ms(payment_id, step, attempt))
                                        * time_scale))


def window_max(step: Step, attempt: int, time_scale: float = 1.0) -> timedelta:
    """Upper bound of `window` for any payment (for tests and capacity notes)."""
    ceiling = 0 if attempt == 1 else min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** min(attempt - 1, 30))
    return timedelta(milliseconds=round((POLICIES[step].timeout_ms + ceiling) * time_scale))
