"""`payments reconcile` on real PostgreSQL (the real migrations and projection code) against the real
partner simulator process, whose records are made through its own HTTP API."""

from __future__ import annotations

import csv
import json
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ops.cli import main
from ops.reconcile import CSV_COLUMNS
from ops.supervisor import ServiceProcess, free_port
from orchestrator.state import submission_id
from payments.contracts.messages import Message, SubmittedToPartner
from projections.ledger import LedgerProjection
from projections.report import SettlementReportProjection
from projections.runner import RecordMeta
from projections.status import PaymentStatusProjection
from tests.unit.projections.events import committed, initiated, refunded, reserved, settled, settlement

pytestmark = pytest.mark.integration

META = RecordMeta("payments.events", 0, 0, 0)


@dataclass(frozen=True)
class Partner:
    url: str
    port: int


@pytest.fixture
def partner(tmp_path: Path) -> Iterator[Partner]:
    """The simulator process (`payments run partner-sim`): accepts everything except forced declines."""
    port = free_port()
    env = {"PAYMENTS_PARTNER_SIM_PORT": str(port), "PAYMENTS_PARTNER_DATA_DIR": str(tmp_path / "partner"),
           "PAYMENTS_PARTNER_LATENCY_MS": "1", "PAYMENTS_PARTNER_TIMEOUT_RATE": "0",
           "PAYMENTS_PARTNER_DECLINE_RATE": "0"}
    process = ServiceProcess(["partner-sim"], log_dir=tmp_path, env=env).start().wait_ready()
    try:
        yield Partner(f"http://127.0.0.1:{port}", port)
    finally:
        assert process.stop() == 0, process.log_tail()


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, database_url: str, partner: Partner) -> str:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("PAYMENTS_PARTNERS", "simbank")
    monkeypatch.setenv("PAYMENTS_PARTNER_SIM_PORT", str(partner.port))
    monkeypatch.delenv("PAYMENTS_PARTNER_ENDPOINTS", raising=False)
    return database_url


