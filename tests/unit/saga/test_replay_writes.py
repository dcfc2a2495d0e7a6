"""The orchestrator replay's write path bounds its wait on a full local producer queue."""

from __future__ import annotations

import time

import pytest

from orchestrator.replay import _produce


class AlwaysFull:
    def __init__(self) -> None:
        self.polls = 0

    def produce(self, topic: str, **_: object) -> None:
        raise BufferError("Local: Queue full")

    def poll(self, timeout: float) -> int:
        self.polls += 1
        return 0


def test_a_queue_that_stays_full_raises_after_the_bound_instead_of_waiting_forever() -> None:
    producer = AlwaysFull()
    started = time.monotonic()
    with pytest.raises(BufferError):
        _produce(producer, "t", b"k", b"v", partition=0, timeout_s=0.3)  # type: ignore[arg-type]
    assert producer.polls >= 1 and time.monotonic() - started < 5
