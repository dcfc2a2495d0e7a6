"""A process's start (ops.launch._start) ends in a documented outcome when its topics cannot be made:
Kafka failing transiently past the retry bound is waited out like a Kafka that is down; a topic Kafka
refuses, or one of the wrong shape, is exit code 2; never exit code 1, which says "a bug"."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from structlog.testing import capture_logs

from ops import launch
from ops.settings import Settings
from payments.runtime.errors import KafkaCallError, TopologyError
from payments.runtime.service import EXIT_CONFIG, EXIT_OK
from payments.runtime.watchdog import Watchdog


def call_error(code: int, retriable: bool = False) -> KafkaCallError:
    try:
        raise KafkaException(KafkaError(code, "from the test", retriable=retriable))
    except KafkaException as error:
        failure = KafkaCallError(f"create_topics failed after 10 attempt(s): {error.args[0]}")
        failure.__cause__ = error
        return failure


class QuietWatchdog(Watchdog):
    def start(self) -> Watchdog:  # no thread: nothing is guarded here
        return self


@pytest.fixture
def outcomes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Exception | None]]:
    """What each ensure_topics call does in turn: raise the error, or succeed (None)."""
    queue: list[Exception | None] = []

    def ensure_topics(bootstrap: str, specs: list[Any]) -> None:
        outcome = queue.pop(0)
        if outcome is not None:
            raise outcome

    monkeypatch.setattr(launch, "configure_logging", lambda *args: None)
    monkeypatch.setattr(launch, "install_signal_handlers", lambda *args: None)
    monkeypatch.setattr(launch, "Watchdog", QuietWatchdog)
    monkeypatch.setattr(launch, "wait_for_kafka", lambda bootstrap, stop: True)
    monkeypatch.setattr(launch, "ensure_topics", ensure_topics)
    monkeypatch.setattr(launch, "TOPIC_SETUP_PAUSE_S", 0.001)
    yield queue
    assert not queue, "every planned ensure_topics call was made"


def test_topic_setup_failing_transiently_past_its_bound_is_waited_out_then_the_process_starts(
        outcomes: list[Exception | None]) -> None:
    outcomes += [call_error(KafkaError.REQUEST_TIMED_OUT), call_error(KafkaError.NOT_CONTROLLER, retriable=True), None]
    with capture_logs() as logs:
        started = launch._start("gate", Settings.load({}), 60.0)
    assert not isinstance(started, int)
    assert [line["attempt"] for line in logs if line["event"] == "waiting_for_topics"] == [1, 2]


def test_a_topic_kafka_refuses_to_create_is_the_configuration_exit_code(
        outcomes: list[Exception | None], capsys: pytest.CaptureFixture[str]) -> None:
    outcomes.append(call_error(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    with capture_logs() as logs:
        assert launch._start("gate", Settings.load({}), 60.0) == EXIT_CONFIG
    assert [line["event"] for line in logs] == ["topic_setup_refused"]
    assert "TOPIC_AUTHORIZATION_FAILED" in capsys.readouterr().err


def test_a_topic_of_the_wrong_shape_is_the_configuration_exit_code(outcomes: list[Exception | None]) -> None:
    outcomes.append(TopologyError("topic t.a has 3 partitions, expected 6"))
    assert launch._start("gate", Settings.load({}), 60.0) == EXIT_CONFIG


def test_a_stop_while_waiting_for_topics_is_a_clean_exit(
        outcomes: list[Exception | None], monkeypatch: pytest.MonkeyPatch) -> None:
    class StoppedDuringPause(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            self.set()  # SIGTERM arrives during the pause
            return True

    outcomes.append(call_error(KafkaError.REQUEST_TIMED_OUT))
    monkeypatch.setattr(launch, "threading", SimpleNamespace(Event=StoppedDuringPause))
    assert launch._start("gate", Settings.load({}), 60.0) == EXIT_OK


def test_a_topic_refused_for_authorization_says_to_make_the_topics_as_an_admin(
        outcomes: list[Exception | None], capsys: pytest.CaptureFixture[str]) -> None:
    outcomes.append(call_error(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    assert launch._start("gate", Settings.load({}), 60.0) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "`payments topics ensure`" in err


def test_a_topic_refused_for_another_reason_gives_no_admin_hint(
        outcomes: list[Exception | None], capsys: pytest.CaptureFixture[str]) -> None:
    outcomes.append(call_error(KafkaError.POLICY_VIOLATION))
    assert launch._start("gate", Settings.load({}), 60.0) == EXIT_CONFIG
    assert "topics ensure" not in capsys.readouterr().err


def test_a_service_whose_build_reads_kafka_waits_out_a_transient_failure_and_exits_2_on_a_refusal(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The risk service reads risk.models to build its Logic: a leader moving past the retry bound there is
    waited out (the chaos run saw exit 1 from it), a refusal is the configuration exit code."""
    builds: list[Exception | None] = [call_error(KafkaError.FENCED_LEADER_EPOCH), None]
    built = object()

    def build(_settings: Settings) -> object:
        outcome = builds.pop(0)
        if outcome is not None:
            raise outcome
        return built

    monkeypatch.setattr(launch, "TOPIC_SETUP_PAUSE_S", 0.001)
    spec = SimpleNamespace(build=build)
    with capture_logs() as logs:
        assert launch._build("risk", spec, Settings.load({}), threading.Event()) is built
    assert [line["attempt"] for line in logs if line["event"] == "waiting_for_kafka_to_build"] == [1]

    builds[:] = [call_error(KafkaError.TOPIC_AUTHORIZATION_FAILED)]
    assert launch._build("risk", spec, Settings.load({}), threading.Event()) == EXIT_CONFIG
    assert "TOPIC_AUTHORIZATION_FAILED" in capsys.readouterr().err
