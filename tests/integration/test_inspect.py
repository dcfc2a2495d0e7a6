"""`payments inspect` on real Kafka and PostgreSQL: a payment driven through every service (its partner
reply lost, so a timer and a query show) is shown with its commands, events, replies, timers, settlement,
status row, ledger entries and report row; one whose saga waits says for what; a database that cannot
be reached or is not migrated is one line; an unknown or malformed id is a one-line error, exit 1."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from confluent_kafka import Producer
from psycopg import sql

from ops.cli import main
from ops.inspect import partition_of
from ops.registry import PROJECTIONS
from ops.supervisor import free_port
from payments.contracts.messages import PaymentInitiated, PaymentSettled
from payments.money import Money
from tests.e2e.pipeline import FAST_ENV, Pipeline, fresh_database, start_pipeline
from tests.support import COMMAND_PATH, PARTITIONS, make_initiate, produce, read_all, wait_for

pytestmark = pytest.mark.integration

PROCESSES = [["partner-sim"], *([name] for name in COMMAND_PATH), ["risk"], ["funds"], ["partner"], ["settlement"],
             *(["projection", name] for name in PROJECTIONS)]


@pytest.fixture(scope="module")
def pipeline(kafka_bootstrap: str, postgres_server_url: str) -> Iterator[Pipeline]:
    """Every service and projection, on topics and a database of this module's own."""
    for database_url in fresh_database(postgres_server_url, "inspect"):
        yield from start_pipeline(kafka_bootstrap, database_url, PROCESSES)


