"""The exactly-once loop's checkpoint, driven through in-memory fakes of its Kafka ports.

Each librdkafka error class ends in its documented outcome (docs/architecture.md §2): retriable ->
the call again; abortable -> abort, state dropped, positions rewound, timers put back; fatal -> a
rebuild from committed state. Plus: a batch cut short, a rebalance mid-stream, and every per-record
failure (a bug in decide, an unencodable output, a failing timer) parks the record or the timer
without stopping the partition.
"""

from __future__ import annotations

import threading
import time
import uuid
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from confluent_kafka import KafkaError
from pydantic import BaseModel, ConfigDict

from payments.contracts.codec import SingleObjectSerde
from payments.contracts.envelope import Envelope, build_headers
from payments.contracts.errors import EncodeError
from payments.contracts.messages import AssessRisk, InitiatePayment, Message
from payments.contracts.topics import COMMANDS, RISK_COMMANDS
from payments.money import Money
from payments.runtime.clients import LoopClients
from payments.runtime.config import ProcessorConfig
from payments.runtime.deadletter import DeadLetter
from payments.runtime.errors import FatalProcessorError, TopologyError
from payments.runtime.health import start_lag_probe
from payments.runtime.logic import Decision, Incoming, JsonState, Outgoing
from payments.runtime.processor import Processor
from payments.runtime.service import EXIT_CONFIG, EXIT_OK, EXIT_REBUILDS_EXHAUSTED, run_until_stopped
from payments.runtime.topics import Topics
from tests.unit.runtime.fakes import FakeBroker, FakeConsumer, Stored, fake_clients, kafka_error, restore_assigned

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
TOPICS = Topics("t.")
SERDE = SingleObjectSerde()


class Seen(BaseModel):
    model_config = ConfigDict(frozen=True)

    count: int = 0
    due: datetime | None = None  # a timer, set by a command whose reference is "timer"


class CountingLogic(JsonState[Seen]):
    """Counts commands per payment and answers each with an AssessRisk; references steer the edge cases."""

    state_model = Seen
    service: ClassVar[str] = "counter"
    input_topics: ClassVar[tuple[str, ...]] = (COMMANDS,)
    output_topics: ClassVar[tuple[str, ...]] = (RISK_COMMANDS,)

    def __init__(self) -> None:
        self.timer_fails = False
        self.decide_sleep_s = 0.0

    def key_of(self, message: Message, envelope: Envelope) -> str:
        return message.payment_id

    def decide(self, state: Seen | None, incoming: Incoming, now: datetime) -> Decision[Seen]:
        command = incoming.message
        assert isinstance(command, InitiatePayment)
        time.sleep(self.decide_sleep_s)
        if command.reference == "boom":
            raise ValueError("a bug in decide")
        current = state or Seen()
        due = now + timedelta(seconds=30) if command.reference == "timer" else current.due
        out = [Outgoing(RISK_COMMANDS, command.payment_id, _assess(command.payment_id, command.command_id, now))]
        if command.reference == "undeclared":
            out.append(Outgoing("elsewhere", command.payment_id, out[0].message))
        return Decision(Seen(count=current.count + 1, due=due), tuple(out))

    def fire_timers(self, key: str, state: Seen, now: datetime) -> Decision[Seen]:
        if self.timer_fails:
            raise RuntimeError("a bug in fire_timers")
        fired = Outgoing(RISK_COMMANDS, key, _assess(key, "timer", now))
        return Decision(state.model_copy(update={"due": None}), (fired,))

    def next_deadline(self, state: Seen) -> datetime | None:
        return state.due


def _assess(payment_id: str, cause: str, now: datetime) -> AssessRisk:
    """What the logic emits for a payment, with an id derived from what caused it (a command id, or the timer)."""
    return AssessRisk(payment_id=payment_id, command_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{payment_id}/{cause}")),
                      issued_at=now, payer_account="acc-a", payee_account="acc-b", amount=Money.of(100, "EUR"))


