"""The simulated partner: seeded outcomes, durability across restarts, settlement reports, forced
outcomes by payee. Integration, not unit: every recorded decision is fsynced to its data directory."""

from __future__ import annotations

import csv
import uuid
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from consumers.partner.client import QueryOutcome, SubmissionOutcome
from consumers.partner.logic import PartnerGatewayLogic
from consumers.partner.simulator import SimulatedPartner, SimulatorConfig
from payments.contracts.participants import PartnerSubmissionResult, SubmitToPartner
from payments.contracts.topics import PARTNER_COMMANDS
from payments.money import Money
from tests.unit.consumers.helpers import NOW, incoming

pytestmark = pytest.mark.integration

EUR_10 = Money.of(1000, "EUR")


def simulator(tmp_path: Path, clock: list[datetime] | None = None, **rates: float) -> SimulatedPartner:
    moments = clock or [NOW]
    config = SimulatorConfig(data_dir=tmp_path, seed=42, **{"decline_rate": 0.0, "timeout_rate": 0.0, **rates})
    return SimulatedPartner(config, sleep=lambda _s: None, clock=lambda: moments[0])


def test_rates_are_within_tolerance_over_many_submissions(tmp_path: Path) -> None:
    partner = simulator(tmp_path, decline_rate=0.1, error_rate=0.05, timeout_rate=0.05)
    counts = {"ACCEPTED": 0, "DECLINED": 0, "ERROR": 0, "TIMEOUT": 0}
    n = 5000
    for i in range(n):
        outcome = partner.submit(f"sub-{i}", EUR_10, "acc-a", "acc-b")
        key = "TIMEOUT" if outcome.reason_code == "TIMEOUT" else outcome.outcome
        counts[key] += 1
    assert abs(counts["DECLINED"] / n - 0.10) < 0.015
    assert abs(counts["ERROR"] / n - 0.05) < 0.01
    assert abs(counts["TIMEOUT"] / n - 0.05) < 0.01
    assert abs(counts["ACCEPTED"] / n - 0.80) < 0.02


def test_same_seed_gives_the_same_outcomes(tmp_path: Path) -> None:
    first = simulator(tmp_path / "1", decline_rate=0.3, timeout_rate=0.2)
    second = simulator(tmp_path / "2", decline_rate=0.3, timeout_rate=0.2)
    ids = [f"sub-{i}" for i in range(200)]
    assert [first.submit(i, EUR_10, "a", "b") for i in ids] == [second.submit(i, EUR_10, "a", "b") for i in ids]


def test_resubmission_returns_the_first_outcome_and_no_second_payment(tmp_path: Path) -> None:
    partner = simulator(tmp_path, decline_rate=0.5)
    outcomes = [partner.submit(f"sub-{i}", EUR_10, "a", "b") for i in range(50)]
    again = [partner.submit(f"sub-{i}", EUR_10, "a", "b") for i in range(50)]
    assert outcomes == again
    assert {o.outcome for o in outcomes} == {"ACCEPTED", "DECLINED"}
    assert partner.write_settlement_report(NOW.date(), tmp_path / "r.csv") == 50


def test_timeout_means_accepted_but_unheard_and_a_query_finds_it(tmp_path: Path) -> None:
    partner = simulator(tmp_path, timeout_rate=1.0)
    outcome = partner.submit("sub-1", EUR_10, "a", "b")
    assert (outcome.outcome, outcome.reason_code, outcome.partner_reference) == ("ERROR", "TIMEOUT", None)
    found = partner.query("sub-1")
    assert found.status == "ACCEPTED" and found.partner_reference
    assert partner.submit("sub-1", EUR_10, "a", "b") == SubmissionOutcome("ACCEPTED", found.partner_reference)
    assert partner.query("sub-unknown") == QueryOutcome("NOT_FOUND")


