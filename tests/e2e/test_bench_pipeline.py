"""The pipeline benchmark's harness works (benchmarks/pipeline.py, `make bench`), in seconds: every
process starts, the load generator's payments are all seen by each of its watchers, the figures are
filled in and the plots written. Proves the harness, not a speed: no figure here is compared to a target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ops.registry import process_args

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def test_the_pipeline_benchmark_sees_every_payment_settle_and_writes_its_figures_and_plots(
        kafka_bootstrap: str, postgres_server_url: str, tmp_path: Path) -> None:
    results = tmp_path / "results"
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "DATABASE_URL": postgres_server_url}
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pipeline.py"), "--payments", "30", "--warmup", "0",
                          "--fractions", "0.5", "--seconds", "1", "--hops", "--results", str(results),
                          "--timeout-s", "120"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600,
                         check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    figures = json.loads((results / "results.json").read_text())
    burst = figures["max"]
    assert burst["published"] == 30 and not burst["timed_out"]
    assert burst["outcomes"] == {"SETTLED": 30}
    assert burst["settlement_events"] == burst["status_final"] == burst["ledger_settled"] == 30
    assert burst["rate_per_s"] > 0 and burst["drain_per_s"] >= 0 and burst["kafka_offsets_per_payment"] > 1
    assert burst["pg_transactions_per_payment"] > 0
    assert figures["conditions"]["processes"] == ["-".join(args) for args in process_args()]
    assert set(burst["cpu_s"]) == set(figures["conditions"]["processes"])
    assert all(figures["peak_rss_mb"][name] > 0 for name in figures["conditions"]["processes"])
    (step,) = figures["open_loop"]
    assert step["published"] >= 20 and step["status_final"] == step["published"]
    for path in ("to_settlement_ms", "to_status_ms", "to_ledger_ms"):
        cuts = step[path]
        assert cuts["count"] == step["published"]
        assert 0 < cuts["p50"] <= cuts["p99"] <= cuts["max"], (path, cuts)
    for plot in ("latency_vs_rate.png", "throughput.png"):
        assert (results / plot).read_bytes()[:8] == PNG
    summary = (results / "summary.md").read_text()
    assert "payments/s** from the first publish" in summary and "| orchestrator |" in summary
