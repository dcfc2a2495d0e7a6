"""`payments topics ensure`: the whole topology, once, with the process's Kafka connection (no broker here)."""

from __future__ import annotations

from typing import Any

import pytest

import ops.topics
from ops.cli import main
from ops.registry import topology
from ops.settings import Settings
from payments.runtime.connection import KafkaConnection
from payments.runtime.errors import TopologyError


def test_topics_ensure_creates_the_whole_topology_with_the_configured_partitions(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PAYMENTS_PARTITIONS", "12")
    monkeypatch.setenv("PAYMENTS_TOPIC_PREFIX", "t1.")
    calls: list[tuple[Any, Any]] = []
    monkeypatch.setattr(ops.topics, "ensure_topics", lambda kafka, specs: calls.append((kafka, specs)))
    assert main(["topics", "ensure"]) == 0
    ((kafka, specs),) = calls
    settings = Settings.load()
    assert specs == topology(settings.topics, 12)
    assert isinstance(kafka, KafkaConnection)
    assert kafka.bootstrap_servers == settings.bootstrap_servers
    assert f"{len(specs)} topics present" in capsys.readouterr().out


def test_topics_ensure_reports_a_topic_of_another_shape_in_one_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(kafka: object, specs: object) -> None:
        raise TopologyError("topic payments.events has 3 partitions, expected 6")

    monkeypatch.setattr(ops.topics, "ensure_topics", refuse)
    assert main(["topics", "ensure"]) == 1
    assert capsys.readouterr().err == "payments topics: topic payments.events has 3 partitions, expected 6\n"
