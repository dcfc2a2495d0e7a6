"""A circuit breaker per partner, and the throttle a 429 sets: pure state machines over an injected clock.

closed -> open: within the last `window_s`, at least `calls_min` calls ended and at least
`failure_ratio` of them failed (a 5xx, a timeout, a refused or dropped connection; a 4xx answer is a
success: the partner is up and said no; a 429 is neither).
open -> half-open: after `open_s` (doubling on each re-open, up to `open_max_s`), one call, the probe,
is let through; the others keep waiting.
half-open -> closed when the probe succeeds, -> open again when it fails.

While the breaker is open no call starts: the gateway's calls wait (their saga's timers decide what
happens to them), they are not failed by the gateway.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

State = Literal["closed", "open", "half_open"]
Transition = tuple[State, State]


@dataclass(frozen=True)
class BreakerConfig:
    window_s: float = 10.0
    calls_min: int = 10
    failure_ratio: float = 0.5
    open_s: float = 2.0
    open_max_s: float = 30.0

    def __post_init__(self) -> None:
        assert self.window_s > 0 and self.calls_min > 0 and 0 < self.failure_ratio <= 1
        assert 0 < self.open_s <= self.open_max_s


NEVER: Final = float("inf")


class Breaker:
    """Not thread-safe: one per partner, used from the call runner's event loop only."""

    def __init__(self, config: BreakerConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self._clock = clock
        self.state: State = "closed"
        self._results: deque[tuple[float, bool]] = deque()  # (when, failed) within the window
        self._opened_at = 0.0
        self._open_for = config.open_s
        self._probe_out = False
        self.opened = 0  # times opened since start (for logs and metrics)

    def acquire(self) -> tuple[bool, Transition | None]:
        """May a call start now? (and the state change this caused, if any)."""
        if self.state == "closed":
            return True, None
        if self.state == "open":
            if self._clock() < self._opened_at + self._open_for:
                return False, None
            self.state = "half_open"
            self._probe_out = True
            return True, ("open", "half_open")
        if self._probe_out:
            return False, None
        self._probe_out = True
        return True, None

    def wait_s(self) -> float:
        """How long until `acquire` may say yes (0 when it may now; NEVER while a probe is out)."""
        if self.state == "closed":
            return 0.0
        if self.state == "open":
            return max(0.0, self._opened_at + self._open_for - self._clock())
        return NEVER if self._probe_out else 0.0

    def succeeded(self) -> Transition | None:
        if self.state == "half_open":
            self._close()
            return "half_open", "closed"
        self._record(failed=False)
        return None

    def failed(self) -> Transition | None:
        now = self._clock()
        if self.state == "half_open":
            self._open_for = min(self.config.open_max_s, self._open_for * 2)
            self._open(now)
            return "half_open", "open"
        if self.state == "open":
            return None  # a call that started before it opened
        self._record(failed=True)
        failures = sum(1 for _, failed in self._results if failed)
        if len(self._results) >= self.config.calls_min and failures >= self.config.failure_ratio * len(self._results):
            self._open(now)
            return "closed", "open"
        return None

    def released(self) -> None:
        """The probe ended with neither success nor failure (a 429, a cancellation): let another probe go."""
        if self.state == "half_open":
            self._probe_out = False

    def counts(self) -> tuple[int, int]:
        """(calls, failures) in the current window."""
        self._trim(self._clock())
        return len(self._results), sum(1 for _, failed in self._results if failed)

    def _record(self, *, failed: bool) -> None:
        now = self._clock()
        self._results.append((now, failed))
        self._trim(now)

    def _trim(self, now: float) -> None:
        while self._results and self._results[0][0] < now - self.config.window_s:
            self._results.popleft()

    def _open(self, now: float) -> None:
        self.state = "open"
        self._opened_at = now
        self._probe_out = False
        self._results.clear()
        self.opened += 1

    def _close(self) -> None:
        self.state = "closed"
        self._probe_out = False
        self._open_for = self.config.open_s
        self._results.clear()


class Throttle:
    """The partner said 429 with Retry-After: no call to it starts before then."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._until = 0.0

    def hold(self, seconds: float) -> None:
        self._until = max(self._until, self._clock() + seconds)

    def wait_s(self) -> float:
        return max(0.0, self._until - self._clock())
