"""The chaos run's schedule: a pure function of its seed, with the faults asked for, never two cluster
faults at once (tests/chaos/schedule.py)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.chaos.schedule import (
    CLUSTER_KINDS,
    LEADER_KILL,
    PROCESS_KILL,
    RECOVERY_S,
    FaultCounts,
    by_kind,
    plan,
)

PROCESSES = ["orchestrator#a", "orchestrator#b", "funds#a", "funds#b", "projection ledger"]


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    counts = FaultCounts()
    first = plan(7, 300.0, PROCESSES, counts)
    assert plan(7, 300.0, PROCESSES, counts) == first
    assert plan(8, 300.0, PROCESSES, counts) != first


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), traffic_s=st.floats(10.0, 2_000.0),
       kills=st.integers(0, 80), leaders=st.integers(0, 5), stalls=st.integers(0, 3), pg=st.integers(0, 2))
def test_every_fault_asked_for_is_planned_and_cluster_faults_never_overlap(
        seed: int, traffic_s: float, kills: int, leaders: int, stalls: int, pg: int) -> None:
    counts = FaultCounts(process_kills=kills, leader_kills=leaders, broker_stalls=stalls, postgres_stalls=pg,
                         postgres_restarts=pg, partner_outages=1)
    faults = plan(seed, traffic_s, PROCESSES, counts)
    assert by_kind(faults) == {kind: n for kind, n in {
        PROCESS_KILL: kills, LEADER_KILL: leaders, "broker SIGSTOP": stalls, "PostgreSQL SIGSTOP": pg,
        "PostgreSQL SIGKILL and restart": pg, "partner outage": 1}.items() if n}
    assert [f.at_s for f in faults] == sorted(f.at_s for f in faults)
    kills_planned = [f for f in faults if f.kind == PROCESS_KILL]
    assert all(0 <= f.at_s <= traffic_s and f.target in PROCESSES for f in kills_planned)
    cluster = [f for f in faults if f.kind in CLUSTER_KINDS]
    for before, after in itertools.pairwise(cluster):
        restart = 12.0 if before.kind == LEADER_KILL else 0.0
        assert after.at_s >= before.at_s + before.duration_s + restart + RECOVERY_S - 0.1, (before, after)
    assert all(f.duration_s > 0 for f in cluster)


def test_a_stall_outlasts_the_session_and_transaction_timeouts() -> None:
    from payments.runtime.config import ProcessorConfig

    config = ProcessorConfig()
    timeout_s = max(config.transaction_timeout_ms, config.session_timeout_ms) / 1000
    stalls = [f for f in plan(3, 600.0, PROCESSES, FaultCounts(broker_stalls=3)) if f.kind == "broker SIGSTOP"]
    assert stalls and all(f.duration_s > timeout_s for f in stalls)


def test_process_kills_without_processes_are_refused() -> None:
    with pytest.raises(ValueError, match="processes"):
        plan(1, 60.0, [], FaultCounts(process_kills=1))
