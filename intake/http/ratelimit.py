"""A token bucket per client: `rate_per_s` refill, `burst` capacity; pure (the clock is passed in)."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from intake.http.config import RateConfig


@dataclass
class Bucket:
    tokens: float
    at: float  # monotonic seconds of the last refill


class RateLimiter:
    """`take(client, now)` spends one token: 0.0 when allowed, else the seconds until a token is back.

    At most `clients_max` buckets are kept; the least recently used is dropped first (it is the most
    likely to be full again, and a dropped bucket only ever comes back full: never stricter).
    """

    def __init__(self, config: RateConfig) -> None:
        self.config = config
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def take(self, client: str, now: float) -> float:
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = Bucket(float(self.config.burst), now)
            self._buckets[client] = bucket
            while len(self._buckets) > self.config.clients_max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
            elapsed = max(0.0, now - bucket.at)
            bucket.tokens = min(float(self.config.burst), bucket.tokens + elapsed * self.config.per_s)
            bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self.config.per_s


def retry_after_header(wait_s: float) -> str:
    """Retry-After is whole seconds (RFC 9110): round up, at least 1."""
    return str(max(1, math.ceil(wait_s)))
