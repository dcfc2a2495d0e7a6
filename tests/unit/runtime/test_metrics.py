"""Gauge sources (payments.runtime.metrics.Gauges) and the read-model gauges' caching (projections.gauges)."""

from __future__ import annotations

import psycopg

from payments.runtime.metrics import Gauges
from projections.gauges import OPEN_STATUSES, Cached


def test_a_gauge_reads_every_registered_source_and_skips_one_that_fails() -> None:
    gauges = Gauges()
    gauges.register("g", "a", lambda: [(1.0, {"service": "a"})])
    gauges.register("g", "b", lambda: [(2.0, {"service": "b", "partition": 3})])

    def broken() -> list[tuple[float, dict[str, str]]]:
        raise RuntimeError("the database is away")

    gauges.register("g", "c", broken)
    assert sorted((o.value, dict(o.attributes or {}).get("service")) for o in gauges.observe("g")) == [
        (1.0, "a"), (2.0, "b")]
    gauges.register("g", "a", lambda: [(5.0, {"service": "a"})])  # a rebuilt processor replaces its own
    gauges.unregister("g", "b")
    assert [o.value for o in gauges.observe("g")] == [5.0]
    assert gauges.observe("unknown") == []


def test_a_cached_database_gauge_asks_at_most_once_per_interval_even_when_the_ask_fails() -> None:
    now = [0.0]
    # Port 1 on loopback refuses at once: every real ask fails; in between, the last value (the empty one) stands.
    cached: Cached[dict[str, int]] = Cached("postgresql://postgres@127.0.0.1:1/x", lambda cur: {"asked": 1}, {},
                                            every_s=15.0, clock=lambda: now[0])
    failed = []
    for t in (0.0, 1.0, 14.9, 15.0, 16.0):
        now[0] = t
        try:
            assert cached.value() == {}
        except psycopg.OperationalError:
            failed.append(t)
    assert failed == [0.0, 15.0]
    assert OPEN_STATUSES[-1] == "COMPENSATION_FAILED"  # counted as open: it waits for an operator
