"""`end_offsets` through a partition leader that moved: librdkafka's admin client keeps asking with the leader
epoch it had (FENCED_LEADER_EPOCH on every retry, confluentinc/librdkafka#4620), so the retry must ask a new
client. (No broker here: the admin client is a stand-in; the chaos run meets the real thing.)"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, ClassVar

import pytest
from confluent_kafka import KafkaError, KafkaException

from payments.runtime import reader, retry
from payments.runtime.errors import KafkaCallError


class Admin:
    """An admin client that answers with stale-epoch errors `stale` times in its whole life, then offsets."""

    made: ClassVar[list[Admin]] = []

    def __init__(self, _config: dict[str, Any], stale: int = 10**6) -> None:
        self.stale = stale
        Admin.made.append(self)

    def list_offsets(self, wanted: dict[Any, Any], **_: Any) -> dict[Any, Future[Any]]:
        futures: dict[Any, Future[Any]] = {}
        for tp in wanted:
            future: Future[Any] = Future()
            if self.stale > 0:
                future.set_exception(KafkaException(KafkaError(KafkaError.FENCED_LEADER_EPOCH)))
            else:
                future.set_result(type("Offset", (), {"offset": 42})())
            futures[tp] = future
        self.stale -= 1
        return futures


@pytest.fixture(autouse=True)
def no_pauses(monkeypatch: pytest.MonkeyPatch) -> None:
    Admin.made = []
    monkeypatch.setattr(reader, "retry_kafka", lambda call, what: retry.retry_kafka(call, what, sleep=lambda _s: None))


def test_a_fenced_leader_epoch_is_asked_again_through_a_new_client(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every client made after the first answers: only a new client sees the new leader.
    monkeypatch.setattr(reader, "AdminClient", lambda config: Admin(config, stale=0 if Admin.made else 10**6))
    assert reader.end_offsets("127.0.0.1:9", [("t", 0), ("t", 1)]) == {("t", 0): 42, ("t", 1): 42}
    assert len(Admin.made) == 2


def test_a_client_that_never_recovers_still_ends_in_a_bounded_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader, "AdminClient", Admin)
    with pytest.raises(KafkaCallError, match="FENCED_LEADER_EPOCH"):
        reader.end_offsets("127.0.0.1:9", [("t", 0)])
    assert len(Admin.made) == 1 + retry.ATTEMPTS_MAX
