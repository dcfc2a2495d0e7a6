"""The simulated partner and the gateway's HTTP caller, over real HTTP on this machine.

The book: seeded outcomes, replays and conflicts, submissions pending from receipt until answered, the
seeded throttle, durability across restarts (a pending transfer too), settlement reports, forced
outcomes by payee. The API: status codes, PENDING while a submission is processed, lost answers,
injected faults. The caller: recovery by asking first (waiting out PENDING, never resubmitting),
Retry-After, timeouts that never turn into a blind resubmission, the circuit breaker, expiry while the
partner is down.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import signal
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiohttp
import pytest
from aiohttp import web

from consumers.partner.breaker import BreakerConfig
from consumers.partner.caller import CallerConfig, PartnerCaller
from consumers.partner.logic import PARTNER_UNAVAILABLE, TIMEOUT, PendingCall
from consumers.partner.sim_server import SimulatedPartnerApp, load_book
from consumers.partner.simulator import PENDING, Journal, PartnerBook, SimulatorConfig, TransferRequest
from ops.supervisor import ServiceProcess, free_port
from payments.money import Money
from payments.runtime.logic import Call
from tests.support import wait_for

pytestmark = pytest.mark.integration

T = TypeVar("T")
EUR_10 = Money.of(1000, "EUR")


def book(tmp_path: Path, clock: list[datetime] | None = None, **rates: float) -> PartnerBook:
    moments = clock or [datetime(2025, 3, 14, 9, tzinfo=UTC)]
    config = SimulatorConfig(data_dir=tmp_path, seed=42, **{"decline_rate": 0.0, "timeout_rate": 0.0, **rates})
    return PartnerBook(config, clock=lambda: moments[0])


def request(sid: str, amount_minor: int = 1000, payee: str = "acc-b") -> TransferRequest:
    return TransferRequest(sid, amount_minor, "EUR", "acc-a", payee)


# -- the book ---------------------------------------------------------------------------------------

def test_rates_are_within_tolerance_over_many_submissions(tmp_path: Path) -> None:
    partner = book(tmp_path, decline_rate=0.1, error_rate=0.05, timeout_rate=0.05)
    counts = {"ACCEPTED": 0, "DECLINED": 0, "error": 0, "lost": 0}
    n = 5000
    for i in range(n):
        decision = partner.submit(request(f"sub-{i}"))
        if decision.kind == "error":
            counts["error"] += 1
        elif decision.lost_answer:
            counts["lost"] += 1
        else:
            assert decision.transfer is not None
            counts[decision.transfer.status] += 1
    assert abs(counts["DECLINED"] / n - 0.10) < 0.015
    assert abs(counts["error"] / n - 0.05) < 0.01
    assert abs(counts["lost"] / n - 0.05) < 0.01
    assert abs(counts["ACCEPTED"] / n - 0.80) < 0.02


def test_same_seed_gives_the_same_outcomes(tmp_path: Path) -> None:
    first = book(tmp_path / "1", decline_rate=0.3, timeout_rate=0.2)
    second = book(tmp_path / "2", decline_rate=0.3, timeout_rate=0.2)
    ids = [f"sub-{i}" for i in range(200)]
    assert [first.submit(request(i)) for i in ids] == [second.submit(request(i)) for i in ids]


def test_a_resubmission_is_a_replay_and_another_request_under_the_key_a_conflict(tmp_path: Path) -> None:
    partner = book(tmp_path, decline_rate=0.5)
    first = [partner.submit(request(f"sub-{i}")) for i in range(50)]
    for i in range(50):
        partner.finish(f"sub-{i}")  # answered (the server's part)
    again = [partner.submit(request(f"sub-{i}")) for i in range(50)]
    assert {d.kind for d in first} == {"recorded"} and {d.kind for d in again} == {"replayed"}
    assert [d.transfer for d in first] == [d.transfer for d in again]
    assert {d.transfer.status for d in first if d.transfer} == {"ACCEPTED", "DECLINED"}
    assert partner.submit(request("sub-1", amount_minor=999)).kind == "conflict"
    assert partner.submissions()["sub-1"] == {"status": first[1].transfer.status, "posts": 2,  # type: ignore[union-attr]
                                              "replays": 1, "queries": 0}
    assert partner.report_csv(date(2025, 3, 14))[1] == 50


def test_a_lost_answer_is_recorded_and_an_error_is_not(tmp_path: Path) -> None:
    partner = book(tmp_path, timeout_rate=1.0)
    lost = partner.submit(request("sub-1"))
    assert lost.kind == "recorded" and lost.lost_answer
    partner.finish("sub-1")  # the server dropped the connection instead of answering
    found = partner.query("sub-1")
    assert found is not None and found != PENDING and found.status == "ACCEPTED" and found.partner_reference
    erring = book(tmp_path / "e", error_rate=0.5)
    errored = [f"sub-{i}" for i in range(40) if erring.submit(request(f"sub-{i}")).kind == "error"]
    assert errored and all(erring.query(i) is None for i in errored)
    assert "recorded" in [erring.submit(request(i)).kind for i in errored]  # a retry draws afresh


def test_a_submission_is_pending_from_its_receipt_until_its_post_is_answered(tmp_path: Path) -> None:
    partner = book(tmp_path, decline_rate=0.5, error_rate=0.2)
    decisions = {f"sub-{i}": partner.submit(request(f"sub-{i}")) for i in range(40)}
    recorded = [sid for sid, d in decisions.items() if d.kind == "recorded"]
    errored = [sid for sid, d in decisions.items() if d.kind == "error"]
    assert recorded and errored
    for sid in recorded:  # in the book from receipt: a query never says NOT_FOUND about it
        assert partner.query(sid) == PENDING and partner.submissions()[sid]["status"] == PENDING
    assert all(partner.query(sid) is None for sid in errored)  # a 500 recorded nothing: NOT_FOUND is the truth
    partner.finish(recorded[0])
    assert partner.query(recorded[0]) == decisions[recorded[0]].transfer
    assert partner.submit(request(recorded[0])).kind == "replayed"
    assert partner.query(recorded[0]) == decisions[recorded[0]].transfer  # a replay never makes it pending again
    assert partner.query(recorded[1]) == PENDING  # still being processed: the others stay pending


def test_the_seeded_throttle_answers_about_its_rate_and_every_request_draws_afresh(tmp_path: Path) -> None:
    partner = book(tmp_path, throttle_rate=0.2)
    n = 5000
    first = [partner.throttle("submit", f"sub-{i}") for i in range(n)]
    assert abs(sum(first) / n - 0.2) < 0.015
    again = [partner.throttle("submit", f"sub-{i}") for i in range(n)]  # the retries draw again
    assert abs(sum(again) / n - 0.2) < 0.015 and first != again
    queries = [partner.throttle("query", f"sub-{i}") for i in range(n)]
    assert abs(sum(queries) / n - 0.2) < 0.015
    assert sum(partner.throttled.values()) == sum(first) + sum(again) + sum(queries)
    assert partner.posts == {} and partner.queries == {}  # a throttled request reached nothing
    twin = book(tmp_path / "twin", throttle_rate=0.2)
    assert [twin.throttle("submit", f"sub-{i}") for i in range(n)] == first  # seeded: reproducible
    assert not any(book(tmp_path / "off").throttle("submit", f"sub-{i}") for i in range(n))  # 0 by default


def test_forced_outcomes_by_payee(tmp_path: Path) -> None:
    partner = book(tmp_path)
    declined = partner.submit(request("s-1", payee="acc-sim-decline-1")).transfer
    assert declined is not None and declined.status == "DECLINED"
    lost = partner.submit(request("s-2", payee="acc-sim-timeout-1"))
    assert lost.lost_answer and lost.transfer is not None and lost.transfer.status == "ACCEPTED"
    ordinary = partner.submit(request("s-3")).transfer
    assert ordinary is not None and ordinary.status == "ACCEPTED"


def test_the_journal_restores_every_decision_and_skips_a_torn_last_line(tmp_path: Path) -> None:
    partner = book(tmp_path, decline_rate=0.5, error_rate=0.2)
    journal = Journal(tmp_path)
    decisions = []
    for i in range(30):
        decision = partner.submit(request(f"sub-{i}"))
        journal.append(decision.journal)
        partner.finish(f"sub-{i}")
        decisions.append(decision)
    journal.append(partner.submit(request("sub-0")).journal)  # a replay is journaled too
    journal.close()
    (tmp_path / "submissions.jsonl").open("a").write('{"kind": "recor')  # a crash mid-append
    restarted = book(tmp_path, decline_rate=0.0, error_rate=0.0)  # other rates: recorded outcomes must win
    assert Journal(tmp_path).load_into(restarted) == 31  # one entry per decision; the torn line is skipped
    assert restarted.submissions() == {sid: {**row, "queries": 0} for sid, row in partner.submissions().items()}
    for i, decision in enumerate(decisions):
        if decision.kind == "recorded":
            assert restarted.query(f"sub-{i}") == decision.transfer
        else:  # an error recorded nothing, and the next attempt draws afresh
            assert restarted.query(f"sub-{i}") is None


def test_a_transfer_pending_when_the_simulator_stopped_is_complete_after_the_restart(tmp_path: Path) -> None:
    partner = book(tmp_path, decline_rate=0.5)
    journal = Journal(tmp_path)
    decisions = [partner.submit(request(f"sub-{i}")) for i in range(20)]  # durable, none answered yet
    journal.append([entry for decision in decisions for entry in decision.journal])
    journal.close()
    assert {partner.query(f"sub-{i}") for i in range(20)} == {PENDING}
    restarted = book(tmp_path, decline_rate=0.0)  # other rates: the outcome drawn at receipt must win
    assert Journal(tmp_path).load_into(restarted) == 20
    assert [restarted.query(f"sub-{i}") for i in range(20)] == [d.transfer for d in decisions]
    assert {d.transfer.status for d in decisions if d.transfer} == {"ACCEPTED", "DECLINED"}


def test_settlement_report_lists_the_days_submissions_and_rolls_at_midnight(tmp_path: Path) -> None:
    clock = [datetime(2025, 3, 14, 10, tzinfo=UTC)]
    partner = book(tmp_path, clock=clock, decline_rate=0.5)
    transfers = {f"sub-{i}": partner.submit(request(f"sub-{i}", amount_minor=100 + i)).transfer for i in range(10)}
    clock[0] = datetime(2025, 3, 15, 0, 0, 1, tzinfo=UTC)
    partner.submit(request("sub-next-day"))
    rolled = partner.report_path(date(2025, 3, 14))  # written when the next day's first submission came
    assert rolled.exists()
    path = tmp_path / "report.csv"
    assert partner.write_settlement_report(date(2025, 3, 14), path) == 10
    assert path.read_text() == rolled.read_text()
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == ["date", "submission_id", "partner_reference", "amount_minor", "currency", "status"]
    for row in rows:
        transfer = transfers[row["submission_id"]]
        assert transfer is not None and row["date"] == "2025-03-14" and row["currency"] == "EUR"
        assert (row["status"], row["partner_reference"]) == (transfer.status, transfer.partner_reference or "")
        assert int(row["amount_minor"]) == transfer.amount_minor


def test_latency_is_drawn_from_the_configured_distribution(tmp_path: Path) -> None:
    partner = PartnerBook(SimulatorConfig(data_dir=tmp_path, latency_median_ms=20, latency_p99_ms=100))
    slept = sorted(partner.latency_s(f"sub-{i}") for i in range(2000))
    assert 0.017 < slept[1000] < 0.023
    assert 0.07 < slept[1980] < 0.14
    assert partner.latency_s("sub-1") == partner.latency_s("sub-1")  # seeded per submission attempt


# -- the HTTP API -------------------------------------------------------------------------------------

def run(coroutine: Awaitable[T]) -> T:
    async def main() -> T:
        return await coroutine
    return asyncio.run(main())


@asynccontextmanager
async def serving(tmp_path: Path, port: int | None = None, **rates: float) -> AsyncIterator[tuple[str, Any]]:
    config = SimulatorConfig(data_dir=tmp_path, seed=42, latency_median_ms=1, latency_p99_ms=2,
                             **{"decline_rate": 0.0, "timeout_rate": 0.0, **rates})
    simulated, journal = load_book(config)
    app = SimulatedPartnerApp(simulated, journal)
    runner = web.AppRunner(app.application(), access_log=None)
    await runner.setup()
    port = port or free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        await runner.cleanup()
        journal.close()


async def call(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> tuple[int, Any, Any]:
    async with session.request(method, url, **kwargs) as response:
        body = await response.json() if response.content_type == "application/json" else await response.text()
        return response.status, body, response.headers


BODY = {"amount_minor": 1000, "currency": "EUR", "payer": "acc-a", "payee": "acc-b"}


def test_the_api_answers_submissions_replays_conflicts_queries_and_reports(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (url, app), aiohttp.ClientSession() as session:
            key = {"Idempotency-Key": "sub-1"}
            status, body, _ = await call(session, "POST", f"{url}/v1/transfers", json=BODY, headers=key)
            assert status == 201 and body["status"] == "ACCEPTED" and body["partner_reference"].startswith("SIM-")
            status, again, headers = await call(session, "POST", f"{url}/v1/transfers", json=BODY, headers=key)
            assert (status, again, headers["Idempotent-Replayed"]) == (200, body, "true")
            status, conflict, _ = await call(session, "POST", f"{url}/v1/transfers",
                                             json={**BODY, "amount_minor": 1}, headers=key)
            assert (status, conflict["error"]) == (422, "IDEMPOTENCY_KEY_REUSED")
            assert (await call(session, "POST", f"{url}/v1/transfers", json=BODY))[0] == 400  # no key
            for bad in ({**BODY, "amount_minor": 10.5}, {**BODY, "currency": "eur"}, {**BODY, "payer": ""}, [1]):
                status, refused, _ = await call(session, "POST", f"{url}/v1/transfers", json=bad,
                                                headers={"Idempotency-Key": "sub-bad"})
                assert (status, refused["error"]) == (400, "INVALID_REQUEST"), bad
            status, found, _ = await call(session, "GET", f"{url}/v1/transfers/sub-1")
            assert (status, found["status"], found["partner_reference"]) == (200, "ACCEPTED", body["partner_reference"])
            assert (await call(session, "GET", f"{url}/v1/transfers/nope"))[0] == 404
            today = datetime.now(UTC).date().isoformat()
            status, report, _ = await call(session, "GET", f"{url}/v1/settlement-reports/{today}")
            rows = list(csv.DictReader(io.StringIO(report)))
            assert status == 200 and [r["submission_id"] for r in rows] == ["sub-1"]
            assert (await call(session, "GET", f"{url}/v1/settlement-reports/yesterday"))[0] == 400
            status, stats, _ = await call(session, "GET", f"{url}/_sim/stats")
            assert (stats["transfers"], stats["posts"], stats["replays"], stats["queries"]) == (1, 2, 1, 2)
            assert app.book.submissions()["sub-1"]["posts"] == 2
    run(scenario())


def test_a_lost_answer_drops_the_connection_and_a_query_finds_the_transfer(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, timeout_rate=1.0) as (url, _), aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await call(session, "POST", f"{url}/v1/transfers", json=BODY, headers={"Idempotency-Key": "sub-9"})
            status, found, _ = await call(session, "GET", f"{url}/v1/transfers/sub-9")
            assert (status, found["status"]) == (200, "ACCEPTED")
    run(scenario())


async def until(condition: Callable[[], object], what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        await asyncio.sleep(0.01)


async def slow_posts(session: aiohttp.ClientSession, url: str, extra_latency_ms: int) -> None:
    """Make the partner's processing slow, then let queries be quick again while the slow POSTs go on."""
    await call(session, "POST", f"{url}/_sim/faults", json={"mode": "slow", "seconds": 60,
                                                            "extra_latency_ms": extra_latency_ms})


