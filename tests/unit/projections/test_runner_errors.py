"""The runner's database errors each end in a documented outcome: a batch refused even record by record
(the runner's own bookkeeping) and a failed read of the stored offsets are FatalProcessorError, which the
service rebuilds from (exit code 3 when it keeps failing); no psycopg error escapes raw."""

from __future__ import annotations

import contextlib
from typing import Any

import psycopg
import pytest

from payments.contracts.codec import SingleObjectSerde
from payments.runtime.errors import FatalProcessorError
from payments.runtime.topics import Topics
from payments.runtime.watchdog import Watchdog
from projections import runner as runner_module
from projections.runner import ProjectionRunner
from projections.status import PaymentStatusProjection


class NoConsumer:
    """The runner's Kafka consumer, never reached by these tests."""

    def __init__(self, config: dict[str, object]) -> None:
        self.config = config

    def assignment(self) -> list[object]:
        return []

    def close(self) -> None:
        pass


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> ProjectionRunner:
    monkeypatch.setattr(runner_module, "Consumer", NoConsumer)
    return ProjectionRunner(PaymentStatusProjection(), bootstrap_servers="unused:9092",
                            database_url="postgresql://unused/none", topics=Topics("t."), serde=SingleObjectSerde(),
                            watchdog=Watchdog("test"))


def test_a_batch_refused_outside_any_record_is_fatal_naming_the_batch_and_the_cause(
        runner: ProjectionRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[bool] = []
    refusal = psycopg.errors.UniqueViolation('duplicate key value violates unique constraint "projection_offsets_pkey"')

    def refuse(records: list[Any], *, isolate: bool = False) -> None:
        attempts.append(isolate)
        raise refusal

    monkeypatch.setattr(runner, "_apply_batch", refuse)
    with pytest.raises(FatalProcessorError, match="outside any record") as raised:
        runner._checkpoint([object(), object(), object()])  # type: ignore[list-item]
    assert attempts == [False, True]  # the whole batch, then record by record; then given up, not retried
    assert raised.value.__cause__ is refusal
    assert "payment_status" in str(raised.value) and "3 records" in str(raised.value)
    assert "UniqueViolation" in str(raised.value)


def test_a_batch_refused_whole_but_accepted_record_by_record_commits(
        runner: ProjectionRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[bool] = []

    def refuse_whole(records: list[Any], *, isolate: bool = False) -> None:
        attempts.append(isolate)
        if not isolate:
            raise psycopg.errors.NumericValueOutOfRange("bigint out of range")

    monkeypatch.setattr(runner, "_apply_batch", refuse_whole)
    runner._checkpoint([object()])  # type: ignore[list-item]
    assert attempts == [False, True]


def test_a_failed_read_of_the_stored_offsets_is_fatal_not_a_raw_database_error(
        runner: ProjectionRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    class Refusing:
        def transaction(self) -> contextlib.AbstractContextManager[None]:
            return contextlib.nullcontext()

        def execute(self, query: str, params: object = None) -> None:
            raise psycopg.errors.UndefinedTable('relation "projection_offsets" does not exist')

    monkeypatch.setattr(runner, "_db", Refusing)
    with pytest.raises(FatalProcessorError, match="reading the stored offsets failed: UndefinedTable"):
        runner._stored_offsets()
