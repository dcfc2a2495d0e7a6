"""`payments status` asks Kafka again through transient errors, with a bound, like every admin call:
a coordinator loading or a leader moving does not turn into "not ready" or a failed command."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from ops import status as status_module
from ops.registry import PROJECTIONS, SERVICES, topology
from ops.settings import Settings
from ops.status import system_status

LOADING = KafkaError(KafkaError.COORDINATOR_LOAD_IN_PROGRESS, "loading")


def future(value: object = None, error: KafkaError | None = None) -> Future[object]:
    answer: Future[object] = Future()
    if error is None:
        answer.set_result(value)
    else:
        answer.set_exception(KafkaException(error))
    return answer


class Admin:
    """A cluster with every topic and a member per group owning all its partitions, 5 records behind
    the end everywhere; the first answer to each kind of question is a transient error."""

    def __init__(self, config: dict[str, str]) -> None:
        self.failed: set[str] = set()

    def _first_time(self, what: str) -> bool:
        first = what not in self.failed
        self.failed.add(what)
        return first

    def list_topics(self, timeout: float) -> SimpleNamespace:
        if self._first_time("list_topics"):
            raise KafkaException(LOADING)
        settings = Settings.load({})
        return SimpleNamespace(topics={spec.name: SimpleNamespace(partitions=dict.fromkeys(range(spec.partitions)))
                                       for spec in topology(settings.topics, settings.partitions)})

    def describe_consumer_groups(self, groups: list[str], request_timeout: float) -> dict[str, Future[object]]:
        (group,) = groups
        if self._first_time("describe"):
            return {group: future(error=LOADING)}
        partitions = [SimpleNamespace(topic=topic, partition=p) for topic, p in INPUTS[group]]
        member = SimpleNamespace(assignment=SimpleNamespace(topic_partitions=partitions))
        return {group: future(SimpleNamespace(members=[member]))}

    def list_consumer_group_offsets(self, requests: list[Any], request_timeout: float) -> dict[str, Future[object]]:
        group = requests[0].group_id
        if self._first_time("offsets"):
            return {group: future(error=LOADING)}
        committed = [SimpleNamespace(topic=topic, partition=p, offset=2) for topic, p in INPUTS[group]]
        return {group: future(SimpleNamespace(topic_partitions=committed))}


INPUTS: dict[str, list[tuple[str, int]]] = {}


def test_transient_errors_are_asked_again_and_the_system_reads_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings.load({})
    partitions = range(settings.partitions)
    INPUTS.clear()
    INPUTS.update({name: [(topic, p) for topic in spec.logic.input_topics for p in partitions]
                   for name, spec in SERVICES.items()})
    INPUTS.update({f"projection-{name}": [(topic, p) for topic in spec.projection().topics for p in partitions]
                   for name, spec in PROJECTIONS.items()})
    monkeypatch.setattr(status_module, "AdminClient", Admin)
    monkeypatch.setattr(status_module, "end_offsets", lambda bootstrap, tps: dict.fromkeys(tps, 7))  # 5 behind
    monkeypatch.setattr(status_module, "_projection_offsets", lambda url, group: {tp: 7 for tp in group.inputs})
    status = system_status(settings)
    assert status.topic_problems == [] and [g.problems for g in status.groups if g.problems] == []
    assert status.ready
    assert {g.name: g.lag for g in status.groups} == {
        g.name: 0 if g.name.startswith("projection ") else 5 * len(g.inputs) for g in status.groups}
