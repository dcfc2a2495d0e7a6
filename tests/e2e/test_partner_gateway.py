"""The partner gateway against a slow partner over real HTTP, on real Kafka: many calls at once, a crash
with hundreds of them in flight, the partner down, 429 storms and answers slower than the timeout.

The partner's own records (the simulator's `/_sim/submissions`) are the witness: a submission the
gateway sent twice would show there as a second POST, a payment paid twice as a second transfer.
Money is checked end to end: the partner accepted a payment exactly when the saga settled it, and
each settled payment has one settlement event.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator.state import submission_id
from payments.contracts.messages import InitiatePayment, Message, PaymentFailed, PaymentSettled
from payments.contracts.settlements import SettlementEvent
from payments.contracts.topics import SETTLEMENTS
from tests.e2e.pipeline import Pipeline, start_pipeline
from tests.support import COMMAND_PATH, make_initiate, wait_for

pytestmark = pytest.mark.e2e

PROCESSES = [["partner-sim"], *([name] for name in COMMAND_PATH), ["risk"], ["funds"], ["partner"], ["settlement"]]
ENV = {
    # Windows long enough for a slow partner: the saga waits 30 s for a submission, 15 s for a query.
    "PAYMENTS_SAGA_TIME_SCALE": "0.5",
    "PAYMENTS_PARTNER_LATENCY_MS": "200,250",  # median 200 ms, p99 250 ms
    "PAYMENTS_PARTNER_DECLINE_RATE": "0", "PAYMENTS_PARTNER_TIMEOUT_RATE": "0.01",
    "PAYMENTS_PARTNER_TIMEOUT_MS": "1500", "PAYMENTS_PARTNER_BREAKER_OPEN_MS": "1000",
    "PAYMENTS_BATCH_MAX": "500",
}
PAYERS = ["acc-alice", "acc-carol", "acc-dave", "acc-frank", "acc-heidi", "acc-judy"]
TERMINAL = (PaymentSettled, PaymentFailed)


@pytest.fixture(scope="module")
def gateway_pipeline(kafka_bootstrap: str, postgres_server_url: str) -> Iterator[Pipeline]:
    yield from start_pipeline(kafka_bootstrap, postgres_server_url, PROCESSES, **ENV)


def process(pipeline: Pipeline, name: str) -> Any:
    return next(s for s in pipeline.services if s.args == [name])


def sim(pipeline: Pipeline, path: str, body: dict[str, Any] | None = None) -> Any:
    port = process(pipeline, "partner-sim").env["PAYMENTS_PARTNER_SIM_PORT"]
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def send(pipeline: Pipeline, count: int, declined_every: int = 0) -> list[InitiatePayment]:
    """`count` payments; with `declined_every`, every n-th goes to a payee the partner always declines."""
    commands = [make_initiate(amount_minor=100 + i % 50, payer_account=PAYERS[i % len(PAYERS)],
                              payee_account="acc-sim-decline-1" if declined_every and i % declined_every == 0
                              else "acc-bob") for i in range(count)]
    pipeline.send(*commands)
    return commands


def terminal(pipeline: Pipeline, ids: set[str], events: list[Message] | None = None) -> dict[str, list[Message]]:
    found: dict[str, list[Message]] = {}
    for event in events if events is not None else pipeline.topic("payments.events"):
        if isinstance(event, TERMINAL) and event.payment_id in ids:
            found.setdefault(event.payment_id, []).append(event)
    return found


def wait_all_terminal(pipeline: Pipeline, commands: list[InitiatePayment], timeout_s: float) -> dict[str, Message]:
    ids = {c.payment_id for c in commands}
    seen: dict[str, list[Message]] = {}

    def done() -> bool:
        nonlocal seen
        seen = terminal(pipeline, ids)
        return len(seen) == len(ids)

    try:
        wait_for(done, timeout_s, f"{len(ids)} payments to finish", interval_s=1.0)
    except AssertionError:
        raise AssertionError(f"{len(seen)}/{len(ids)} finished\n{pipeline.logs(3000)}") from None
    assert all(len(events) == 1 for events in seen.values()), "a payment ended twice"
    return {pid: events[0] for pid, events in seen.items()}


def check_money(pipeline: Pipeline, commands: list[InitiatePayment], outcomes: dict[str, Message]) -> dict[str, Any]:
    """The partner accepted exactly the payments the saga settled, and each settled payment has one
    settlement event. Returns the partner's rows (POSTs, replays, queries) for these payments."""
    rows = sim(pipeline, "/_sim/submissions")["submissions"]
    mine = {submission_id(c.payment_id): c.payment_id for c in commands}
    for sid, pid in mine.items():
        status, outcome = rows.get(sid, {}).get("status"), outcomes[pid]
        expected = PaymentSettled if status == "ACCEPTED" else PaymentFailed
        assert isinstance(outcome, expected), (pid, status, outcome)
    settled = {pid for pid, outcome in outcomes.items() if isinstance(outcome, PaymentSettled)}

    def settlements() -> Counter[str]:
        return Counter(s.payment_id for s in pipeline.topic(SETTLEMENTS)
                       if isinstance(s, SettlementEvent) and s.payment_id in outcomes)

    wait_for(lambda: set(settlements()) == settled, 60, "a settlement event per settled payment")
    assert all(count == 1 for count in settlements().values())
    return {sid: rows[sid] for sid in mine if sid in rows}