def command(payment_id: str | None = None, reference: str = "plain") -> InitiatePayment:
    payment_id = payment_id or str(uuid.uuid4())
    return InitiatePayment(command_id=str(uuid.uuid4()), idempotency_key=f"k-{payment_id}", payment_id=payment_id,
                           payer_account="acc-a", payee_account="acc-b", amount=Money.of(100, "EUR"),
                           partner="simbank", reference=reference, requested_at=T0)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


class Rig:
    """A processor on a fake broker, plus the handles a test needs."""

    def __init__(self, broker: FakeBroker | None = None, config: ProcessorConfig | None = None,
                 logic: CountingLogic | None = None) -> None:
        self.broker = broker or FakeBroker()
        self.clock = Clock()
        self.logic = logic or CountingLogic()
        clients, self.consumer, self.producer = fake_clients(self.broker, TOPICS.changelog("counter"))
        self.processor = Processor(self.logic, clients=clients, topics=TOPICS, serde=SERDE, instance_id="i",
                                   config=config or ProcessorConfig(retriable_attempts_max=3), clock=self.clock)
        self.consumer.subscribe(list(self.processor._inputs), on_assign=self.processor._on_assign,
                                on_revoke=self.processor._on_revoke, on_lost=self.processor._on_revoke)
        restore_assigned(self.processor)

    def send(self, *commands: InitiatePayment) -> None:
        for item in commands:
            self.broker.append(TOPICS.commands, item.payment_id.encode(), SERDE.encode(item),
                               [*build_headers(item, source="test", traceparent=None)])

    def outputs(self) -> list[Stored]:
        return self.broker.records(TOPICS.name(RISK_COMMANDS))

    def dead_letters(self) -> list[DeadLetter]:
        return [DeadLetter.from_headers([(n, v) for n, v in r.headers or [] if isinstance(v, bytes)])
                for r in self.broker.records(TOPICS.dlq)]

    def drain(self, steps: int = 5) -> None:
        for _ in range(steps):
            self.processor.step()


# -- the happy checkpoint --------------------------------------------------------------------------


def test_a_checkpoint_commits_outputs_snapshots_and_next_offsets_together() -> None:
    rig = Rig()
    same = str(uuid.uuid4())
    rig.send(command(same), command(same), command())
    assert rig.processor.step() == 3
    assert len(rig.outputs()) == 3
    assert rig.processor.state_of(same) == Seen(count=2)
    snapshots = rig.broker.records(TOPICS.changelog("counter"))
    assert {s.key for s in snapshots} == {r.key for r in rig.broker.records(TOPICS.commands)}  # one per changed key
    partition = next(p for (t, p), log in rig.broker.logs.items() if t == TOPICS.commands and len(log) >= 2)
    assert rig.broker.group_offsets[(TOPICS.commands, partition)] == len(rig.broker.logs[(TOPICS.commands,
                                                                                          partition)])
    assert rig.producer.commits == 1


# -- retriable, abortable, fatal -------------------------------------------------------------------


def test_a_retriable_error_is_retried_and_the_checkpoint_commits_once() -> None:
    rig = Rig()
    rig.producer.failures.add("commit_transaction", kafka_error(retriable=True), times=2)
    rig.send(command())
    assert rig.processor.step() == 1
    assert rig.producer.commits == 1 and len(rig.outputs()) == 1


def test_a_retriable_error_past_its_bound_is_fatal() -> None:
    rig = Rig()
    rig.producer.failures.add("commit_transaction", kafka_error(retriable=True), times=3)
    rig.send(command())
    with pytest.raises(FatalProcessorError):
        rig.processor.step()


