"""Local state stores: the RocksDB adapter on a real disk, and a real orchestrator SIGKILLed and restarted on
a real broker, which must read only its changelog's tail and still hold every payment's state."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from payments.contracts.commands import CancelPayment
from payments.contracts.events import PaymentCancelled, PaymentInitiated
from payments.runtime.reader import end_offsets, partitions_of
from payments.runtime.rocks import RocksStore, RocksStores
from payments.runtime.store import StateStoreError, StoreCheckpoint
from payments.runtime.topics import Topics
from tests.support import COMMAND_PATH, decode_all, make_initiate, produce, read_all, service, setup_topics, wait_for

pytestmark = pytest.mark.integration


def test_a_rocks_store_keeps_records_and_checkpoint_across_a_reopen_and_applies_tombstones(tmp_path: Path) -> None:
    store = RocksStores(tmp_path / "stores").open(3)
    assert store.checkpoint() is None and list(store.items()) == []
    store.write([(b"b", b"2"), (b"a", b"1"), (b"c", b"3")], None)
    store.write([(b"c", None), (b"a", b"1'")], StoreCheckpoint(42, "topic-x", 1_000.0))
    store.close()
    again = RocksStores(tmp_path / "stores").open(3)
    assert list(again.items()) == [(b"a", b"1'"), (b"b", b"2")]
    assert again.checkpoint() == StoreCheckpoint(42, "topic-x", 1_000.0)
    again.wipe()
    assert again.checkpoint() is None and list(again.items()) == []
    again.close()


def test_a_store_held_by_another_opener_is_refused_with_a_store_error_not_a_crash(tmp_path: Path) -> None:
    held = RocksStore(tmp_path / "0")
    try:
        with pytest.raises(StateStoreError, match="local state store"):
            RocksStore(tmp_path / "0")
    finally:
        held.close()
    RocksStore(tmp_path / "0").close()  # free again once the holder closed it


def _restored_events(log: str) -> list[dict[str, object]]:
    events = []
    for line in log.splitlines():
        if '"event": "partitions_restored"' in line:
            events.append(json.loads(line[line.index("{"):]))
    return events


def test_an_orchestrator_killed_and_restarted_reads_only_its_changelog_tail_and_keeps_every_saga(
        kafka_bootstrap: str, database_url: str, topics: Topics, tmp_path: Path) -> None:
    setup_topics(kafka_bootstrap, topics)
    first = [make_initiate(amount_minor=100 + i) for i in range(300)]
    later = [make_initiate(amount_minor=1_000 + i) for i in range(50)]
    intake = [service([name], bootstrap=kafka_bootstrap, database_url=database_url, topics=topics,
                      log_dir=tmp_path).start() for name in COMMAND_PATH[:-1]]
    orchestrator = service(["orchestrator"], bootstrap=kafka_bootstrap, database_url=database_url, topics=topics,
                           log_dir=tmp_path).start().wait_ready()
    changelog = partitions_of(kafka_bootstrap, [topics.changelog("orchestrator")])

    def initiated() -> set[str]:
        return {m.payment_id for m in decode_all(read_all(kafka_bootstrap, topics.events))
                if isinstance(m, PaymentInitiated)}

    try:
        produce(kafka_bootstrap, topics.commands, first, key_of=lambda m: m.payment_id)  # type: ignore[attr-defined]
        wait_for(lambda: len(initiated()) >= 300, 90, "300 PaymentInitiated")
        orchestrator.kill()
        written = sum(end_offsets(kafka_bootstrap, changelog).values())
        assert written >= 300  # one snapshot per payment at least (plus transaction markers)
        produce(kafka_bootstrap, topics.commands, later, key_of=lambda m: m.payment_id)  # type: ignore[attr-defined]
        orchestrator = service(["orchestrator"], bootstrap=kafka_bootstrap, database_url=database_url,
                               topics=topics, log_dir=tmp_path).start().wait_ready()
        restored = _restored_events(orchestrator.run_log())[-1]
        # Its stores held what it had committed: the restart read only the tail its last moments wrote (a
        # commit whose store write the SIGKILL cut off), not the changelog from its start.
        assert int(restored["records"]) < written // 2, (restored, written)  # type: ignore[call-overload]
        assert sum(restored["from_offsets"].values()) >= 300, restored  # type: ignore[attr-defined]
        assert int(restored["keys"]) == 300, restored  # type: ignore[call-overload]
        wait_for(lambda: len(initiated()) >= 350, 90, "350 PaymentInitiated")
        # Every restored saga is known: a cancel finds it awaiting risk (no participants run here) and cancels
        # it. A saga missing from the restored state would be rejected as unknown instead.
        cancels = [CancelPayment(payment_id=c.payment_id, command_id=str(uuid.uuid4()),
                                 idempotency_key=f"cancel-{c.payment_id}", reason="test") for c in first]
        produce(kafka_bootstrap, topics.commands, cancels, key_of=lambda m: m.payment_id)  # type: ignore[attr-defined]

        def cancelled() -> set[str]:
            return {m.payment_id for m in decode_all(read_all(kafka_bootstrap, topics.events))
                    if isinstance(m, PaymentCancelled)}

        wait_for(lambda: len(cancelled()) >= 300, 90, "300 PaymentCancelled")
        assert cancelled() == {c.payment_id for c in first}
        assert initiated() == {c.payment_id for c in first + later}
    finally:
        stopped = {" ".join(process.args): (process.stop(), process) for process in (orchestrator, *intake)}
    for code, process in stopped.values():
        assert code == 0, process.log_tail()