def test_a_query_while_the_submission_is_processed_answers_pending_then_its_outcome(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (url, app), aiohttp.ClientSession() as session:
            await slow_posts(session, url, 1500)
            posting = asyncio.create_task(call(session, "POST", f"{url}/v1/transfers", json=BODY,
                                               headers={"Idempotency-Key": "sub-p"}))
            await until(lambda: "sub-p" in app.book.submissions(), "the submission to arrive")
            await call(session, "POST", f"{url}/_sim/faults", json={"mode": "none"})  # the POST keeps its time
            status, body, _ = await call(session, "GET", f"{url}/v1/transfers/sub-p")
            assert (status, body) == (200, {"submission_id": "sub-p", "status": "PENDING"})
            assert not posting.done()
            status, answer, _ = await posting
            assert status == 201 and answer["status"] == "ACCEPTED"
            status, found, _ = await call(session, "GET", f"{url}/v1/transfers/sub-p")
            assert (status, found) == (200, answer)
            assert app.book.submissions()["sub-p"] == {"status": "ACCEPTED", "posts": 1, "replays": 0, "queries": 2}
    run(scenario())


def test_injected_faults_throttle_refuse_and_slow_down_then_end(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (url, _), aiohttp.ClientSession() as session:
            key = {"Idempotency-Key": "sub-2"}
            await call(session, "POST", f"{url}/_sim/faults", json={"mode": "throttle", "seconds": 1,
                                                                    "retry_after_s": 3})
            status, body, headers = await call(session, "POST", f"{url}/v1/transfers", json=BODY, headers=key)
            assert (status, body["error"], headers["Retry-After"]) == (429, "RATE_LIMITED", "3")
            await call(session, "POST", f"{url}/_sim/faults", json={"mode": "unavailable", "seconds": 1})
            assert (await call(session, "GET", f"{url}/v1/transfers/sub-2"))[0] == 503
            await call(session, "POST", f"{url}/_sim/faults", json={"mode": "slow", "seconds": 5,
                                                                    "extra_latency_ms": 300})
            started = time.monotonic()
            assert (await call(session, "POST", f"{url}/v1/transfers", json=BODY, headers=key))[0] == 201
            assert time.monotonic() - started >= 0.3
            await call(session, "POST", f"{url}/_sim/faults", json={"mode": "none"})
            assert (await call(session, "GET", f"{url}/v1/transfers/sub-2"))[0] == 200
            assert (await call(session, "POST", f"{url}/_sim/faults", json={"mode": "melt"}))[0] == 400
            for bad in (0, -1, "many"):
                assert (await call(session, "POST", f"{url}/_sim/faults",
                                   json={"mode": "throttle", "submissions": bad}))[0] == 400
    run(scenario())


def test_a_fault_counted_in_submissions_meets_that_many_posts_and_no_query(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (url, _), aiohttp.ClientSession() as session:
            status, body, _ = await call(session, "POST", f"{url}/_sim/faults",
                                         json={"mode": "throttle", "submissions": 2})
            assert (status, body) == (200, {"mode": "throttle", "seconds": None, "submissions": 2})  # no time bound
            assert (await call(session, "GET", f"{url}/_sim/stats"))[1]["faults"] == "throttle"
            assert (await call(session, "GET", f"{url}/v1/transfers/sub-c"))[0] == 404  # a query: not counted
            for _ in range(2):
                status, _, headers = await call(session, "POST", f"{url}/v1/transfers", json=BODY,
                                                headers={"Idempotency-Key": "sub-c"})
                assert (status, headers["Retry-After"]) == (429, "1")
            assert (await call(session, "POST", f"{url}/v1/transfers", json=BODY,
                               headers={"Idempotency-Key": "sub-c"}))[0] == 201
            assert (await call(session, "GET", f"{url}/_sim/stats"))[1]["faults"] == "none"
    run(scenario())


def test_the_simulator_process_keeps_its_transfers_across_a_sigkill(tmp_path: Path) -> None:
    port = free_port()
    env = {"PAYMENTS_PARTNER_SIM_PORT": str(port), "PAYMENTS_PARTNER_DATA_DIR": str(tmp_path / "data"),
           "PAYMENTS_PARTNER_LATENCY_MS": "1", "PAYMENTS_PARTNER_TIMEOUT_RATE": "0"}
    process = ServiceProcess(["partner-sim"], log_dir=tmp_path, env=env).start().wait_ready()

    async def submit() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            status, body, _ = await call(session, "POST", f"http://127.0.0.1:{port}/v1/transfers", json=BODY,
                                         headers={"Idempotency-Key": "sub-durable"})
            assert status in (200, 201)
            return dict(body)

    try:
        first = run(submit())
        assert process.process is not None
        process.process.send_signal(signal.SIGKILL)
        process.process.wait(10)
        process.start()
        wait_for(lambda: process.log_tail().count("partner_sim_listening") == 2, 30, "the restarted simulator")
        assert run(submit()) == first  # the same transfer: it was durable before the first answer left
        assert '"entries": 1' in process.log_tail()
    finally:
        assert process.stop() == 0, process.log_tail()


def test_a_transfer_pending_when_the_simulator_process_is_killed_resolves_to_its_seeded_outcome(
        tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"PAYMENTS_PARTNER_SIM_PORT": str(port), "PAYMENTS_PARTNER_DATA_DIR": str(tmp_path / "data"),
           "PAYMENTS_PARTNER_LATENCY_MS": "1", "PAYMENTS_PARTNER_TIMEOUT_RATE": "0"}
    process = ServiceProcess(["partner-sim"], log_dir=tmp_path, env=env).start().wait_ready()

    def http(method: str, path: str, body: dict[str, Any] | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        made = urllib.request.Request(f"{base}{path}", data=data, method=method,
                                      headers={"Content-Type": "application/json", **(headers or {})})
        with urllib.request.urlopen(made, timeout=30) as response:
            return response.status, json.loads(response.read())

    def post() -> None:  # its answer never comes: the simulator is killed while processing it
        with suppress(OSError):
            http("POST", "/v1/transfers", BODY, {"Idempotency-Key": "sub-killed"})

    poster = threading.Thread(target=post, daemon=True)
    try:
        http("POST", "/_sim/faults", {"mode": "slow", "seconds": 120, "extra_latency_ms": 25_000})
        poster.start()
        wait_for(lambda: http("GET", "/_sim/submissions")[1]["submissions"].get("sub-killed", {}).get("status")
                 == PENDING, 10, "the submission to be received and pending")
        assert process.process is not None
        process.process.send_signal(signal.SIGKILL)
        process.process.wait(10)
        poster.join(10)
        process.start()
        wait_for(lambda: process.log_tail().count("partner_sim_listening") == 2, 30, "the restarted simulator")
        # The outcome drawn at receipt, as a book with the same settings draws it: deterministic.
        seeded = PartnerBook(SimulatorConfig(timeout_rate=0.0, data_dir=tmp_path / "twin")).submit(
            TransferRequest("sub-killed", 1000, "EUR", "acc-a", "acc-b")).transfer
        assert seeded is not None
        status, found = http("GET", "/v1/transfers/sub-killed")
        assert status == 200
        assert (found["status"], found["partner_reference"], found["reason_code"]) == (
            seeded.status, seeded.partner_reference, seeded.reason_code)
        status, again = http("POST", "/v1/transfers", BODY, {"Idempotency-Key": "sub-killed"})
        assert (status, again) == (200, found)  # a replay of the one transfer
        assert http("GET", "/_sim/submissions")[1]["submissions"]["sub-killed"] == {
            "status": seeded.status, "posts": 2, "replays": 1, "queries": 1}
    finally:
        assert process.stop() == 0, process.log_tail()


# -- the caller: how the gateway calls the partner ----------------------------------------------------

def pending(kind: Literal["submit", "query"] = "submit", sid: str = "sub-1", expires_in_s: float = 30.0,
            payee: str = "acc-b") -> Call:
    terms: dict[str, Any] = {"amount": EUR_10, "payer_account": "acc-a", "payee_account": payee}
    made = PendingCall(kind=kind, command_id=f"cmd-{kind}-{sid}", submission_id=sid, partner="simbank",
                       expires_at=datetime.now(UTC) + timedelta(seconds=expires_in_s),
                       **(terms if kind == "submit" else {}))
    return Call(made.command_id, made)


@asynccontextmanager
async def caller(url: str, **overrides: Any) -> AsyncIterator[PartnerCaller]:
    config = CallerConfig(endpoints={"simbank": url}, **{"timeout_s": 2.0, "connect_timeout_s": 0.5, **overrides})
    made = PartnerCaller(config, seed=1)
    await made.open()
    try:
        yield made
    finally:
        await made.close()


def test_the_caller_submits_queries_and_reports_a_lost_answer_as_timeout(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (url, app), caller(url) as partner:
            accepted = await partner.perform(pending(), recovered=False)
            assert (accepted.code, accepted.partner_reference is not None) == ("ACCEPTED", True)
            declined = await partner.perform(pending(sid="sub-d", payee="acc-sim-decline-1"), recovered=False)
            assert (declined.code, declined.reason_code) == ("DECLINED", "INSUFFICIENT_FUNDS_AT_PARTNER")
            lost = await partner.perform(pending(sid="sub-t", payee="acc-sim-timeout-1"), recovered=False)
            assert (lost.code, lost.reason_code) == ("ERROR", TIMEOUT)
            found = await partner.perform(pending("query", sid="sub-t"), recovered=False)
            assert found.code == "ACCEPTED"
            assert (await partner.perform(pending("query", sid="sub-none"), recovered=False)).code == "NOT_FOUND"
            assert app.book.submissions()["sub-t"]["posts"] == 1  # a timeout is never resubmitted blindly
    run(scenario())


def test_a_recovered_submission_is_asked_about_first_and_submitted_only_if_the_partner_has_none(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (url, app), caller(url) as partner:
            sent = await partner.perform(pending(sid="sub-r"), recovered=False)
            recovered = await partner.perform(pending(sid="sub-r"), recovered=True)
            assert recovered == sent
            assert app.book.submissions()["sub-r"] == {"status": "ACCEPTED", "posts": 1, "replays": 0, "queries": 1}
            fresh = await partner.perform(pending(sid="sub-n"), recovered=True)
            assert fresh.code == "ACCEPTED"
            assert app.book.submissions()["sub-n"] == {"status": "ACCEPTED", "posts": 1, "replays": 0, "queries": 1}
    run(scenario())


def test_a_recovered_submission_that_finds_the_dead_owners_request_pending_waits_and_never_resubmits(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (url, app), caller(url) as partner, aiohttp.ClientSession() as session:
            await slow_posts(session, url, 1500)
            dead_owners = asyncio.create_task(call(session, "POST", f"{url}/v1/transfers", json=BODY,
                                                   headers={"Idempotency-Key": "sub-1"}))
            await until(lambda: "sub-1" in app.book.submissions(), "the dead owner's request to arrive")
            await call(session, "POST", f"{url}/_sim/faults", json={"mode": "none"})
            recovered = await partner.perform(pending(sid="sub-1"), recovered=True)
            status, sent, _ = await dead_owners
            assert status == 201 and dead_owners.done()
            assert (recovered.code, recovered.partner_reference) == ("ACCEPTED", sent["partner_reference"])
            row = app.book.submissions()["sub-1"]
            assert (row["posts"], row["replays"]) == (1, 0)  # asked until decided: never sent again
            assert row["queries"] >= 2  # at least one PENDING, then the outcome
    run(scenario())


def test_a_query_still_pending_at_its_expiry_is_answered_pending_and_a_recovered_submission_timeout(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (url, app), caller(url) as partner, aiohttp.ClientSession() as session:
            await slow_posts(session, url, 4000)
            slow = asyncio.create_task(call(session, "POST", f"{url}/v1/transfers", json=BODY,
                                            headers={"Idempotency-Key": "sub-slow"}))
            await until(lambda: "sub-slow" in app.book.submissions(), "the submission to arrive")
            await call(session, "POST", f"{url}/_sim/faults", json={"mode": "none"})
            query, submission = await asyncio.gather(
                partner.perform(pending("query", sid="sub-slow", expires_in_s=1.0), recovered=False),
                partner.perform(pending(sid="sub-slow", expires_in_s=1.0), recovered=True))
            assert query.code == "PENDING"  # nothing decided by expires_at: the saga asks again
            assert (submission.code, submission.reason_code) == ("ERROR", TIMEOUT)  # never NOT_FOUND, never sent
            assert (await slow)[0] == 201
            assert app.book.submissions()["sub-slow"]["posts"] == 1
    run(scenario())


def test_a_seeded_throttle_rate_is_answered_429_with_retry_after_and_the_caller_waits_it_out(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path, throttle_rate=0.3) as (url, app), caller(url) as partner:
            async with aiohttp.ClientSession() as session:
                statuses = []
                for i in range(50):  # 0.7 ** 50: a run with no 429 among them is not going to happen
                    status, body, headers = await call(session, "POST", f"{url}/v1/transfers", json=BODY,
                                                       headers={"Idempotency-Key": f"raw-{i}"})
                    statuses.append(status)
                    if status == 429:
                        assert (body["error"], headers["Retry-After"]) == ("RATE_LIMITED", "1")
                assert set(statuses) == {201, 429} and 5 <= statuses.count(429) <= 25
            started = time.monotonic()
            answers = await asyncio.gather(*(partner.perform(pending(sid=f"sub-{i}"), recovered=False)
                                             for i in range(30)))
            assert {a.code for a in answers} == {"ACCEPTED"}  # waited out, none failed
            assert time.monotonic() - started >= 1.0  # Retry-After was honoured
            rows = {sid: row for sid, row in app.book.submissions().items() if sid.startswith("sub-")}
            assert len(rows) == 30 and {row["posts"] for row in rows.values()} == {1}  # a 429 processed nothing
            assert sum(app.book.throttled[sid] for sid in rows) >= 1
    run(scenario())


def test_429_is_waited_out_for_its_retry_after_and_never_reaches_the_book(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (url, app), caller(url) as partner:
            async with aiohttp.ClientSession() as session:
                await call(session, "POST", f"{url}/_sim/faults", json={"mode": "throttle", "seconds": 1.5,
                                                                        "retry_after_s": 1})
            started = time.monotonic()
            answers = await asyncio.gather(*(partner.perform(pending(sid=f"sub-{i}"), recovered=False)
                                             for i in range(20)))
            assert {a.code for a in answers} == {"ACCEPTED"}
            assert time.monotonic() - started >= 1.0  # Retry-After was honoured
            assert {row["posts"] for row in app.book.submissions().values()} == {1}
    run(scenario())


def test_a_response_slower_than_the_timeout_is_an_unknown_outcome_that_a_later_query_resolves(
        tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(tmp_path) as (url, app), caller(url, timeout_s=0.5, connect_timeout_s=0.5) as partner:
            async with aiohttp.ClientSession() as session:
                await call(session, "POST", f"{url}/_sim/faults", json={"mode": "slow", "seconds": 1,
                                                                        "extra_latency_ms": 800})
            slow = await partner.perform(pending(sid="sub-slow"), recovered=False)
            assert (slow.code, slow.reason_code) == ("ERROR", TIMEOUT)
            # Asked at once: the partner is still processing it (PENDING, or the query too is slow), and
            # the caller asks again until it has the outcome.
            found = await partner.perform(pending("query", sid="sub-slow"), recovered=False)
            assert found.code == "ACCEPTED"
            assert app.book.submissions()["sub-slow"]["posts"] == 1
    run(scenario())


def test_the_breaker_opens_while_the_partner_is_down_and_closes_when_it_is_back(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    breaker = BreakerConfig(window_s=10, calls_min=5, failure_ratio=0.5, open_s=0.5, open_max_s=1.0)

    async def scenario() -> None:
        async with caller(url, breaker=breaker, retry_cap_s=0.2) as partner:
            # Nobody listens: every attempt is refused, nothing can have been sent. Submissions wait for
            # the partner until they expire, and are then answered PARTNER_UNAVAILABLE.
            answers = await asyncio.gather(*(partner.perform(pending(sid=f"down-{i}", expires_in_s=1.5),
                                                             recovered=False) for i in range(10)))
            assert {(a.code, a.reason_code) for a in answers} == {("ERROR", PARTNER_UNAVAILABLE)}
            state, opened = partner.breaker_state("simbank")
            assert state == "open" and opened >= 1
            waiting = [asyncio.create_task(partner.perform(pending(sid=f"wait-{i}"), recovered=False))
                       for i in range(10)]
            await asyncio.sleep(0.5)
            assert not any(task.done() for task in waiting)  # they wait: the gateway does not fail them
            async with serving(tmp_path, port=port) as (_, app):
                done = await asyncio.wait_for(asyncio.gather(*waiting), timeout=20)
                assert {a.code for a in done} == {"ACCEPTED"}
                assert partner.breaker_state("simbank")[0] == "closed"
                assert set(app.book.submissions()) == {f"wait-{i}" for i in range(10)}
    run(scenario())