def test_2000_payments_with_a_200ms_partner_settle_with_one_submission_each(gateway_pipeline: Pipeline) -> None:
    before = sim(gateway_pipeline, "/_sim/stats")["max_in_progress"]
    commands = send(gateway_pipeline, 2000)
    outcomes = wait_all_terminal(gateway_pipeline, commands, 300)
    rows = check_money(gateway_pipeline, commands, outcomes)
    assert len(rows) == 2000  # every payment reached the partner
    assert {row["posts"] for row in rows.values()} == {1}  # exactly one submission each, no replay
    assert all(isinstance(o, PaymentSettled) for o in outcomes.values())
    peak = sim(gateway_pipeline, "/_sim/stats")["max_in_progress"]
    assert max(peak, before) >= 20, peak  # calls overlapped at the partner: the gateway is not serial


def test_a_gateway_killed_with_hundreds_of_calls_in_flight_recovers_them_by_asking_the_partner(
        gateway_pipeline: Pipeline) -> None:
    gateway = process(gateway_pipeline, "partner")
    # Each submission takes the partner 40 s, longer than a restarted gateway takes to ask (several seconds
    # on a busy machine, over 20 s with another test's pipeline on the same two cores): the dead owner's
    # requests are still being processed when its successor asks. The gateway waits 60 s for an answer, so
    # its calls stay in flight however slowly the saga hands them over: with the module's 1.5 s timeout
    # they would time out, the breaker would open, and only the calls started before it did would reach
    # the partner (too few when the pipeline is slow).
    gateway.stop()
    gateway.env["PAYMENTS_PARTNER_TIMEOUT_MS"] = "60000"
    try:
        gateway.start().wait_ready()
        sim(gateway_pipeline, "/_sim/faults", {"mode": "slow", "seconds": 90, "extra_latency_ms": 40_000})
        queries_before = sim(gateway_pipeline, "/_sim/stats")["queries"]
        commands = send(gateway_pipeline, 600, declined_every=10)
        in_flight = wait_for(lambda: (n := sim(gateway_pipeline, "/_sim/stats")["in_progress"]) >= 150 and n, 90,
                             "hundreds of partner calls in flight")
        gateway.kill()
    finally:  # the successor (and the module's later tests) runs with the module's timeout
        gateway.env["PAYMENTS_PARTNER_TIMEOUT_MS"] = ENV["PAYMENTS_PARTNER_TIMEOUT_MS"]
        sim(gateway_pipeline, "/_sim/faults", {"mode": "none"})
        if gateway.alive():
            gateway.stop()
        gateway.start()
    outcomes = wait_all_terminal(gateway_pipeline, commands, 240)
    rows = check_money(gateway_pipeline, commands, outcomes)
    assert sum(isinstance(o, PaymentFailed) for o in outcomes.values()) >= 60  # the declined ones, at least
    log = gateway.log_tail(10_000_000)
    recovered = sum(json.loads(line)["calls"] for line in log.splitlines()
                    if '"event": "calls_recovered"' in line)
    assert recovered >= 100, (in_flight, recovered)
    queries = sim(gateway_pipeline, "/_sim/stats")["queries"] - queries_before
    assert queries >= recovered  # every recovered call asked the partner before anything else
    # The partner records a submission at its receipt and answers a query about one it is still
    # processing PENDING; the gateway then asks again, and submits only on NOT_FOUND, which now means the
    # dead owner's request never arrived (docs/participants.md, "Crash recovery"). On one host no request
    # is still on the wire by the time the new owner asks, so every submission that reached the partner
    # was POSTed exactly once: no second POST, not even an idempotent replay.
    doubled = {sid: row for sid, row in rows.items()
               if row["posts"] and (row["status"] is None or (row["posts"], row["replays"]) != (1, 0))}
    assert not doubled, doubled
    # The race was run: the dead owner's requests were still being processed when they were asked about.
    assert '"result": "pending"' in log, "no recovered call or query found its submission PENDING"


