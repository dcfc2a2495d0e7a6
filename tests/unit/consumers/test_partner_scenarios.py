"""Forced simulator outcomes by payee, used by the demo and the saga path tests."""

from __future__ import annotations

from pathlib import Path

from consumers.partner.simulator import SimulatedPartner, SimulatorConfig
from payments.money import Money


def _partner(tmp_path: Path) -> SimulatedPartner:
    config = SimulatorConfig(decline_rate=0.0, error_rate=0.0, timeout_rate=0.0, latency_median_ms=0,
                             latency_p99_ms=0, seed=1, data_dir=tmp_path)
    return SimulatedPartner(config, sleep=lambda _: None)


def test_decline_payee_is_always_declined(tmp_path: Path) -> None:
    outcome = _partner(tmp_path).submit("s-1", Money.of(100, "EUR"), "acc-alice", "acc-sim-decline-1")
    assert outcome.outcome == "DECLINED"


def test_timeout_payee_times_out_but_the_partner_accepted_it(tmp_path: Path) -> None:
    partner = _partner(tmp_path)
    outcome = partner.submit("s-2", Money.of(100, "EUR"), "acc-alice", "acc-sim-timeout-1")
    assert (outcome.outcome, outcome.reason_code) == ("ERROR", "TIMEOUT")
    assert partner.query("s-2").status == "ACCEPTED"


def test_ordinary_payee_follows_the_configured_rates(tmp_path: Path) -> None:
    assert _partner(tmp_path).submit("s-3", Money.of(100, "EUR"), "acc-alice", "acc-bob").outcome == "ACCEPTED"
