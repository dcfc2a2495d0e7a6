"""Local state stores in the exactly-once loop (payments.runtime.store), through the in-memory fakes.

A restart with a trusted store reads only the changelog's tail; a store whose checkpoint is not
trusted (another topic, out of range, too old) or cannot be opened is restored from the changelog's
start. Whatever the path, the restored state is the same as a full read would give.
"""

from __future__ import annotations

import uuid
import zlib

from payments.contracts.envelope import build_headers
from payments.runtime.config import ProcessorConfig
from payments.runtime.processor import Processor
from payments.runtime.store import StoreCheckpoint
from tests.unit.runtime.fakes import (
    FakeBroker,
    FakeChangelog,
    MemoryStores,
    fake_clients,
    kafka_error,
    restore_assigned,
)
from tests.unit.runtime.test_processor import SERDE, TOPICS, Clock, CountingLogic, Seen, command

CHANGELOG = TOPICS.changelog("counter")


class StoreRig:
    """A processor with local stores on a fake broker; `restart()` builds the next one on the same stores."""

    def __init__(self, broker: FakeBroker | None = None, stores: MemoryStores | None = None,
                 config: ProcessorConfig | None = None) -> None:
        self.broker = broker or FakeBroker()
        self.stores = stores or MemoryStores()
        self.config = config or ProcessorConfig(retriable_attempts_max=3)
        clients, self.consumer, self.producer = fake_clients(self.broker, CHANGELOG, self.stores)
        assert isinstance(clients.changelog, FakeChangelog)
        self.changelog = clients.changelog
        self.processor = Processor(CountingLogic(), clients=clients, topics=TOPICS, serde=SERDE, instance_id="i",
                                   config=self.config, clock=Clock())
        self.consumer.subscribe(list(self.processor._inputs), on_assign=self.processor._on_assign,
                                on_revoke=self.processor._on_revoke, on_lost=self.processor._on_revoke)

    def start(self) -> StoreRig:
        restore_assigned(self.processor)
        return self

    def restart(self) -> StoreRig:
        """A new process on the same machine: the same broker and the same store folder."""
        return StoreRig(self.broker, self.stores, self.config)

    def send(self, payments: list[str]) -> None:
        for pid in payments:
            _append(self.broker, pid)

    def drain(self, steps: int = 5) -> None:
        for _ in range(steps):
            self.processor.step()

    def changelog_records(self) -> int:
        return sum(len(records) for (topic, _), records in self.broker.logs.items() if topic == CHANGELOG)


def _append(broker: FakeBroker, payment_id: str) -> None:
    item = command(payment_id)
    broker.append(TOPICS.commands, payment_id.encode(), SERDE.encode(item),
                  [*build_headers(item, source="test", traceparent=None)])