def test_an_abortable_error_drops_the_batch_state_rewinds_and_the_batch_is_decided_again_once() -> None:
    rig = Rig()
    first = command()
    rig.send(first)
    rig.processor.step()
    second = command(first.payment_id)
    rig.send(second, command())
    rig.producer.failures.add("send_offsets_to_transaction", kafka_error(abortable=True))
    assert rig.processor.step() == 0  # aborted
    assert rig.producer.aborts == 1
    assert rig.processor.state_of(first.payment_id) == Seen(count=1)  # the aborted change never became state
    assert len(rig.outputs()) == 1
    rig.drain()
    assert rig.processor.state_of(first.payment_id) == Seen(count=2)
    assert len(rig.outputs()) == 3  # each command answered exactly once


def test_an_abort_puts_the_batch_timers_back_and_they_fire_after_it() -> None:
    rig = Rig()
    with_timer = command(reference="timer")
    rig.send(with_timer)
    rig.processor.step()
    rig.clock.now = T0 + timedelta(minutes=1)  # past the 30 s timer
    rig.producer.failures.add("commit_transaction", kafka_error(abortable=True))
    assert rig.processor.step() == 0
    assert rig.producer.aborts == 1 and len(rig.outputs()) == 1  # the timer's output was aborted
    assert rig.processor.state.timers_pending == 1  # re-armed, not lost until the next rebalance
    rig.processor.step()
    assert len(rig.outputs()) == 2
    assert rig.processor.state_of(with_timer.payment_id) == Seen(count=1, due=None)


def test_a_fatal_error_ends_the_processor_for_a_rebuild_from_committed_state() -> None:
    rig = Rig()
    rig.send(command(), command())
    rig.processor.step()
    rig.send(command())
    rig.producer.failures.add("commit_transaction", kafka_error(fatal=True, code=-144))  # _FENCED
    with pytest.raises(FatalProcessorError):
        rig.processor.step()
    assert len(rig.outputs()) == 2

    rebuilt = Rig(rig.broker)  # a new consumer and producer; state from the changelog
    rebuilt.drain()
    assert rebuilt.logic is not rig.logic and len(rebuilt.outputs()) == 3
    assert sum(s.count for s in map(rebuilt.processor.state_of, _payment_ids(rig)) if s is not None) == 3


def test_a_fenced_producer_whose_close_raises_again_still_ends_run_as_fatal_not_as_a_kafka_error() -> None:
    broker = FakeBroker()
    clients, consumer, producer = fake_clients(broker, TOPICS.changelog("counter"))
    processor = Processor(CountingLogic(), clients=clients, topics=TOPICS, serde=SERDE, instance_id="i")
    item = command()
    broker.append(TOPICS.commands, item.payment_id.encode(), SERDE.encode(item),
                  [*build_headers(item, source="test", traceparent=None)])
    fenced = kafka_error(fatal=True, code=-144)
    producer.failures.add("commit_transaction", fenced)
    producer.failures.add("flush", fenced)
    with pytest.raises(FatalProcessorError):
        processor.run(threading.Event())
    assert consumer.closed


def test_a_failed_abort_is_fatal() -> None:
    rig = Rig()
    rig.send(command())
    rig.producer.failures.add("commit_transaction", kafka_error(abortable=True))
    rig.producer.failures.add("abort_transaction", kafka_error())
    with pytest.raises(FatalProcessorError, match="abort_transaction failed"):
        rig.processor.step()


def test_a_failed_init_transactions_is_fatal_not_a_raw_kafka_exception() -> None:
    broker = FakeBroker()
    clients, _consumer, producer = fake_clients(broker, TOPICS.changelog("counter"))
    producer.failures.add("init_transactions", kafka_error())
    with pytest.raises(FatalProcessorError, match="init_transactions"):
        Processor(CountingLogic(), clients=clients, topics=TOPICS, serde=SERDE, instance_id="i")


def test_a_producer_queue_that_stays_full_aborts_and_the_batch_is_retried() -> None:
    rig = Rig(config=ProcessorConfig(retriable_attempts_max=3))
    rig.send(command())
    rig.producer.full_for = 3
    assert rig.processor.step() == 0 and rig.producer.aborts == 1
    rig.drain()
    assert len(rig.outputs()) == 1