def test_partner_error_records_nothing_and_a_retry_draws_afresh(tmp_path: Path) -> None:
    partner = simulator(tmp_path, error_rate=0.5)
    errored = [f"sub-{i}" for i in range(40) if partner.submit(f"sub-{i}", EUR_10, "a", "b").outcome == "ERROR"]
    assert errored
    assert all(partner.query(i).status == "NOT_FOUND" for i in errored)
    retried = [partner.submit(i, EUR_10, "a", "b").outcome for i in errored]
    assert "ACCEPTED" in retried


def test_state_survives_a_restart(tmp_path: Path) -> None:
    partner = simulator(tmp_path, decline_rate=0.5)
    outcomes = [partner.submit(f"sub-{i}", EUR_10, "a", "b") for i in range(20)]
    (tmp_path / "submissions.jsonl").open("a").write('{"kind": "recor')  # a torn line from a crash
    restarted = simulator(tmp_path, decline_rate=0.0)  # other rates: recorded outcomes must still win
    assert [restarted.submit(f"sub-{i}", EUR_10, "a", "b") for i in range(20)] == outcomes


def test_settlement_report_lists_the_days_submissions(tmp_path: Path) -> None:
    clock = [datetime(2025, 3, 14, 10, tzinfo=UTC)]
    partner = simulator(tmp_path, clock=clock, decline_rate=0.5)
    outcomes = {f"sub-{i}": partner.submit(f"sub-{i}", Money.of(100 + i, "EUR"), "a", "b") for i in range(10)}
    clock[0] = datetime(2025, 3, 15, 0, 0, 1, tzinfo=UTC)
    partner.submit("sub-next-day", EUR_10, "a", "b")
    rolled = partner.report_path(date(2025, 3, 14))  # written when the next day's first submission came
    assert rolled.exists()
    path = tmp_path / "report.csv"
    assert partner.write_settlement_report(date(2025, 3, 14), path) == 10
    assert path.read_text() == rolled.read_text()
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["date", "submission_id", "partner_reference", "amount_minor", "currency", "status"]
    for row in rows:
        outcome = outcomes[row["submission_id"]]
        assert row["date"] == "2025-03-14" and row["currency"] == "EUR"
        assert row["status"] == outcome.outcome
        assert row["partner_reference"] == (outcome.partner_reference or "")
        assert int(row["amount_minor"]) == 100 + int(row["submission_id"].removeprefix("sub-"))


def test_latency_is_drawn_from_the_configured_distribution(tmp_path: Path) -> None:
    slept: list[float] = []
    config = SimulatorConfig(data_dir=tmp_path, latency_median_ms=20, latency_p99_ms=100)
    partner = SimulatedPartner(config, sleep=slept.append)
    for i in range(2000):
        partner.submit(f"sub-{i}", EUR_10, "a", "b")
    slept.sort()
    assert 0.017 < slept[1000] < 0.023
    assert 0.07 < slept[1980] < 0.14


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


def submit_command() -> SubmitToPartner:
    return SubmitToPartner(payment_id="pay-1", command_id=str(uuid.uuid4()), issued_at=NOW, partner="simbank",
                           submission_id="pay-1:1", amount=EUR_10, payer_account="acc-a", payee_account="acc-b")


def gateway_reply(logic: PartnerGatewayLogic, command: SubmitToPartner) -> object:
    (out,) = logic.decide(None, incoming(command, PARTNER_COMMANDS), NOW).outgoing
    return out.message


def test_gateway_over_the_simulator_never_pays_twice_for_a_resent_submission(tmp_path: Path) -> None:
    partner = simulator(tmp_path, timeout_rate=1.0)
    logic = PartnerGatewayLogic(partner)
    first = gateway_reply(logic, submit_command())
    second = gateway_reply(logic, submit_command())  # a resubmission with a new command id
    assert isinstance(first, PartnerSubmissionResult) and isinstance(second, PartnerSubmissionResult)
    assert (first.outcome, first.reason_code) == ("ERROR", "TIMEOUT")
    assert second.outcome == "ACCEPTED"
    assert partner.write_settlement_report(NOW.date(), tmp_path / "r.csv") == 1
