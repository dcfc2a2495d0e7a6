"""The short chaos run in `make test`: a few hundred payments on the three-broker cluster while one fault
of every cluster kind and a few process kills strike (`make chaos` runs the long one, tests/chaos/run.py).

It fails when any check of the run's table fails: a payment lost or doubled, a settlement event missing or
extra, the partner recording a submission twice, money that does not add up, a projection that differs
from a fresh replay, a process that crashed or stayed unhealthy.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.chaos.run import ChaosConfig, run
from tests.chaos.schedule import CLUSTER_KINDS, PROCESS_KILL, FaultCounts

pytestmark = pytest.mark.chaos


def test_a_short_seeded_chaos_run_loses_duplicates_and_unbalances_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("PAYMENTS_CHAOS_SEED", "11"))
    config = ChaosConfig(seed=seed, payments=320, rate=8.0, counts=FaultCounts(
        process_kills=6, leader_kills=1, broker_stalls=1, postgres_stalls=1, postgres_restarts=1, partner_outages=1),
        quiescence_timeout_s=300, out_dir=tmp_path / "chaos")
    report = run(config, log=lambda line: sys.stderr.write(line + "\n"))
    sys.stderr.write("\n" + report.table() + "\n")
    assert report.ok, report.table()
    struck = report.figures["faults"]
    assert set(struck) == {PROCESS_KILL, *CLUSTER_KINDS}, f"every kind of fault must strike: {struck}"
    assert report.figures["lost"] == report.figures["duplicated"] == report.figures["unbalanced"] == 0
