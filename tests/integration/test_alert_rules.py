"""The Prometheus configuration and alert rules in deploy/prometheus, checked and unit-tested by the real
promtool (Debian's prometheus package, fetched by ops.stack.prometheus into the cache)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ops.stack.prometheus import fetch_prometheus

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(fetch_prometheus() / "promtool"), *args], cwd=DEPLOY, capture_output=True, text=True,
                          timeout=120, check=False)


def test_the_config_and_the_rules_are_valid() -> None:
    run = _promtool("check", "config", "prometheus.yml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS: 18 rules found" in run.stdout  # the rule file the config loads, every rule in it


def test_every_alert_fires_on_its_condition_and_not_short_of_it() -> None:
    run = _promtool("test", "rules", "tests/payments_test.yml")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_every_alert_has_a_runbook_and_a_test() -> None:
    rules = (DEPLOY / "rules" / "payments.yml").read_text()
    tests = (DEPLOY / "tests" / "payments_test.yml").read_text()
    alerts = [line.split(":", 1)[1].strip() for line in rules.splitlines() if line.strip().startswith("- alert:")]
    assert len(alerts) == 14
    for alert in alerts:
        assert f"alertname: {alert}" in tests, f"{alert} has no promtool test"
    runbooks = {line.split("runbook_url:", 1)[1].strip() for line in rules.splitlines() if "runbook_url:" in line}
    root = DEPLOY.parents[1]
    missing = [path for path in runbooks if not (root / path).is_file()]
    assert not missing, f"runbooks named by the rules but not written: {missing}"
