"""Topic setup asks again through transient Kafka errors with a bound, creating only what is still
missing; a refusal is not asked again; and the error it ends with tells the two apart."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
from confluent_kafka import KafkaError, KafkaException

from payments.runtime import topics as topics_module
from payments.runtime.errors import KafkaCallError
from payments.runtime.retry import gave_up_transient, retry_kafka
from payments.runtime.topics import TopicSpec, ensure_topics

SPECS = [TopicSpec("t.a", 6), TopicSpec("t.b", 6), TopicSpec("t.c", 6, compacted=True)]


def answered(error: KafkaError | None = None) -> Future[None]:
    future: Future[None] = Future()
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(KafkaException(error))
    return future


class Admin:
    """An AdminClient whose create_topics answers per round from `rounds`: topic -> error (None: created)."""

    existing: ClassVar[dict[str, Any]] = {}
    rounds: ClassVar[list[dict[str, KafkaError | None]]] = []
    asked: ClassVar[list[list[str]]] = []

    def __init__(self, config: dict[str, str]) -> None:
        pass

    def list_topics(self, timeout: float) -> SimpleNamespace:
        return SimpleNamespace(topics=Admin.existing)

    def create_topics(self, new_topics: list[Any], operation_timeout: float) -> dict[str, Future[None]]:
        names = [topic.topic for topic in new_topics]
        Admin.asked.append(names)
        answers = Admin.rounds.pop(0)
        return {name: answered(answers.get(name)) for name in names}


@pytest.fixture(autouse=True)
def admin(monkeypatch: pytest.MonkeyPatch) -> type[Admin]:
    monkeypatch.setattr(topics_module, "AdminClient", Admin)
    Admin.existing, Admin.rounds, Admin.asked = {}, [], []
    return Admin


def test_a_transient_creation_error_is_asked_again_for_the_topics_still_missing(admin: type[Admin]) -> None:
    admin.rounds = [{"t.b": KafkaError(KafkaError.REQUEST_TIMED_OUT, "controller moving")},
                    {"t.b": KafkaError(KafkaError.NOT_CONTROLLER, "not the controller", retriable=True)},
                    {}]
    ensure_topics("unused:9092", SPECS)
    assert admin.asked == [["t.a", "t.b", "t.c"], ["t.b"], ["t.b"]]


def test_a_topic_that_exists_by_the_time_it_is_created_counts_as_created(admin: type[Admin]) -> None:
    admin.rounds = [{"t.a": KafkaError(KafkaError.TOPIC_ALREADY_EXISTS, "a concurrent instance won")}]
    ensure_topics("unused:9092", SPECS)
    assert admin.asked == [["t.a", "t.b", "t.c"]]


def test_a_refused_topic_is_not_asked_again_and_says_it_was_refused(admin: type[Admin]) -> None:
    admin.rounds = [{"t.a": KafkaError(KafkaError.REQUEST_TIMED_OUT, "slow"),
                     "t.c": KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "denied")}]
    with pytest.raises(KafkaCallError, match="TOPIC_AUTHORIZATION_FAILED") as raised:
        ensure_topics("unused:9092", SPECS)
    assert len(admin.asked) == 1 and not gave_up_transient(raised.value)


def test_a_call_failing_transiently_past_the_bound_says_so() -> None:
    def flaky() -> None:
        raise KafkaException(KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS, "loading"))

    pauses: list[float] = []
    with pytest.raises(KafkaCallError, match="after 3 attempt") as raised:
        retry_kafka(flaky, "describe", attempts=3, sleep=pauses.append)
    assert gave_up_transient(raised.value) and pauses == [0.1, 0.2]
    assert not gave_up_transient(KafkaCallError("no such topic: x"))  # raised from no Kafka error: a refusal
