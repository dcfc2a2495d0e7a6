"""Local state stores: a copy on disk of each changelog partition a processor owns, and how far it goes.

The compacted changelog is the state's recovery log and stays the truth. A local store only saves
reading it again: it holds the latest record per changelog key of one partition, written after the
Kafka transaction that produced them committed, together with a checkpoint, the changelog offset it
is complete up to. A restart on the same machine then reads the changelog from the checkpoint (the
tail), not from the start (docs/architecture.md §3, "Local state stores").

Safety rests on one rule: every committed changelog record below the checkpoint is in the store.
A checkpoint that is too low only costs reading some records again (a later record for a key
overwrites an earlier one, so reading a record twice changes nothing); one that is too high would
lose state. So the processor moves the checkpoint only to offsets it has seen committed, and a
store is not trusted (it is wiped, and the changelog read from its start) when its checkpoint is
outside the changelog's current offsets, when the changelog is another topic than the one it was
written from (deleted and created again), or when it is older than the changelog keeps tombstones
(a key deleted meanwhile could have lost its tombstone to compaction).

A store that cannot be used (its folder locked by another process, a disk error) is never fatal:
the processor logs it and restores from the changelog as if there were none.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from payments.runtime.errors import ServiceError

Record = tuple[bytes, bytes | None]  # a changelog key and its value (None: a tombstone)


class StateStoreError(ServiceError):
    """A local store could not be opened, read or written (the processor falls back to the changelog)."""


@dataclass(frozen=True)
class StoreCheckpoint:
    """How far a local store is complete: every committed changelog record below `offset` is in it."""

    offset: int  # the next changelog offset to read
    topic_id: str  # the changelog topic's id when the store was written
    written_at_s: float  # wall-clock time (Unix seconds) of the write

    def trusted(self, *, earliest: int, end: int, topic_id: str, now_s: float, max_age_s: float) -> str | None:
        """None when the store can be restored from this checkpoint; otherwise why not (a log line)."""
        if topic_id != self.topic_id:
            return f"the changelog is another topic now (id {topic_id}, the store's {self.topic_id})"
        if not earliest <= self.offset <= end:
            return f"checkpoint {self.offset} outside the changelog's offsets {earliest}..{end}"
        if now_s - self.written_at_s > max_age_s:
            return (f"checkpoint written {now_s - self.written_at_s:.0f}s ago, longer than the changelog keeps "
                    f"tombstones ({max_age_s:.0f}s)")
        return None

    def encode(self) -> bytes:
        return f"{self.offset} {self.topic_id} {self.written_at_s!r}".encode()

    @classmethod
    def decode(cls, data: bytes) -> StoreCheckpoint:
        offset, topic_id, written_at = data.decode().split(" ")
        return cls(int(offset), topic_id, float(written_at))


class PartitionStore(Protocol):
    """One changelog partition's local copy. `durable`: it outlives the process (worth writing after each
    commit); a transient one only buffers a restore."""

    durable: bool

    def checkpoint(self) -> StoreCheckpoint | None: ...

    def write(self, records: Iterable[Record], checkpoint: StoreCheckpoint | None) -> None:
        """Apply `records` in order and, when given, move the checkpoint, all in one atomic write."""
        ...

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every live (key, value), in key order."""
        ...

    def wipe(self) -> None:
        """Remove every record and the checkpoint."""
        ...

    def close(self) -> None: ...


class StateStores(Protocol):
    """Opens the store of a changelog partition."""

    def open(self, partition: int) -> PartitionStore:
        """The partition's store; StateStoreError when it cannot be had (the caller uses a transient one)."""
        ...


class MemoryStore:
    """A transient store: a restore's buffer when there is no local store, and the unit tests' stand-in."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.records: dict[bytes, bytes] = {}
        self.saved: StoreCheckpoint | None = None

    def checkpoint(self) -> StoreCheckpoint | None:
        return self.saved

    def write(self, records: Iterable[Record], checkpoint: StoreCheckpoint | None) -> None:
        for key, value in records:
            if value is None:
                self.records.pop(key, None)
            else:
                self.records[key] = value
        if checkpoint is not None:
            self.saved = checkpoint

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        yield from sorted(self.records.items())

    def wipe(self) -> None:
        self.records.clear()
        self.saved = None

    def close(self) -> None:
        pass


class NoStores:
    """No local stores: every restore reads the changelog from its start."""

    def open(self, partition: int) -> PartitionStore:
        return MemoryStore()
