"""Local state stores in RocksDB (through rocksdict, the binding Quix Streams uses), one per changelog partition.

Layout: `<root>/<partition>/` is a RocksDB database whose default column family holds the changelog's
latest record per key (raw bytes, exactly as in the changelog) and whose `meta` column family holds the
checkpoint. Records and checkpoint go in one `WriteBatch`, so a crash leaves the store either before
or after a write, never with a checkpoint ahead of its records (payments.runtime.store says why that
is the rule that matters). RocksDB locks a database to one process: a second instance pointed at the
same folder gets StateStoreError and restores from the changelog instead.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch

from payments.runtime.store import PartitionStore, Record, StateStoreError, StoreCheckpoint

META = "meta"
CHECKPOINT_KEY = b"checkpoint"


# Memory: RocksDB's defaults (64 MiB memtables, up to two per column family, a block cache per database)
# would hold ~0.5 GB for six partitions just after a restore wrote them; state is already held by the
# processor, so the stores keep small memtables and share one small block cache.
WRITE_BUFFER_BYTES = 4 * 2**20
BLOCK_CACHE_BYTES = 16 * 2**20
_CACHE = Cache(BLOCK_CACHE_BYTES)


def _options() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    options.create_missing_column_families(True)
    options.set_write_buffer_size(WRITE_BUFFER_BYTES)
    options.set_max_write_buffer_number(2)
    table = BlockBasedOptions()
    table.set_block_cache(_CACHE)
    options.set_block_based_table_factory(table)
    return options


class RocksStore:
    durable = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: Rdict | None = None
        self._open()

    def _open(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._db = Rdict(str(self.path), _options(), column_families={META: _options()})
        except Exception as error:  # rocksdict raises a bare Exception for IO errors (a held LOCK, say)
            raise StateStoreError(f"local state store {self.path}: {error}") from error

    @property
    def db(self) -> Rdict:
        if self._db is None:
            raise StateStoreError(f"local state store {self.path} is closed")
        return self._db

    def checkpoint(self) -> StoreCheckpoint | None:
        try:
            data = self.db.get_column_family(META).get(CHECKPOINT_KEY)
        except Exception as error:
            raise StateStoreError(f"local state store {self.path}: {error}") from error
        return None if data is None else StoreCheckpoint.decode(data)

    def write(self, records: Iterable[Record], checkpoint: StoreCheckpoint | None) -> None:
        try:
            batch = WriteBatch(raw_mode=True)
            for key, value in records:
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
            if checkpoint is not None:
                batch.put(CHECKPOINT_KEY, checkpoint.encode(), self.db.get_column_family_handle(META))
            self.db.write(batch)
        except Exception as error:
            raise StateStoreError(f"local state store {self.path}: {error}") from error

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        try:
            yield from self.db.items()
        except Exception as error:
            raise StateStoreError(f"local state store {self.path}: {error}") from error

    def wipe(self) -> None:
        """Remove the database and open an empty one in its place."""
        self.close()
        shutil.rmtree(self.path, ignore_errors=True)
        self._open()

    def close(self) -> None:
        if self._db is not None:
            try:
                self._db.close()
            finally:
                self._db = None


class RocksStores:
    """The stores of one processor instance: `<root>/<partition>`. `root` names the service's changelog and
    the instance (ops.launch), so two instances on one machine never share a store."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def open(self, partition: int) -> PartitionStore:
        return RocksStore(self.root / str(partition))
