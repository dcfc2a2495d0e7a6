"""Liveness, pure: the watchdog's deadlines, the health record, the rebuild backoff, transient Kafka retries."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest
from confluent_kafka import KafkaError, KafkaException

from payments.runtime.errors import FatalProcessorError, KafkaCallError
from payments.runtime.health import Health, serve_health, start_lag_probe
from payments.runtime.retry import retry_kafka
from payments.runtime.service import EXIT_OK, EXIT_REBUILDS_EXHAUSTED, run_until_stopped
from payments.runtime.watchdog import EXIT_STUCK, Watchdog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Exits(list[int]):
    def __call__(self, code: int) -> None:
        self.append(code)


def test_a_call_that_outlives_its_deadline_ends_the_process_and_one_that_returns_in_time_does_not() -> None:
    clock, exits = Clock(), Exits()
    watchdog = Watchdog("svc", clock=clock, exit_process=exits)
    with watchdog.guard("commit_transaction", 25.0):
        clock.now += 24.0
        watchdog.check()
    clock.now += 100.0
    watchdog.check()
    assert exits == []  # it returned in time; nothing is guarded any more
    with watchdog.guard("send_offsets_to_transaction", 25.0):
        clock.now += 25.5
        watchdog.check()
    assert exits == [EXIT_STUCK]


def test_nested_guards_are_each_bounded() -> None:
    clock, exits = Clock(), Exits()
    watchdog = Watchdog("svc", clock=clock, exit_process=exits)
    with watchdog.guard("consume", 300.0), watchdog.guard("read_offsets", 10.0):
        clock.now += 11.0
        watchdog.check()
    assert exits == [EXIT_STUCK]


def test_after_a_stop_request_the_process_has_its_grace_period_and_no_more() -> None:
    clock, exits = Clock(), Exits()
    watchdog = Watchdog("svc", stop_grace_s=30.0, clock=clock, exit_process=exits)
    watchdog.stop_requested()
    clock.now += 29.0
    watchdog.check()
    assert exits == []
    clock.now += 2.0
    watchdog.check()
    assert exits == [EXIT_STUCK]


def test_health_is_lost_when_the_loop_stops_iterating_or_work_waits_without_commits() -> None:
    clock = Clock()
    health = Health(progress_bound_s=60.0, clock=clock)
    assert health.alive()[0] and not health.ready()[0]
    health.partitions = 6
    assert health.ready() == (True, "6 partitions assigned")
    clock.now += 61.0
    assert health.alive() == (False, "no loop iteration for 61s (bound 60s)")
    health.iterated()
    assert health.alive()[0]
    health.consumed(50)  # records waiting, and every transaction aborts from now on
    for _ in range(7):
        clock.now += 10.0
        health.iterated()
        health.consumed(50)
    assert health.alive()[0] is False and "no commit" in health.alive()[1]
    health.committed()
    assert health.alive()[0]
    health.consumed(0)  # idle: nothing waits, no commit is due
    clock.now += 50.0
    health.iterated()
    clock.now += 50.0
    health.iterated()
    assert health.alive()[0]


def test_the_health_endpoints_answer_200_or_503_with_the_reason() -> None:
    health = Health(progress_bound_s=60.0)
    server = serve_health(health, 0, host="127.0.0.1")
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
            assert response.status == 200 and json.loads(response.read())["ok"] is True
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"{base}/readyz", timeout=5)
        assert not_ready.value.code == 503
        assert json.loads(not_ready.value.read())["reason"] == "no partitions assigned"
    finally:
        server.shutdown()


class Failing:
    """A build whose runs fail after `durations` (seconds, on the fake clock), then stops cleanly."""

    def __init__(self, clock: Clock, durations: list[float]) -> None:
        self.clock, self.durations, self.builds = clock, durations, 0

    def build(self) -> Failing:
        self.builds += 1
        return self

    def run(self, stop: threading.Event) -> None:
        if not self.durations:
            return
        self.clock.now += self.durations.pop(0)
        raise FatalProcessorError("broker unreachable")


def test_rebuilds_back_off_and_a_healthy_run_resets_the_count() -> None:
    clock = Clock()
    waits: list[float] = []

    class Stop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waits.append(timeout or 0)
            return False

    # An outage (4 quick failures), a long good run that then fails, another outage (3), then a clean run:
    # never 5 quick failures in a row, so the process waits it all out.
    failing = Failing(clock, [1.0] * 4 + [120.0] + [1.0] * 3)
    code = run_until_stopped(failing.build, Stop(), "svc", rebuilds_max=5, pause_s=1.0, pause_max_s=4.0,
                             healthy_run_s=60.0, clock=clock)
    assert code == EXIT_OK and failing.builds == 9
    assert waits == [1.0, 2.0, 4.0, 4.0, 1.0, 2.0, 4.0, 4.0]  # doubling, capped, and reset by the good run
    exhausted = Failing(clock, [1.0] * 10)
    assert run_until_stopped(exhausted.build, Stop(), "svc", rebuilds_max=5, pause_s=0.0, clock=clock) == \
        EXIT_REBUILDS_EXHAUSTED
    assert exhausted.builds == 5


def _failing(codes: list[int]) -> object:
    def call() -> str:
        if codes:
            raise KafkaException(KafkaError(codes.pop(0)))
        return "answer"
    return call


def test_transient_kafka_errors_are_asked_again_and_others_or_too_many_are_a_call_error() -> None:
    sleeps: list[float] = []
    call = _failing([KafkaError.UNKNOWN_LEADER_EPOCH, KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError._TRANSPORT])
    assert retry_kafka(call, "list_offsets", sleep=sleeps.append) == "answer"  # type: ignore[arg-type]
    assert len(sleeps) == 3
    with pytest.raises(KafkaCallError, match="TOPIC_AUTHORIZATION_FAILED"):
        retry_kafka(_failing([KafkaError.TOPIC_AUTHORIZATION_FAILED]), "list_offsets",  # type: ignore[arg-type]
                    sleep=sleeps.append)
    with pytest.raises(KafkaCallError, match="after 3 attempt"):
        retry_kafka(_failing([KafkaError.UNKNOWN_LEADER_EPOCH] * 5), "list_offsets",  # type: ignore[arg-type]
                    attempts=3, sleep=sleeps.append)


def test_lag_without_commits_is_lost_health_even_when_every_poll_comes_back_empty() -> None:
    clock = Clock()
    health = Health(progress_bound_s=60.0, clock=clock)
    health.lagging(120)  # records wait in Kafka, and the fetcher delivers none of them
    for _ in range(7):
        clock.now += 10.0
        health.consumed(0)
        health.iterated()
    assert health.alive() == (False, "records waiting (lag 120) and no commit for 70s (bound 60s)")
    health.committed()
    health.lagging(0)
    health.consumed(0)
    clock.now += 70.0
    health.iterated()
    assert health.alive()[0]


def test_the_lag_probe_reports_end_minus_position_and_keeps_the_last_figure_when_the_brokers_do_not_answer() -> None:
    health = Health(progress_bound_s=60.0)
    answers: list[dict[tuple[str, int], int] | Exception] = [
        {("t", 0): 10, ("t", 1): 4}, RuntimeError("broker away"), {("t", 0): 3, ("t", 1): 4}]
    seen: list[int] = []

    def ends(partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        assert sorted(partitions) == [("t", 0), ("t", 1)]
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            seen.append(health.report()["lag"])
            raise answer
        return answer

    stop = start_lag_probe(health, 0.001, lambda: {("t", 0): 3, ("t", 1): 1}, ends)
    deadline = time.monotonic() + 5
    while (answers or health.report()["lag"] != 3) and time.monotonic() < deadline:  # 0 + 3 after the last
        time.sleep(0.01)
    stop.set()
    assert not answers and seen == [7 + 3]  # the failed ask kept 10
    assert health.report()["lag"] == 3