@pytest.fixture(autouse=True)
def _cli_env(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """What an operator's shell would set for the command to find this pipeline."""
    for name, value in {"KAFKA_BOOTSTRAP_SERVERS": pipeline.bootstrap, "DATABASE_URL": pipeline.database_url,
                        "PAYMENTS_TOPIC_PREFIX": pipeline.topics.prefix,
                        "PAYMENTS_SAGA_TIME_SCALE": FAST_ENV["PAYMENTS_SAGA_TIME_SCALE"]}.items():
        monkeypatch.setenv(name, value)


def _one(database_url: str, query: str, *args: object) -> object:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(query, args).fetchone()
    return None if row is None else row[0]


def _inspect(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["inspect", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def settled(pipeline: Pipeline) -> str:
    """A payment whose partner reply is lost (the saga queries, then settles), visible in every read model."""
    command = make_initiate(payer_account="acc-alice", payee_account="acc-sim-timeout-inspect",
                            amount=Money.parse("10.00", "EUR"))
    pipeline.send(command)
    pid = command.payment_id
    pipeline.wait_events(pid, PaymentSettled, timeout_s=90)
    db = pipeline.database_url
    wait_for(lambda: _one(db, "SELECT status FROM payment_status WHERE payment_id = %s", pid) == "SETTLED", 60,
             "the SETTLED status row")
    wait_for(lambda: _one(db, "SELECT count(*) FROM journal_entries WHERE payment_id = %s", pid) == 3, 60,
             "3 journal entries (reserve, commit, settle)")
    wait_for(lambda: _one(db, "SELECT count(*) FROM settlement_report_applied") == 1, 60, "the report counting it")
    _poison(pipeline, pid)  # a later command for it that cannot be decoded: the intake dead-letters it
    return pid


def _poison(pipeline: Pipeline, payment_id: str) -> None:
    """Write bytes that are no command, keyed by `payment_id`, to payments.commands; wait for the dead letter."""
    producer = Producer({"bootstrap.servers": pipeline.bootstrap, "partitioner": "murmur2_random"})
    producer.produce(pipeline.topics.commands, key=payment_id.encode(), value=b"not avro")
    assert producer.flush(30) == 0
    wait_for(lambda: any(r.key == payment_id.encode() for r in read_all(pipeline.bootstrap, pipeline.topics.dlq)),
             60, f"the dead letter of {payment_id}")


def test_a_settled_payment_shows_its_whole_story_from_kafka_and_postgres(
        settled: str, pipeline: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _inspect(capsys, settled)
    sys.stderr.write(f"\n--- payments inspect {settled}\n{out}")  # what docs/operations.md shows

    assert (code, err) == (0, "")
    events = pipeline.events(settled)
    lines = out.splitlines()
    assert lines[0] == f"payment   {settled}"
    assert lines[1] == "terms     acc-alice -> acc-sim-timeout-inspect, 10.00 EUR, partner simbank"
    assert lines[2].startswith(f"saga      SETTLED (terminal) after PaymentSettled #{len(events)} at ")
    assert lines[3].startswith("now       finished: SETTLED; the orchestrator keeps its state until ")
    block = lines[5:next(i for i, line in enumerate(lines) if i > 4 and not line.startswith("  20"))]
    timeline = [line.split()[1:3] for line in block]  # [topic, type] of each timeline line
    for topic, kind in [("intake.commands", "InitiatePayment"), ("payments.admitted", "InitiatePayment"),
                        ("intake.claim-results", "KeyClaimResult"), ("payments.events", "PaymentInitiated"),
                        ("risk.commands", "AssessRisk"), ("risk.replies", "RiskAssessmentCompleted"),
                        ("funds.commands", "ReserveFunds"), ("funds.replies", "FundsReservationResult"),
                        ("partner.commands", "SubmitToPartner"), ("payments.events", "ParticipantCommandIssued"),
                        ("partner.commands", "QueryPartnerPayment"), ("partner.replies", "PartnerQueryResult"),
                        ("funds.commands", "CommitFunds"), ("payments.events", "PaymentSettled"),
                        ("payments.settlements", "SettlementEvent"), ("payments.dlq", "?")]:
        assert [topic, kind] in timeline, (topic, kind, out)
    assert [t for t in timeline if t[0] == "payments.events"] == [
        ["payments.events", type(e).__name__] for e in events]  # every event, in seq order
    # The partner's reply was lost: the gateway answered ERROR (TIMEOUT) and the saga asked the partner.
    assert "reason=PARTNER_ERROR step=PARTNER_QUERY attempt=1 detail=TIMEOUT" in out
    assert f"dead letter from {pipeline.topics.commands}: " in out
    by_account = [(name, "acc-sim-timeout-inspect" if name == "risk.commands" else "acc-alice")
                  for name in ("risk.commands", "risk.scoring", "risk.outcomes", "funds.commands")]
    assert lines[4] == (f"timeline  {len(timeline)} record(s); read partition {partition_of(settled, PARTITIONS)} "
                        "of the 10 topics keyed by payment id, " + ", ".join(
                            f"partition {partition_of(key, PARTITIONS)} of {pipeline.topics.name(name)} (key {key})"
                            for name, key in by_account))
    assert ["risk.scoring", "ScorePayment"] in timeline  # the risk service's second stage, keyed by the payer
    assert timeline.index(["partner.commands", "SubmitToPartner"]) < timeline.index(
        ["partner.commands", "QueryPartnerPayment"])
    assert any(line.startswith("status    payment_status SETTLED (last PaymentSettled ") and "10.00 EUR" in line
               for line in lines)
    assert f"payment_timeline {len(events)} row(s); {len(events)} event(s) on Kafka" in out
    assert "ledger    3 journal entries" in out
    assert "customer:acc-alice:available -10.00 EUR, customer:acc-alice:held +10.00 EUR" in out
    assert "report    SETTLEMENT 10.00 EUR counted in " in out


def test_json_is_one_document_with_the_same_facts(
        settled: str, pipeline: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _inspect(capsys, settled, "--json")

    assert (code, err) == (0, "")
    document = json.loads(out)
    assert list(document) == ["payment_id", "terms", "saga", "timeline", "kafka_read", "database"]
    assert document["terms"]["amount"] == {"amount_minor": 1000, "currency": "EUR"}
    assert (document["saga"]["status"], document["saga"]["terminal"], document["saga"]["waiting"]) == (
        "SETTLED", True, None)
    # The partition computed from the key is where the producers put the payment's events.
    on_kafka = {r.partition for r in read_all(pipeline.bootstrap, pipeline.topics.events) if r.key == settled.encode()}
    read = {r["topic"]: r for r in document["kafka_read"]}
    assert on_kafka == {read[pipeline.topics.events]["partition"]}
    assert read[pipeline.topics.events]["records"] == len(pipeline.events(settled))
    funds = pipeline.topics.name("funds.commands")  # keyed by the payer's account, not the payment
    assert {r.partition for r in read_all(pipeline.bootstrap, funds) if r.key == b"acc-alice"} == {
        read[funds]["partition"]}
    assert read[funds]["records"] >= 2  # ReserveFunds, CommitFunds
    database = document["database"]
    assert database["problems"] == []
    assert (database["payment_status"]["status"], database["payment_status"]["amount_minor"],
            database["payment_status"]["currency"]) == ("SETTLED", 1000, "EUR")
    assert database["timeline_rows"] == len(pipeline.events(settled))
    assert [entry["kind"] for entry in database["ledger"]] == ["FundsReserved", "FundsCommitted", "PaymentSettled"]
    for entry in database["ledger"]:
        assert sum(p["amount_minor"] for p in entry["postings"]) == 0, entry
    (report,) = database["settlement_report"]
    assert (report["kind"], report["amount"], report["counted"]) == (
        "SETTLEMENT", {"amount_minor": 1000, "currency": "EUR"}, True)
    assert report["totals"]["settled_count"] == 1 and report["totals"]["settled_minor"] == 1000


def test_a_database_that_cannot_be_reached_or_is_not_migrated_is_one_line_and_kafka_still_shows(
        settled: str, postgres_server_url: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/nothing")
    code, out, err = _inspect(capsys, settled)

    assert (code, err) == (0, "")
    assert [line for line in out.splitlines() if line.startswith("database")] == [
        next(line for line in out.splitlines() if line.startswith("database  database unreachable: "))]
    assert "saga      SETTLED (terminal)" in out and "PaymentSettled" in out
    assert not any(line.startswith(("status", "ledger", "report")) for line in out.splitlines())

    name = f"inspect_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        monkeypatch.setenv("DATABASE_URL", postgres_server_url.rsplit("/", 1)[0] + f"/{name}")
        code, out, err = _inspect(capsys, settled)
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    assert (code, err) == (0, "")
    assert [line for line in out.splitlines() if line.startswith(("database", "status", "ledger", "report"))] == [
        "database  projection tables missing (payment_status, payment_timeline, ledger, ledger_unposted, "
        "settlement_report): run `payments db migrate`?"]
    assert "saga      SETTLED (terminal)" in out


def test_a_payment_whose_saga_waits_says_for_what(
        settled: str, pipeline: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    # A real PaymentInitiated on the events topic that no orchestrator decided on: nothing was sent to risk.
    pid = str(uuid.uuid4())
    event = PaymentInitiated(
        event_id=str(uuid.uuid4()), payment_id=pid, seq=1, occurred_at=datetime.now(UTC) - timedelta(seconds=1),
        causation_id=str(uuid.uuid4()), payer_account="acc-alice", payee_account="acc-bob",
        amount=Money.parse("3.20", "EUR"), partner="simbank", reference=None, idempotency_key=f"k-{pid}",
        request_hash="h")
    produce(pipeline.bootstrap, pipeline.topics.events, [event], key_of=lambda m: m.payment_id)
    wait_for(lambda: _one(pipeline.database_url, "SELECT status FROM payment_status WHERE payment_id = %s", pid),
             60, "its status row")

    code, out, err = _inspect(capsys, pid)
    sys.stderr.write(f"\n--- payments inspect {pid}\n{out}")

    assert (code, err) == (0, "")
    assert "saga      AWAITING_RISK (in progress) after PaymentInitiated #1 at " in out
    now = next(line for line in out.splitlines() if line.startswith("now"))
    assert now.startswith("now       waiting for RiskAssessmentCompleted from risk (RISK attempt 1, command ")
    assert "timeout at " in now and now.endswith("; the command is not on risk.commands")
    assert "status    payment_status INITIATED (last PaymentInitiated #1 at " in out


def test_an_unknown_or_malformed_payment_id_is_a_one_line_error(
        settled: str, pipeline: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    unknown = str(uuid.uuid4())
    code, out, err = _inspect(capsys, unknown)
    assert (code, out) == (1, "")
    assert err == f"payments inspect: no events for payment {unknown} in {pipeline.topics.events}\n"

    _poison(pipeline, unknown)  # only a dead letter of it: still not found, and the line says where it is
    code, out, err = _inspect(capsys, unknown)
    assert (code, out) == (1, "")
    assert err == (f"payments inspect: no events for payment {unknown} in {pipeline.topics.events} "
                   "(1 record(s) of it on payments.dlq: the saga has not decided on it)\n")

    code, out, err = _inspect(capsys, "not-a-payment")
    assert (code, out) == (1, "")
    assert err == ("payments inspect: 'not-a-payment' is not a payment id: payment ids are UUIDs "
                   "(8-4-4-4-12 hex digits)\n")
