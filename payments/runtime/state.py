"""Committed in-memory state of the partitions a processor owns, and the durable timers derived from it.

The state of a key changes only through `commit`, called after the Kafka transaction that carried the
change committed; an aborted transaction's changes are never seen here. Timers are not stored apart
from the state: a key's timer is `next_deadline(state)`, kept in a heap for quick "what is due" and
re-derived whenever the state changes, is restored, or a popped timer must be put back.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any, Generic, TypeVar

S = TypeVar("S")
Key = tuple[int, str]  # (partition, key)


Codec = tuple[Callable[[S], bytes], Callable[[bytes], S]]


class PartitionedState(Generic[S]):
    """With a `codec`, each state is held as its encoded bytes (the changelog snapshot, about a fifth of
    the memory of the decoded object), and the `cached` most recently used keys also decoded: the live
    payments stay decoded, a finished one kept for its retention costs only its bytes."""

    def __init__(self, next_deadline: Callable[[S], datetime | None], *, codec: Codec[S] | None = None,
                 cached: int = 10_000) -> None:
        self._next_deadline = next_deadline
        self._codec = codec
        self._cached = cached
        self._cache: OrderedDict[Key, S] = OrderedDict()
        self._partitions: dict[int, dict[str, Any]] = {}  # S, or its bytes with a codec
        self._timers: list[tuple[datetime, int, str]] = []

    # -- ownership ----------------------------------------------------------------------------

    def owns(self, partition: int) -> bool:
        return partition in self._partitions

    @property
    def partitions(self) -> set[int]:
        return set(self._partitions)

    def assign(self, partition: int, states: Iterable[tuple[str, S]], raw: Mapping[str, bytes] | None = None) -> int:
        """Take ownership of `partition` with its restored states (and, with a codec, the bytes they were
        decoded from, when at hand); return how many there are."""
        restored = self._partitions.setdefault(partition, {})
        for key, state in states:
            restored[key] = self._stored(state, raw.get(key) if raw is not None else None)
            self._schedule(partition, key, state)
        return len(restored)

    def revoke(self, partition: int) -> None:
        """Forget the partition (its heap entries are skipped from now on: the partition is not owned)."""
        self._partitions.pop(partition, None)
        for key in [k for k in self._cache if k[0] == partition]:
            del self._cache[key]

    # -- state --------------------------------------------------------------------------------

    def get(self, partition: int, key: str) -> S | None:
        stored = self._partitions.get(partition, {}).get(key)
        if stored is None or self._codec is None:
            return stored
        cached = self._cache.get((partition, key))
        if cached is not None:
            self._cache.move_to_end((partition, key))
            return cached
        state = self._codec[1](stored)
        self._remember((partition, key), state)
        return state

    def items(self, partition: int) -> Iterator[tuple[str, S]]:
        """Every (key, state) of an owned partition (decoding each in turn, with a codec)."""
        for key in list(self._partitions.get(partition, {})):
            state = self.get(partition, key)
            if state is not None:
                yield key, state

    def find(self, key: str) -> S | None:
        """The state of `key` in whichever owned partition holds it (inspection and tests)."""
        for partition, states in self._partitions.items():
            if key in states:
                return self.get(partition, key)
        return None

    def _stored(self, state: S, encoded: bytes | None) -> Any:
        if self._codec is None:
            return state
        return encoded if encoded is not None else self._codec[0](state)

    def _remember(self, key: Key, state: S) -> None:
        self._cache[key] = state
        self._cache.move_to_end(key)
        while len(self._cache) > self._cached:
            self._cache.popitem(last=False)

    def __len__(self) -> int:
        return sum(len(states) for states in self._partitions.values())

    def commit(self, changes: Mapping[Key, S | None], encoded: Mapping[Key, bytes] | None = None) -> None:
        """Make a committed transaction's changes the state (None deletes the key). `encoded`: the snapshot
        bytes already made for the changelog, kept instead of encoding again."""
        for (partition, key), state in changes.items():
            states = self._partitions.get(partition)
            if states is None:
                continue  # not owned any more: the new owner restores it from the changelog
            if state is None:
                states.pop(key, None)
                self._cache.pop((partition, key), None)
            else:
                states[key] = self._stored(state, encoded.get((partition, key)) if encoded is not None else None)
                if self._codec is not None:
                    self._remember((partition, key), state)
                self._schedule(partition, key, state)

    # -- timers -------------------------------------------------------------------------------

    @property
    def timers_pending(self) -> int:
        return len(self._timers)

    def pop_due(self, now: datetime, limit: int) -> list[Key]:
        """Remove and return up to `limit` owned keys whose timer is due (each once, earliest first)."""
        due: list[Key] = []
        seen: set[Key] = set()
        while self._timers and self._timers[0][0] <= now and len(due) < limit:
            _, partition, key = heapq.heappop(self._timers)
            if (partition, key) not in seen and key in self._partitions.get(partition, {}):
                seen.add((partition, key))
                due.append((partition, key))
        return due

    def rearm(self, keys: Iterable[Key]) -> None:
        """Put the timers of `keys` back from their current state (after an aborted transaction)."""
        for partition, key in keys:
            state = self.get(partition, key)
            if state is not None:
                self._schedule(partition, key, state)

    def retry_at(self, key: Key, at: datetime) -> None:
        """Fire `key`'s timer again at `at` (its own deadline has passed, so it will be due then)."""
        heapq.heappush(self._timers, (at, *key))

    def _schedule(self, partition: int, key: str, state: S) -> None:
        deadline = self._next_deadline(state)
        if deadline is not None:
            heapq.heappush(self._timers, (deadline, partition, key))