def test_the_partner_down_for_10s_opens_the_breaker_then_every_payment_completes_once(
        gateway_pipeline: Pipeline) -> None:
    partner_sim, gateway = process(gateway_pipeline, "partner-sim"), process(gateway_pipeline, "partner")
    opened_before = gateway.log_tail(10_000_000).count("partner_breaker_opened")
    partner_sim.process.send_signal(signal.SIGKILL)
    partner_sim.process.wait(10)
    down_at = time.monotonic()
    commands = send(gateway_pipeline, 100)
    wait_for(lambda: gateway.log_tail(10_000_000).count("partner_breaker_opened") > opened_before, 30,
             "the breaker to open")
    time.sleep(max(0.0, 10 - (time.monotonic() - down_at)))  # the outage lasts 10 s
    partner_sim.start()
    wait_for(lambda: partner_sim.log_tail(10_000_000).count("partner_sim_listening") == 2, 30, "the partner back")
    outcomes = wait_all_terminal(gateway_pipeline, commands, 120)
    rows = check_money(gateway_pipeline, commands, outcomes)
    assert "partner_breaker_closed" in gateway.log_tail(10_000_000).split("partner_breaker_opened")[-1]
    assert {row["posts"] for row in rows.values()} == {1}  # refused attempts never reached the partner
    assert all(isinstance(o, PaymentSettled) for o in outcomes.values())  # they waited, none failed


def test_a_429_storm_is_waited_out_without_failing_or_doubling_anything(gateway_pipeline: Pipeline) -> None:
    gateway = process(gateway_pipeline, "partner")
    throttled_before = gateway.log_tail(10_000_000).count('"result": "throttled"')
    # The storm meets the next 20 submissions, however long the saga takes to hand them over (a window in
    # seconds could pass before the first one arrives on a busy machine).
    sim(gateway_pipeline, "/_sim/faults", {"mode": "throttle", "submissions": 20, "retry_after_s": 1})
    commands = send(gateway_pipeline, 100)
    outcomes = wait_all_terminal(gateway_pipeline, commands, 120)
    rows = check_money(gateway_pipeline, commands, outcomes)
    assert {row["posts"] for row in rows.values()} == {1}
    assert all(isinstance(o, PaymentSettled) for o in outcomes.values())
    assert gateway.log_tail(10_000_000).count('"result": "throttled"') - throttled_before == 20  # each waited out


def test_answers_slower_than_the_timeout_are_resolved_by_queries_never_by_resubmitting(
        gateway_pipeline: Pipeline) -> None:
    # The next 10 submissions are slowed past the gateway's 1.5 s timeout, however late they arrive. No more:
    # ten failures may open the breaker, and a slowed submission as its probe would keep it open for longer
    # each time (the payments behind it would run out of time).
    sim(gateway_pipeline, "/_sim/faults", {"mode": "slow", "submissions": 10, "extra_latency_ms": 2000})
    commands = send(gateway_pipeline, 50)
    outcomes = wait_all_terminal(gateway_pipeline, commands, 120)
    rows = check_money(gateway_pipeline, commands, outcomes)
    timed_out = [row for row in rows.values() if row["queries"] > 0]
    assert len(timed_out) >= 10  # their answers were lost to the timeout: the saga asked instead
    assert {row["posts"] for row in rows.values()} == {1}  # and never submitted them again
    assert '"event": "partner_outcome_unknown"' in process(gateway_pipeline, "partner").log_tail(10_000_000)