def test_a_kafka_error_outside_a_checkpoint_ends_run_as_fatal() -> None:
    broker = FakeBroker()
    clients, consumer, _producer = fake_clients(broker, TOPICS.changelog("counter"))
    processor = Processor(CountingLogic(), clients=clients, topics=TOPICS, serde=SERDE, instance_id="i")
    consumer.failures.add("consume", kafka_error())
    with pytest.raises(FatalProcessorError, match="outside a checkpoint"):
        processor.run(threading.Event())
    assert consumer.closed


def test_after_every_broker_connection_was_lost_the_clients_are_rebuilt_before_the_next_transaction() -> None:
    rig = Rig()
    rig.send(command())
    rig.processor.step()
    rig.processor._connection.on_error(KafkaError(KafkaError._TRANSPORT))  # one connection: nothing special
    rig.send(command())
    assert rig.processor.step() == 1
    rig.processor._connection.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    rig.send(command())
    with pytest.raises(FatalProcessorError, match="every broker connection was lost"):
        rig.processor.step()
    assert rig.producer.open is False and rig.producer.commits == 2  # nothing of that batch began


# -- a batch cut short, a rebalance mid-stream -----------------------------------------------------


def test_a_batch_cut_short_by_its_time_budget_seeks_back_to_the_first_record_not_taken() -> None:
    logic = CountingLogic()
    rig = Rig(config=ProcessorConfig(batch_time_budget_ms=1), logic=logic)
    payment = str(uuid.uuid4())
    rig.send(*(command(payment) for _ in range(5)))
    logic.decide_sleep_s = 0.005
    assert rig.processor.step() == 1  # the first record always goes; the budget is spent after it
    partition = next(p for (t, p) in rig.consumer.positions if rig.broker.logs.get((t, p)))
    assert rig.consumer.positions[(TOPICS.commands, partition)] == 1  # sought back to offset 1
    assert rig.broker.group_offsets[(TOPICS.commands, partition)] == 1
    rig.drain(10)
    assert rig.processor.state_of(payment) == Seen(count=5)
    assert len(rig.outputs()) == 5


def test_a_rebalance_mid_stream_drops_revoked_state_and_restores_it_from_the_changelog() -> None:
    rig = Rig()
    commands = [command(str(uuid.uuid5(uuid.NAMESPACE_DNS, f"payment-{n}"))) for n in range(12)]
    assert {zlib.crc32(c.payment_id.encode()) % 3 for c in commands} == {0, 1, 2}  # every partition has some
    rig.send(*commands)
    rig.processor.step()
    owned = {c.payment_id: rig.processor.state_of(c.payment_id) for c in commands}
    rig.consumer.rebalance([0])  # partitions 1 and 2 go to another member
    rig.processor.step()
    kept = {pid for pid in owned if rig.processor.state_of(pid) is not None}
    assert kept and kept != set(owned)
    assert rig.processor.state.partitions == {0}
    rig.send(*(command(pid) for pid in owned))  # arrive while this member owns partition 0 only
    rig.processor.step()
    rig.consumer.rebalance([0, 1, 2])  # and back: 1 and 2 are restored from the changelog
    rig.drain()
    assert {pid: rig.processor.state_of(pid) for pid in owned} == {pid: Seen(count=2) for pid in owned}
    assert len(rig.outputs()) == 24


