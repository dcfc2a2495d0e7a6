"""PartitionedState with a codec: states held as their snapshot bytes, the recently used ones decoded."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from payments.runtime.state import PartitionedState

T0 = datetime(2026, 1, 5, tzinfo=UTC)


class Codec:
    def __init__(self) -> None:
        self.encoded = 0
        self.decoded = 0

    def encode(self, state: dict[str, int]) -> bytes:
        self.encoded += 1
        return json.dumps(state).encode()

    def decode(self, data: bytes) -> dict[str, int]:
        self.decoded += 1
        return dict(json.loads(data))


def deadline(state: dict[str, int]) -> datetime | None:
    return T0 + timedelta(seconds=state["due"]) if "due" in state else None


def test_states_are_kept_as_bytes_and_only_the_recently_used_stay_decoded() -> None:
    codec = Codec()
    state: PartitionedState[dict[str, int]] = PartitionedState(deadline, codec=(codec.encode, codec.decode), cached=2)
    state.assign(0, [])
    changes = {(0, f"k{n}"): {"n": n} for n in range(5)}
    encoded = {key: json.dumps(value).encode() for key, value in changes.items()}
    state.commit(changes, encoded)
    assert codec.encoded == 0  # the snapshot bytes were reused, not made again
    assert state.get(0, "k4") == {"n": 4} and codec.decoded == 0  # among the 2 most recent: still decoded
    assert state.get(0, "k0") == {"n": 0} and codec.decoded == 1  # evicted: decoded from its bytes
    assert state.get(0, "k0") == {"n": 0} and codec.decoded == 1  # and now cached
    state.commit({(0, "k0"): None})
    assert state.get(0, "k0") is None and len(state) == 4


def test_restored_states_keep_their_bytes_and_their_timers() -> None:
    codec = Codec()
    state: PartitionedState[dict[str, int]] = PartitionedState(deadline, codec=(codec.encode, codec.decode), cached=1)
    restored = {"a": {"due": 5}, "b": {"n": 1}}
    state.assign(3, restored.items(), raw={key: json.dumps(value).encode() for key, value in restored.items()})
    assert codec.encoded == 0
    assert state.pop_due(T0 + timedelta(seconds=5), 10) == [(3, "a")]
    assert state.find("b") == {"n": 1}
    state.revoke(3)
    assert state.get(3, "b") is None and state.find("a") is None


def test_without_a_codec_the_objects_themselves_are_kept() -> None:
    state: PartitionedState[dict[str, int]] = PartitionedState(deadline)
    state.assign(0, [])
    value = {"n": 1}
    state.commit({(0, "k"): value})
    assert state.get(0, "k") is value