def submit(partner: Partner, payment_id: str, amount: int, currency: str, payee: str = "bob") -> str:
    """A transfer through the partner's API, as the gateway makes it; the partner's status."""
    body = json.dumps({"amount_minor": amount, "currency": currency, "payer": "alice", "payee": payee}).encode()
    request = urllib.request.Request(f"{partner.url}/v1/transfers", data=body, method="POST",
                                     headers={"Idempotency-Key": submission_id(payment_id),
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
        answer: dict[str, Any] = json.load(response)
    return str(answer["status"])


def now(message: Message, at: datetime) -> Message:
    return message.model_copy(update={"occurred_at": at} if hasattr(message, "occurred_at") else {"settled_at": at})


def settle(database_url: str, payment_id: str, amount: int, currency: str, at: datetime,
           refund: int = 0) -> None:
    """A settled payment as the projections write it: its saga events through the ledger and payment_status
    projections, its settlement event(s) through the settlement_report projection, in one transaction."""
    events = [initiated(payment_id, amount, currency), reserved(payment_id, amount, currency),
              committed(payment_id, amount, currency), settled(payment_id, amount, currency)]
    settlements = [settlement(payment_id, amount, currency)]
    if refund:
        events.append(refunded(payment_id, refund, currency))
        settlements.append(settlement(payment_id, refund, currency, kind="REFUND"))
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        LedgerProjection().apply_batch(cur, [(now(e, at), META) for e in events])
        PaymentStatusProjection().apply_batch(cur, [(now(e, at), META) for e in events])
        SettlementReportProjection().apply_batch(cur, [(now(s, at), META) for s in settlements])


def submitted_only(database_url: str, payment_id: str, amount: int, currency: str, at: datetime) -> None:
    """A payment we submitted and never settled, as payment_status records it."""
    events = [initiated(payment_id, amount, currency),
              SubmittedToPartner(payment_id=payment_id, event_id=str(uuid.uuid4()), seq=5, occurred_at=at,
                                 causation_id=str(uuid.uuid4()), partner="simbank", attempt=1,
                                 submission_id=submission_id(payment_id))]
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        PaymentStatusProjection().apply_batch(cur, [(now(e, at), META) for e in events])


def a_matching_day(database_url: str, partner: Partner, at: datetime) -> list[str]:
    """Three settled payments the partner accepted (one refunded since), one the partner declined and we never
    settled; both sides agree."""
    ids = [f"pay-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for payment_id, (amount, currency, refund) in zip(ids, [(1250, "EUR", 0), (98000, "JPY", 0),
                                                            (4000, "GBP", 1500)], strict=True):
        assert submit(partner, payment_id, amount, currency) == "ACCEPTED"
        settle(database_url, payment_id, amount, currency, at, refund)
    assert submit(partner, f"pay-declined-{uuid.uuid4().hex[:6]}", 700, "EUR", payee="acc-sim-decline") == "DECLINED"
    return ids


def reconcile(tmp_path: Path, day: str, *extra: str) -> tuple[int, Path]:
    path = tmp_path / f"out-{day}.csv"
    return main(["reconcile", "--date", day, "--csv", str(path), *extra]), path


def test_a_day_where_ledger_and_partner_agree_exits_0_with_an_empty_csv(
        environment: str, partner: Partner, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    at = datetime.now(UTC)
    a_matching_day(environment, partner, at)
    code, path = reconcile(tmp_path, at.date().isoformat())
    out = capsys.readouterr().out
    assert code == 0, out
    assert "discrepancies: 0" in out and "accuracy: 3/3 = 100.00%" in out
    assert "3 settlements in the ledger, 1 refunds" in out and "partner: 4 transfers booked" in out
    with path.open() as handle:
        assert list(csv.reader(handle)) == [list(CSV_COLUMNS)]


def test_each_injected_discrepancy_is_found_exactly_once_and_exits_1(
        environment: str, partner: Partner, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    at = datetime.now(UTC)
    day = at.date().isoformat()
    a_matching_day(environment, partner, at)
    # 1. a settlement in our ledger the partner never received
    gone = f"pay-gone-{uuid.uuid4().hex[:6]}"
    settle(environment, gone, 3300, "EUR", at)
    # 2. a transfer the partner accepted that we submitted and never settled
    stray = f"pay-stray-{uuid.uuid4().hex[:6]}"
    assert submit(partner, stray, 2100, "USD") == "ACCEPTED"
    submitted_only(environment, stray, 2100, "USD", at)
    # 3. the partner moved another amount than we settled
    off = f"pay-off-{uuid.uuid4().hex[:6]}"
    assert submit(partner, off, 1010, "EUR") == "ACCEPTED"
    settle(environment, off, 1000, "EUR", at)

    code, path = reconcile(tmp_path, day)
    out = capsys.readouterr().out
    with capsys.disabled():  # the output docs/operations.md shows (pytest -s)
        print(out)
    assert code == 1, out
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    found = sorted((r["kind"], r["payment_id"], r["submission_id"], r["our_amount_minor"], r["our_currency"],
                    r["partner_amount_minor"], r["partner_currency"]) for r in rows)
    assert found == sorted([
        ("missing_at_partner", gone, submission_id(gone), "3300", "EUR", "", ""),
        ("missing_in_ledger", "", submission_id(stray), "", "", "2100", "USD"),
        ("amount_mismatch", off, submission_id(off), "1000", "EUR", "1010", "EUR"),
    ])
    assert all(r["partner"] == "simbank" for r in rows)
    [stray_row] = [r for r in rows if r["kind"] == "missing_in_ledger"]
    assert f"we submitted it as payment {stray}" in stray_row["detail"]
    assert "accuracy: 3/6 = 50.00%" in out and "discrepancies: 3" in out

    code, _ = reconcile(tmp_path, day, "--json")
    result = json.loads(capsys.readouterr().out)
    assert (code, result["clean"], result["matched"], result["total"]) == (1, False, 3, 6)
    assert (result["accuracy"], result["accuracy_percent"]) == ("1/2", "50.00")
    assert sorted(d["kind"] for d in result["discrepancies"]) == ["amount_mismatch", "missing_at_partner",
                                                                   "missing_in_ledger"]


def test_an_empty_day_is_clean(environment: str, partner: Partner, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = reconcile(tmp_path, "2020-02-29")
    assert code == 0
    assert "accuracy: 0/0" in capsys.readouterr().out


def test_an_unreachable_partner_is_one_line_and_exit_1(
        monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("PAYMENTS_PARTNERS", "simbank")
    monkeypatch.setenv("PAYMENTS_PARTNER_ENDPOINTS", f"simbank=http://127.0.0.1:{free_port()}")
    code, path = reconcile(tmp_path, "2026-11-30")
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("payments reconcile: partner simbank at http://127.0.0.1:")
    assert "cannot fetch the report" in err
    assert not path.exists()


def test_an_unreachable_database_is_one_line_and_exit_1(
        monkeypatch: pytest.MonkeyPatch, partner: Partner, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/payments")
    monkeypatch.setenv("PAYMENTS_PARTNER_SIM_PORT", str(partner.port))
    code, _ = reconcile(tmp_path, "2026-11-30")
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("payments reconcile: database: ")