def _ids(count: int, tag: str = "p") -> list[str]:
    return [str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{tag}-{n}")) for n in range(count)]


def test_every_commit_writes_its_snapshots_and_a_checkpoint_at_the_changelog_end_into_the_stores() -> None:
    rig = StoreRig().start()
    ids = _ids(30)
    rig.send(ids)
    rig.drain()
    for partition in range(3):
        store = rig.stores.stores[partition]
        end = len(rig.broker.logs.get((CHANGELOG, partition), []))
        checkpoint = store.checkpoint()
        assert checkpoint is not None and checkpoint.offset == end and checkpoint.topic_id == rig.changelog.id
        expected = {pid.encode() for pid in ids if zlib.crc32(pid.encode()) % 3 == partition}
        assert set(store.records) == expected


def test_a_restart_with_trusted_stores_reads_only_the_changelog_tail_and_restores_the_same_state() -> None:
    first = StoreRig().start()
    ids = _ids(60)
    first.send(ids)
    first.drain()
    first.send(ids[:10])  # a tail written by another owner after this process's last write: 10 snapshots
    other = StoreRig(first.broker, MemoryStores()).start()
    other.drain()
    assert first.changelog_records() == 70
    second = first.restart().start()
    assert second.changelog.records_read == 10  # the tail only, not 70
    second.drain()
    assert {pid: second.processor.state_of(pid) for pid in ids} == {
        pid: Seen(count=2 if pid in ids[:10] else 1) for pid in ids}


def test_a_store_of_a_changelog_created_again_is_wiped_and_the_changelog_read_from_its_start() -> None:
    first = StoreRig().start()
    ids = _ids(20)
    first.send(ids)
    first.drain()
    first.stores.stores[0].records[b"ghost"] = b'{"count": 9}'  # only the old topic's store has it
    second = first.restart()
    second.changelog.id = "topic-2"
    second.start()
    assert second.changelog.records_read == 20
    assert second.processor.state_of("ghost") is None
    assert all(second.processor.state_of(pid) == Seen(count=1) for pid in ids)


def test_a_checkpoint_older_than_the_changelog_keeps_tombstones_or_past_its_end_is_not_trusted() -> None:
    old = StoreCheckpoint(3, "topic-1", written_at_s=1_000.0)
    assert old.trusted(earliest=0, end=10, topic_id="topic-1", now_s=1_000.0 + 50, max_age_s=100) is None
    assert "tombstones" in (old.trusted(earliest=0, end=10, topic_id="topic-1", now_s=1_200.0, max_age_s=100) or "")
    assert "outside" in (old.trusted(earliest=0, end=2, topic_id="topic-1", now_s=1_000.0, max_age_s=100) or "")
    assert "outside" in (old.trusted(earliest=4, end=10, topic_id="topic-1", now_s=1_000.0, max_age_s=100) or "")
    assert "another topic" in (old.trusted(earliest=0, end=10, topic_id="x", now_s=1_000.0, max_age_s=100) or "")
    assert StoreCheckpoint.decode(old.encode()) == old


def test_a_stale_store_is_wiped_so_a_key_it_holds_that_the_changelog_deleted_is_not_restored() -> None:
    first = StoreRig(config=ProcessorConfig(store_checkpoint_age_max_s=0.0)).start()
    ids = _ids(12)
    first.send(ids)
    first.drain()
    first.stores.stores[1].records[b"deleted-meanwhile"] = b'{"count": 1}'
    second = first.restart().start()
    assert second.processor.state_of("deleted-meanwhile") is None
    assert second.changelog.records_read == 12
    assert all(second.processor.state_of(pid) == Seen(count=1) for pid in ids)


def test_a_store_that_cannot_be_opened_is_not_fatal_its_partition_is_restored_from_the_changelog() -> None:
    first = StoreRig().start()
    ids = _ids(30)
    first.send(ids)
    first.drain()
    first.stores.unusable.add(2)
    second = first.restart().start()
    assert all(second.processor.state_of(pid) == Seen(count=1) for pid in ids)
    assert 2 not in second.processor._stores and {0, 1} <= set(second.processor._stores)
    second.send(ids)
    second.drain()
    assert all(second.processor.state_of(pid) == Seen(count=2) for pid in ids)


def test_a_delivery_report_not_served_leaves_the_checkpoint_lower_and_the_restart_reads_those_again() -> None:
    rig = StoreRig().start()
    ids = _ids(9)
    rig.send(ids)
    rig.producer.poll = lambda timeout: 0  # type: ignore[method-assign]  # reports never served
    rig.drain()
    assert all(store.checkpoint() is not None for store in rig.stores.stores.values())  # from the restore
    assert all(store.checkpoint().offset == 0 for store in rig.stores.stores.values())  # type: ignore[union-attr]
    assert sum(len(store.records) for store in rig.stores.stores.values()) == 9  # the records are in
    second = rig.restart().start()
    assert second.changelog.records_read == 9
    assert all(second.processor.state_of(pid) == Seen(count=1) for pid in ids)


def test_an_aborted_transaction_writes_nothing_into_the_stores() -> None:
    rig = StoreRig().start()
    before = {p: dict(store.records) for p, store in rig.stores.stores.items()}
    rig.producer.failures.add("commit_transaction", kafka_error(abortable=True))
    rig.send(_ids(6))
    rig.processor.step()  # aborted
    assert {p: dict(store.records) for p, store in rig.stores.stores.items()} == before
    rig.drain()  # decided again and committed
    assert sum(len(store.records) for store in rig.stores.stores.values()) == 6


def test_a_revoked_partition_keeps_its_store_and_a_later_assignment_reads_only_what_others_wrote() -> None:
    rig = StoreRig().start()
    ids = _ids(24)
    rig.send(ids)
    rig.drain()
    rig.consumer.rebalance([0])
    rig.processor.step()
    assert set(rig.processor._stores) == {0}
    moved = [pid for pid in ids if zlib.crc32(pid.encode()) % 3 != 0]
    other = StoreRig(rig.broker, MemoryStores()).start()  # owns 1 and 2 meanwhile (the fake group ignores 0)
    rig.send(moved[:4])
    other.drain()
    reads_before = rig.changelog.records_read
    rig.consumer.rebalance([0, 1, 2])
    rig.drain()
    assert rig.changelog.records_read - reads_before == 4  # what the other owner wrote while 1 and 2 were away
    assert {pid: rig.processor.state_of(pid) for pid in moved} == {
        pid: Seen(count=2 if pid in moved[:4] else 1) for pid in moved}


def test_without_local_stores_every_restart_reads_the_whole_changelog_and_keeps_no_copy() -> None:
    broker = FakeBroker()
    ids = _ids(15)

    def started() -> tuple[Processor[Seen], FakeChangelog]:
        clients, consumer, _ = fake_clients(broker, CHANGELOG)
        assert isinstance(clients.changelog, FakeChangelog)
        processor = Processor(CountingLogic(), clients=clients, topics=TOPICS, serde=SERDE, instance_id="i",
                              config=ProcessorConfig(), clock=Clock())
        consumer.subscribe(list(processor._inputs), on_assign=processor._on_assign,
                           on_revoke=processor._on_revoke, on_lost=processor._on_revoke)
        restore_assigned(processor)
        return processor, clients.changelog

    first, _ = started()
    for pid in ids:
        _append(broker, pid)
    for _ in range(3):
        first.step()
    second, changelog = started()
    assert second._stores == {} and changelog.records_read == 15
    assert all(second.state_of(pid) == Seen(count=1) for pid in ids)