def _restarted_with_history(payments: int, config: ProcessorConfig) -> tuple[Rig, list[str]]:
    """A rig whose changelog holds `payments` states from an earlier owner; the new processor restores them."""
    first = Rig()
    ids = [str(uuid.uuid5(uuid.NAMESPACE_DNS, f"history-{n}")) for n in range(payments)]
    first.send(*(command(pid) for pid in ids))
    first.drain(payments // 100 + 3)
    assert all(first.processor.state_of(pid) == Seen(count=1) for pid in ids)
    rig = Rig.__new__(Rig)
    rig.broker, rig.clock, rig.logic = first.broker, Clock(), CountingLogic()
    clients, rig.consumer, rig.producer = fake_clients(rig.broker, TOPICS.changelog("counter"))
    rig.changelog = clients.changelog  # type: ignore[attr-defined]
    rig.processor = Processor(rig.logic, clients=clients, topics=TOPICS, serde=SERDE, instance_id="i2",
                              config=config, clock=rig.clock)
    rig.consumer.subscribe(list(rig.processor._inputs), on_assign=rig.processor._on_assign,
                           on_revoke=rig.processor._on_revoke, on_lost=rig.processor._on_revoke)
    return rig, ids


def test_a_long_restore_runs_in_slices_of_the_main_loop_with_the_partitions_paused_until_it_is_done() -> None:
    rig, ids = _restarted_with_history(60, ProcessorConfig(restore_slice_ms=5))
    rig.changelog.record_delay_s = 0.001  # 60 snapshots take ~60 ms: a dozen slices
    rig.send(*(command(pid) for pid in ids))  # new commands for every restored payment, waiting
    steps = 0
    while True:
        assert rig.processor.step() == 0  # nothing is decided before the state is there
        steps += 1
        if rig.processor._restore is None:
            break
        assert rig.processor.health.restoring and not rig.processor.state.partitions
        assert rig.consumer.paused  # the assigned partitions wait
        assert steps < 200, "the restore never finished"
    assert steps >= 5, steps  # it really was spread over the loop's steps
    assert not rig.consumer.paused and not rig.processor.health.restoring
    rig.drain()
    assert {pid: rig.processor.state_of(pid) for pid in ids} == {pid: Seen(count=2) for pid in ids}


def test_the_restore_waits_for_a_stable_changelog_and_retries_committed_offsets_without_dying() -> None:
    rig, ids = _restarted_with_history(10, ProcessorConfig(stable_ask_interval_ms=0))
    rig.changelog.unstable_checks = 3  # a previous owner's transaction is still open for three steps
    rig.consumer.failures.add("committed", kafka_error(code=KafkaError._TIMED_OUT), times=2)
    for _ in range(5):  # 1 assigns, 2 and 3 time out on the committed offsets, then 3 unstable checks
        rig.processor.step()
        assert rig.processor._restore is not None and rig.changelog.reads == 0
    rig.drain(3)
    assert rig.processor._restore is None and rig.changelog.reads == 1
    assert all(rig.processor.state_of(pid) == Seen(count=1) for pid in ids)


def test_a_restore_waiting_for_a_stable_changelog_asks_the_brokers_at_most_every_interval() -> None:
    rig, _ = _restarted_with_history(10, ProcessorConfig(stable_ask_interval_ms=200))
    rig.changelog.unstable_checks = 1_000  # a previous owner's transaction stays open
    started = time.monotonic()
    for _ in range(200):  # the loop steps far more often than it needs to ask
        rig.processor.step()
        time.sleep(0.002)
    elapsed = time.monotonic() - started
    assert rig.processor._restore is not None and rig.processor._restore.phase == "stable"
    assert 1 <= rig.changelog.stable_checks <= elapsed / 0.2 + 1, (rig.changelog.stable_checks, elapsed)


def test_a_restore_past_its_timeout_is_fatal() -> None:
    rig, _ = _restarted_with_history(10, ProcessorConfig(restore_timeout_s=0.05))
    rig.changelog.unstable_checks = 1_000_000
    with pytest.raises(FatalProcessorError, match="restoring partitions"):
        for _ in range(100):
            rig.processor.step()
            time.sleep(0.005)


def test_partitions_revoked_mid_restore_are_dropped_and_the_rest_restored_from_the_start() -> None:
    rig, ids = _restarted_with_history(30, ProcessorConfig(restore_slice_ms=2))
    rig.changelog.record_delay_s = 0.001
    rig.processor.step()  # assigned 0, 1, 2: restoring
    rig.processor.step()
    assert rig.processor._restore is not None and rig.processor._restore.records > 0
    rig.consumer.rebalance([0])
    for _ in range(100):
        rig.processor.step()
        if rig.processor._restore is None:
            break
    assert rig.processor.state.partitions == {0}
    kept = {pid for pid in ids if rig.processor.state_of(pid) is not None}
    assert kept == {pid for pid in ids if zlib.crc32(pid.encode()) % 3 == 0} != set()
    assert rig.changelog.reads == 2  # started over with partition 0 alone


# -- per-record failures never stop a partition -----------------------------------------------------


def test_an_exception_in_decide_dead_letters_the_record_and_the_partition_moves_on() -> None:
    rig = Rig()
    payment = str(uuid.uuid4())
    bad, good = command(payment, reference="boom"), command(payment)
    rig.send(bad, good)
    assert rig.processor.step() == 2
    (letter,) = rig.dead_letters()
    assert (letter.error_class, letter.reason_code) == ("ProcessingError", "processing_error")
    assert "a bug in decide" in letter.detail
    assert rig.processor.state_of(payment) == Seen(count=1)  # the good one only
    assert len(rig.outputs()) == 1


def test_an_output_to_an_undeclared_topic_dead_letters_the_record_and_emits_none_of_its_outputs() -> None:
    rig = Rig()
    rig.send(command(reference="undeclared"))
    rig.processor.step()
    (letter,) = rig.dead_letters()
    assert letter.error_class == "ProcessingError" and "output_topics" in letter.detail
    assert rig.outputs() == []  # the valid first output of the same decision was not produced either


class RefusingSerde(SingleObjectSerde):
    """Encodes like the real one, except AssessRisk for the payments listed, which fail as Avro would."""

    def __init__(self, refused: set[str]) -> None:
        super().__init__()
        self.refused = refused

    def encode(self, msg: Message) -> bytes:
        if isinstance(msg, AssessRisk) and msg.payment_id in self.refused:
            raise EncodeError("avro_write_failed", "value out of range for the schema")
        return super().encode(msg)


def test_an_unencodable_output_dead_letters_the_record_and_the_partition_moves_on() -> None:
    bad, good = command(), command()
    rig = Rig()
    rig.processor.serde = RefusingSerde({bad.payment_id})
    rig.send(bad, good)
    assert rig.processor.step() == 2
    (letter,) = rig.dead_letters()
    assert letter.error_class == "ProcessingError" and "EncodeError" in letter.detail
    assert rig.processor.state_of(bad.payment_id) is None and rig.processor.state_of(good.payment_id) == Seen(count=1)
    assert len(rig.outputs()) == 1


def test_a_failing_timer_is_retried_later_not_in_a_hot_loop() -> None:
    rig = Rig()
    rig.send(command(reference="timer"))
    rig.processor.step()
    rig.logic.timer_fails = True
    rig.clock.now = T0 + timedelta(minutes=1)
    rig.processor.step()
    rig.processor.step()
    assert rig.producer.commits == 2  # the first batch, then one failed firing; no third attempt yet
    rig.logic.timer_fails = False
    rig.clock.now = T0 + timedelta(minutes=2, seconds=1)  # past timer_retry_ms (60 s)
    rig.processor.step()
    assert len(rig.outputs()) == 2


# -- no record can be fatal -----------------------------------------------------------------------


def test_an_oversize_input_is_dead_lettered_as_a_bounded_copy_with_its_size_and_hash() -> None:
    rig = Rig()
    huge = command()
    rig.broker.append(TOPICS.commands, huge.payment_id.encode(), b"\x00" * 2_000_000,
                      [*build_headers(huge, source="test", traceparent=None)])
    rig.send(follower := command())
    rig.drain()
    (stored,) = rig.broker.records(TOPICS.dlq)
    found = {name: value for name, value in stored.headers or []}
    assert (found["dlq_reason_code"], found["dlq_original_value_bytes"]) == (b"oversize_record", b"2000000")
    assert found["dlq_value_truncated"] == b"true" and len(stored.value or b"") == 65_536
    assert rig.processor.state_of(follower.payment_id) == Seen(count=1)


def test_an_output_refused_at_produce_poisons_its_input_which_is_dead_lettered_on_the_next_pass() -> None:
    rig = Rig()
    bad, good = command(), command()
    rig.producer.refuse_on_produce = \
        lambda topic, r: topic == TOPICS.name(RISK_COMMANDS) and r.key == bad.payment_id.encode()
    rig.send(bad, good)
    assert rig.processor.step() == 0 and rig.producer.aborts == 1  # the batch is aborted and read again
    rig.drain()
    (letter,) = rig.dead_letters()
    assert (letter.error_class, letter.reason_code) == ("UnproducibleRecord", "unproducible_record")
    assert rig.processor.state_of(bad.payment_id) is None and rig.processor.state_of(good.payment_id) == Seen(count=1)
    assert [r.key for r in rig.outputs()] == [good.payment_id.encode()]


def test_a_refusal_at_commit_isolates_the_batch_and_dead_letters_only_the_refused_record() -> None:
    rig = Rig()
    payment = str(uuid.uuid4())  # all on one partition, in order
    batch = [command(payment) for _ in range(5)]
    refused_id = _assess(payment, batch[2].command_id, T0).command_id  # what the third command makes
    rig.producer.refuse_at_commit = lambda topic, r: topic == TOPICS.name(RISK_COMMANDS) and \
        SERDE.decode(r.value or b"").message_id == refused_id
    rig.send(*batch)
    rig.drain(12)
    (letter,) = rig.dead_letters()
    assert letter.reason_code == "unproducible_record" and letter.source_offset == 2
    assert rig.processor.state_of(payment) == Seen(count=4)
    assert len(rig.outputs()) == 4
    rig.send(command(payment), command(payment))  # after the refused batch: batches are whole again
    commits = rig.producer.commits
    rig.processor.step()
    assert rig.producer.commits == commits + 1 and rig.processor.state_of(payment) == Seen(count=6)


def test_a_dead_letter_the_dlq_refuses_is_sent_minimal_and_one_refused_even_so_is_fatal() -> None:
    rig = Rig()
    rig.producer.refuse_on_produce = lambda topic, r: topic == TOPICS.dlq and len(r.value or b"") > 0
    rig.broker.append(TOPICS.commands, b"k", b"not avro")  # dead-lettered: undecodable
    rig.drain()
    (stored,) = rig.broker.records(TOPICS.dlq)
    assert stored.value == b"" and dict(stored.headers or [])["dlq_original_value_bytes"] == b"8"
    rig.producer.refuse_on_produce = lambda topic, _r: topic == TOPICS.dlq
    rig.broker.append(TOPICS.commands, b"k", b"not avro either")
    with pytest.raises(FatalProcessorError, match="minimal dead letter"):
        rig.drain()


# -- the process around the loop -----------------------------------------------------------------


class Scripted:
    def __init__(self, errors: list[Exception | None]) -> None:
        self.errors = errors
        self.builds = 0

    def build(self) -> Scripted:
        self.builds += 1
        return self

    def run(self, stop: threading.Event) -> None:
        error = self.errors.pop(0)
        if error is not None:
            raise error


def test_fatal_errors_rebuild_until_a_run_ends_cleanly() -> None:
    script = Scripted([FatalProcessorError("fenced"), FatalProcessorError("fenced"), None])
    assert run_until_stopped(script.build, threading.Event(), "s", pause_s=0) == EXIT_OK
    assert script.builds == 3


def test_fatal_errors_past_the_rebuild_bound_exit_with_a_distinct_code() -> None:
    script = Scripted([FatalProcessorError("fenced")] * 3)
    assert run_until_stopped(script.build, threading.Event(), "s", rebuilds_max=3, pause_s=0) == EXIT_REBUILDS_EXHAUSTED


def test_a_topology_error_exits_at_once_with_the_configuration_code() -> None:
    script = Scripted([TopologyError("wrong partition count")])
    assert run_until_stopped(script.build, threading.Event(), "s", pause_s=0) == EXIT_CONFIG
    assert script.builds == 1


def _payment_ids(rig: Rig) -> list[str]:
    return [r.key.decode() for r in rig.broker.records(TOPICS.commands) if r.key is not None]


EndOffsets = Callable[[list[tuple[str, int]]], dict[tuple[str, int], int]]


def _probed(*, markers: bool) -> tuple[FakeBroker, FakeConsumer, Processor[Any], EndOffsets]:
    """A restored processor with a short progress bound, and the ends of its input partitions: with
    `markers`, each non-empty partition ends one past its last record (a transaction's commit marker)."""
    broker = FakeBroker()
    clients, consumer, _ = fake_clients(broker, TOPICS.changelog("counter"))
    consumer.markers = markers

    def ends(partitions: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        return {tp: len(broker.logs.get(tp, [])) + (1 if markers and broker.logs.get(tp) else 0) for tp in partitions}

    clients = LoopClients(consumer, clients.producer, clients.changelog, end_offsets=ends)
    processor = Processor(CountingLogic(), clients=clients, topics=TOPICS, serde=SERDE, instance_id="i",
                          config=ProcessorConfig(lag_check_s=0.01, progress_bound_s=0.3), clock=Clock())
    consumer.subscribe(list(processor._inputs), on_assign=processor._on_assign, on_revoke=processor._on_revoke,
                       on_lost=processor._on_revoke)
    restore_assigned(processor)
    return broker, consumer, processor, ends


def test_a_loop_whose_fetcher_stalls_with_lag_reports_lost_health_after_the_progress_bound() -> None:
    broker, consumer, processor, ends = _probed(markers=False)
    probe_stop = start_lag_probe(processor.health, 0.01, processor._owned_positions, ends)
    try:
        rig = Rig.__new__(Rig)
        rig.broker = broker
        rig.send(command())
        for _ in range(2):
            processor.step()
        assert processor.health.alive()[0]
        consumer.stalled = True  # a fetcher stuck after a broker fault: the records wait, nothing arrives
        rig.send(command(), command())
        deadline = time.monotonic() + 5
        while processor.health.alive()[0]:
            processor.step()
            assert time.monotonic() < deadline, "a stalled loop with lag stayed healthy"
        assert "lag 2" in processor.health.alive()[1]
        consumer.stalled = False
        for _ in range(2):
            processor.step()
        assert processor.health.alive()[0]
    finally:
        probe_stop.set()


def test_an_idle_loop_whose_partitions_end_with_a_commit_marker_stays_healthy_past_the_progress_bound() -> None:
    """Input written in transactions ends with a commit marker: the end (last stable offset) is one past the
    committed offset of a partition read to its end. That is not work waiting: an idle service stays alive."""
    broker, consumer, processor, ends = _probed(markers=True)
    probe_stop = start_lag_probe(processor.health, 0.01, processor._owned_positions, ends)
    try:
        rig = Rig.__new__(Rig)
        rig.broker = broker
        rig.send(command(), command())
        for _ in range(2):
            processor.step()
        assert any(ends([tp])[tp] > offset for tp, offset in processor._committed.items()), "no marker shown"
        deadline = time.monotonic() + 1.0  # past the 0.3 s bound, idle, with the probe asking all along
        while time.monotonic() < deadline:
            processor.step()
            assert processor.health.alive()[0], processor.health.alive()[1]
        consumer.markers = False  # the same lag of one without the position past it: work waiting
        deadline = time.monotonic() + 5
        while processor.health.alive()[0]:
            processor.step()
            assert time.monotonic() < deadline, "a loop with a record left unread stayed healthy"
    finally:
        probe_stop.set()
