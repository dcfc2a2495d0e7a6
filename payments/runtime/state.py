"""Committed in-memory state of the partitions a processor owns, and the durable timers derived from it.

The state of a key changes only through `commit`, called after the Kafka transaction that carried the
change committed; an aborted transaction's changes are never seen here. Timers are not stored apart
from the state: a key's timer is `next_deadline(state)`, kept in a heap for quick "what is due" and
re-derived whenever the state changes, is restored, or a popped timer must be put back.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Generic, TypeVar

S = TypeVar("S")
Key = tuple[int, str]  # (partition, key)


class PartitionedState(Generic[S]):
    def __init__(self, next_deadline: Callable[[S], datetime | None]) -> None:
        self._next_deadline = next_deadline
        self._partitions: dict[int, dict[str, S]] = {}
        self._timers: list[tuple[datetime, int, str]] = []

    # -- ownership ----------------------------------------------------------------------------

    def owns(self, partition: int) -> bool:
        return partition in self._partitions

    @property
    def partitions(self) -> set[int]:
        return set(self._partitions)

    def assign(self, partition: int, states: Iterable[tuple[str, S]]) -> int:
        """Take ownership of `partition` with its restored states; return how many there are."""
        restored = self._partitions.setdefault(partition, {})
        for key, state in states:
            restored[key] = state
            self._schedule(partition, key, state)
        return len(restored)

    def revoke(self, partition: int) -> None:
        """Forget the partition (its heap entries are skipped from now on: the partition is not owned)."""
        self._partitions.pop(partition, None)

    # -- state --------------------------------------------------------------------------------

    def get(self, partition: int, key: str) -> S | None:
        return self._partitions.get(partition, {}).get(key)

    def find(self, key: str) -> S | None:
        """The state of `key` in whichever owned partition holds it (inspection and tests)."""
        for states in self._partitions.values():
            if key in states:
                return states[key]
        return None

    def __len__(self) -> int:
        return sum(len(states) for states in self._partitions.values())

    def commit(self, changes: Mapping[Key, S | None]) -> None:
        """Make a committed transaction's changes the state (None deletes the key)."""
        for (partition, key), state in changes.items():
            states = self._partitions.get(partition)
            if states is None:
                continue  # not owned any more: the new owner restores it from the changelog
            if state is None:
                states.pop(key, None)
            else:
                states[key] = state
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
