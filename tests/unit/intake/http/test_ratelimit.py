from __future__ import annotations

from intake.http.config import RateConfig
from intake.http.ratelimit import RateLimiter, retry_after_header


def test_a_client_gets_its_burst_then_waits_for_the_refill() -> None:
    limiter = RateLimiter(RateConfig(per_s=2.0, burst=3))
    assert [limiter.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", 0.0) == 0.5  # one token comes back every 0.5 s
    assert limiter.take("a", 0.5) == 0.0
    assert limiter.take("a", 0.5) > 0


def test_clients_have_buckets_of_their_own() -> None:
    limiter = RateLimiter(RateConfig(per_s=1.0, burst=1))
    assert limiter.take("a", 0.0) == 0.0
    assert limiter.take("a", 0.0) > 0
    assert limiter.take("b", 0.0) == 0.0


def test_the_bucket_never_holds_more_than_the_burst() -> None:
    limiter = RateLimiter(RateConfig(per_s=100.0, burst=2))
    limiter.take("a", 0.0)
    assert [limiter.take("a", 3600.0) for _ in range(3)][-1] > 0


def test_buckets_are_bounded_and_a_dropped_one_comes_back_full() -> None:
    limiter = RateLimiter(RateConfig(per_s=1.0, burst=1, clients_max=2))
    for client in ("a", "b", "c"):
        assert limiter.take(client, 0.0) == 0.0
    assert len(limiter._buckets) == 2
    assert limiter.take("a", 0.0) == 0.0  # "a" was dropped: full again, never stricter


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert [retry_after_header(s) for s in (0.01, 1.0, 1.2)] == ["1", "1", "2"]
