"""Calls out of the exactly-once loop (payments.runtime.calls): started only after the transaction that
recorded them commits, answered in a later one, bounded in number, recovered after a rebalance; and
the asyncio runner that makes them."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
import zlib
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict

from payments.contracts.codec import SingleObjectSerde
from payments.contracts.envelope import Envelope, build_headers
from payments.contracts.messages import AssessRisk, InitiatePayment, Message
from payments.contracts.topics import COMMANDS, RISK_COMMANDS
from payments.money import Money
from payments.runtime.calls import CallRunner, CallRunnerError
from payments.runtime.config import ProcessorConfig
from payments.runtime.logic import Call, Completion, Decision, Incoming, JsonState, NoTimers, Outgoing
from payments.runtime.processor import Processor
from payments.runtime.topics import Topics
from tests.unit.runtime.fakes import FakeBroker, Stored, fake_clients, kafka_error, restore_assigned

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
TOPICS = Topics("t.")
SERDE = SingleObjectSerde()


class Asked(BaseModel):
    model_config = ConfigDict(frozen=True)

    pending: tuple[str, ...] = ()  # command ids whose call is out
    answered: int = 0


class AskingLogic(JsonState[Asked], NoTimers[Asked]):
    """Each command becomes a call; its result becomes an AssessRisk naming the result."""

    state_model = Asked
    service: ClassVar[str] = "asker"
    input_topics: ClassVar[tuple[str, ...]] = (COMMANDS,)
    output_topics: ClassVar[tuple[str, ...]] = (RISK_COMMANDS,)

    def __init__(self) -> None:
        self.complete_fails = False

    def key_of(self, message: Message, envelope: Envelope) -> str:
        return message.payment_id

    def decide(self, state: Asked | None, incoming: Incoming, now: datetime) -> Decision[Asked]:
        command = incoming.message
        assert isinstance(command, InitiatePayment)
        current = state or Asked()
        if command.command_id in current.pending:
            return Decision(current)
        return Decision(current.model_copy(update={"pending": (*current.pending, command.command_id)}))

    def calls(self, state: Asked) -> tuple[Call, ...]:
        return tuple(Call(cid, {"ask": cid}) for cid in state.pending)

    def complete(self, state: Asked, completion: Completion, now: datetime) -> Decision[Asked]:
        if self.complete_fails:
            raise RuntimeError("a bug in complete")
        reply_id = str(uuid.uuid5(uuid.NAMESPACE_URL, completion.call_id))
        reply = AssessRisk(payment_id=completion.key, command_id=reply_id, issued_at=now, payer_account="acc-a",
                           payee_account=str(completion.result), amount=Money.of(1, "EUR"))
        after = Asked(pending=tuple(c for c in state.pending if c != completion.call_id), answered=state.answered + 1)
        return Decision(after, (Outgoing(RISK_COMMANDS, completion.key, reply),))


class FakeCalls:
    """The `Calls` port in memory: a test finishes calls by hand."""

    def __init__(self, limit: int = 100) -> None:
        self.limit = limit
        self.started: list[tuple[int, str, str, bool]] = []
        self.known: set[tuple[int, str, str]] = set()
        self.finished: set[tuple[int, str, str]] = set()
        self.done: list[Completion] = []
        self.revoked: list[int] = []
        self.waited = 0
        self.closed = False

    def start(self, partition: int, key: str, call: Call, *, recovered: bool) -> None:
        ident = (partition, key, call.call_id)
        if ident not in self.known:
            self.known.add(ident)
            self.started.append((*ident, recovered))

    def finish(self, call_id: str, result: Any = "acc-result") -> None:
        (ident,) = [i for i in self.known if i[2] == call_id]
        self.finished.add(ident)
        self.done.append(Completion(*ident, result))

    def take(self) -> list[Completion]:
        done, self.done = self.done, []
        return done

    def settled(self, completions: Any) -> None:
        for completion in completions:
            self.known.discard(completion.ident)
            self.finished.discard(completion.ident)

    def revoke(self, partitions: Any) -> None:
        numbers = set(partitions)
        self.revoked.extend(numbers)
        self.known = {i for i in self.known if i[0] not in numbers}
        self.done = [c for c in self.done if c.partition not in numbers]

    def room(self) -> int:
        return self.limit - len(self.known - self.finished)

    def busy(self) -> bool:
        return bool(self.known)

    def wait(self, timeout_s: float) -> bool:
        self.waited += 1
        return bool(self.done)

    def close(self) -> None:
        self.closed = True


class Rig:
    def __init__(self, broker: FakeBroker | None = None, limit: int = 100, full_s: float = 5.0) -> None:
        self.broker = broker or FakeBroker()
        self.logic = AskingLogic()
        self.calls = FakeCalls(limit)
        clients, self.consumer, self.producer = fake_clients(self.broker, TOPICS.changelog("asker"))
        self.processor = Processor(self.logic, clients=clients, topics=TOPICS, serde=SERDE, instance_id="i",
                                   config=ProcessorConfig(retriable_attempts_max=3, calls_full_s=full_s),
                                   clock=lambda: T0,
                                   calls=self.calls)
        self.consumer.subscribe(list(self.processor._inputs), on_assign=self.processor._on_assign,
                                on_revoke=self.processor._on_revoke, on_lost=self.processor._on_revoke)
        restore_assigned(self.processor)

    def send(self, count: int = 1) -> list[InitiatePayment]:
        sent = []
        for _ in range(count):
            pid = str(uuid.uuid4())
            item = InitiatePayment(command_id=str(uuid.uuid4()), idempotency_key=f"k-{pid}", payment_id=pid,
                                   payer_account="acc-a", payee_account="acc-b", amount=Money.of(100, "EUR"),
                                   partner="simbank", reference=None, requested_at=T0)
            self.broker.append(TOPICS.commands, pid.encode(), SERDE.encode(item),
                               [*build_headers(item, source="test", traceparent=None)])
            sent.append(item)
        return sent

    def replies(self) -> list[Stored]:
        return self.broker.records(TOPICS.name(RISK_COMMANDS))


def test_a_call_starts_only_after_the_transaction_that_recorded_it_commits() -> None:
    rig = Rig()
    (item,) = rig.send()
    rig.producer.failures.add("commit_transaction", kafka_error(abortable=True))
    assert rig.processor.step() == 0
    assert rig.calls.started == []  # the decision was not kept: no call for it
    assert rig.processor.step() == 1
    assert [(key, cid, recovered) for _, key, cid, recovered in rig.calls.started] == [
        (item.payment_id, item.command_id, False)]
    assert rig.replies() == []  # nothing is answered before the call's result is in


def test_a_result_is_applied_in_a_later_transaction_once_even_if_that_transaction_aborts() -> None:
    rig = Rig()
    (item,) = rig.send()
    rig.processor.step()
    rig.calls.finish(item.command_id, "acc-answer")
    rig.producer.failures.add("commit_transaction", kafka_error(abortable=True))
    rig.processor.step()
    assert rig.replies() == [] and rig.calls.busy()  # aborted: the result is kept, not settled
    rig.processor.step()
    (reply,) = rig.replies()
    assert isinstance(message := SERDE.decode(reply.value or b""), AssessRisk)
    assert message.payee_account == "acc-answer"
    assert rig.processor.state_of(item.payment_id) == Asked(pending=(), answered=1)
    assert not rig.calls.busy()  # settled after the commit
    rig.processor.step()
    assert len(rig.replies()) == 1


def test_a_second_result_for_a_call_already_answered_is_discarded() -> None:
    rig = Rig()
    (item,) = rig.send()
    rig.processor.step()
    rig.calls.finish(item.command_id)
    stale = Completion(*next(iter(rig.calls.known)), "acc-late")
    rig.processor.step()
    rig.calls.done.append(stale)
    rig.processor.step()
    assert len(rig.replies()) == 1
    assert rig.processor.state_of(item.payment_id) == Asked(pending=(), answered=1)


def test_a_loop_briefly_without_room_waits_for_results_instead_of_reading() -> None:
    rig = Rig(limit=4)
    rig.send(10)
    rig.processor.step()
    assert len(rig.calls.started) == 4 and rig.calls.room() == 0
    positions = dict(rig.consumer.positions)
    rig.processor.step()
    assert rig.calls.waited == 1 and rig.consumer.positions == positions and rig.consumer.paused == set()
    rig.calls.finish(rig.calls.started[0][2])
    rig.processor.step()  # the result makes room for one more record, taken in the checkpoint that commits it
    assert len(rig.replies()) == 1 and len(rig.calls.started) == 5


def test_the_loop_takes_no_more_records_than_there_is_room_for_calls_and_pauses_when_full() -> None:
    rig = Rig(limit=4, full_s=0)
    sent = rig.send(10)
    rig.processor.step()
    assert len(rig.calls.started) == 4 and rig.calls.room() == 0
    rig.processor.step()
    assert rig.consumer.paused == {(t, p) for (t, p) in rig.consumer.positions}  # every assigned partition
    assert len(rig.calls.started) == 4
    for _, _, cid, _ in list(rig.calls.started):
        rig.calls.finish(cid)
    # A result frees its call's room: the checkpoint that commits the results takes as many new records,
    # whose calls start after that commit. Never more than 4 running.
    rig.processor.step()
    assert len(rig.replies()) == 4 and len(rig.calls.started) == 8 and rig.calls.room() == 0
    for _ in range(6):
        for ident in list(rig.calls.known):
            rig.calls.finish(ident[2])
        rig.processor.step()
        assert len(rig.calls.known - rig.calls.finished) <= 4
    assert rig.consumer.paused == set()
    assert {r.key for r in rig.replies()} == {s.payment_id.encode() for s in sent}
    assert len(rig.replies()) == 10


def test_after_a_rebuild_the_calls_recorded_but_unanswered_are_recovered() -> None:
    rig = Rig()
    sent = rig.send(3)
    rig.processor.step()
    rig.calls.finish(sent[0].command_id)
    rig.processor.step()
    rebuilt = Rig(rig.broker)  # the old owner died: its calls may or may not have gone out
    rebuilt.processor.step()
    recovered = {(cid, flag) for _, _, cid, flag in rebuilt.calls.started}
    assert recovered == {(sent[1].command_id, True), (sent[2].command_id, True)}
    for _, _, cid, _ in rebuilt.calls.started:
        rebuilt.calls.finish(cid)
    rebuilt.processor.step()
    assert len(rig.broker.records(TOPICS.name(RISK_COMMANDS))) == 3


def test_a_revoked_partition_drops_its_calls_and_results() -> None:
    rig = Rig()
    sent = rig.send(6)
    rig.processor.step()
    moved = {p for p, _, _, _ in rig.calls.started}
    keep = min(moved)
    for _, _, cid, _ in rig.calls.started:
        rig.calls.finish(cid)
    rig.consumer.rebalance([keep])
    rig.processor.step()
    assert set(rig.calls.revoked) == set(range(rig.broker.partitions)) - {keep}
    kept = {s.payment_id.encode() for s in sent if zlib.crc32(s.payment_id.encode()) % rig.broker.partitions == keep}
    assert {r.key for r in rig.replies()} == kept  # only the partition still owned was answered


def test_a_failing_complete_is_retried_later_and_not_lost() -> None:
    rig = Rig()
    (item,) = rig.send()
    rig.processor.step()
    rig.calls.finish(item.command_id)
    rig.logic.complete_fails = True
    rig.processor.step()
    assert rig.replies() == [] and rig.calls.busy()
    rig.logic.complete_fails = False
    rig.processor._completion_retry.clear()  # the retry time (timer_retry_ms) has passed
    rig.processor.step()
    assert len(rig.replies()) == 1


def test_closing_the_processor_closes_its_call_runner() -> None:
    rig = Rig()
    rig.processor.close()
    assert rig.calls.closed


# -- the asyncio runner ------------------------------------------------------------------------------

class SlowPerformer:
    def __init__(self, delay_s: float = 0.05, fail_first: int = 0) -> None:
        self.delay_s = delay_s
        self.fail_first = fail_first
        self.running = 0
        self.peak = 0
        self.seen: list[tuple[str, bool]] = []
        self.opened = self.closed = False

    async def open(self) -> None:
        self.opened = True

    async def perform(self, call: Call, recovered: bool) -> Any:
        self.seen.append((call.call_id, recovered))
        if self.fail_first:
            self.fail_first -= 1
            raise RuntimeError("a bug")
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.running -= 1
        return f"result-{call.call_id}"

    async def close(self) -> None:
        self.closed = True


def wait_until(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_the_runner_makes_calls_concurrently_and_counts_them_until_settled() -> None:
    performer = SlowPerformer(delay_s=0.2)
    runner = CallRunner(performer, limit=50, name="t")
    try:
        assert performer.opened
        for i in range(40):
            runner.start(i % 3, f"k{i}", Call(f"c{i}", None), recovered=False)
        runner.start(0, "k0", Call("c0", None), recovered=False)  # already running: ignored
        assert runner.room() == 10 and runner.busy()
        results: list[Completion] = []
        wait_until(lambda: len(results.__iadd__(runner.take())) == 40)
        assert performer.peak >= 20  # they overlapped
        assert {c.result for c in results} == {f"result-c{i}" for i in range(40)}
        assert runner.room() == 50 and runner.busy()  # done: room again, but remembered until settled
        runner.settled(results)
        assert not runner.busy()
    finally:
        runner.close()
    assert performer.closed


def test_the_runner_retries_a_failing_call_as_recovered_and_drops_revoked_ones() -> None:
    performer = SlowPerformer(delay_s=0.5, fail_first=1)
    runner = CallRunner(performer, limit=10, name="t", retry_pause_s=0.01)
    try:
        runner.start(0, "a", Call("ca", None), recovered=False)
        wait_until(lambda: ("ca", True) in performer.seen)  # the bug was logged; it runs again, recovered
        runner.start(1, "b", Call("cb", None), recovered=False)
        wait_until(lambda: ("cb", False) in performer.seen)
        runner.revoke([1])
        assert runner.room() == 9
        done: list[Completion] = []
        wait_until(lambda: len(done.__iadd__(runner.take())) == 1)
        time.sleep(0.6)
        assert [c.call_id for c in done + runner.take()] == ["ca"]  # cb was cancelled and never reported
    finally:
        runner.close()


class GatedPerformer(SlowPerformer):
    """Each call blocks until the test lets one through (`release`), so the calls being performed stay put."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Semaphore | None = None  # made on the runner's loop, at open

    async def open(self) -> None:
        self.gate = asyncio.Semaphore(0)
        await super().open()

    async def perform(self, call: Call, recovered: bool) -> Any:
        assert self.gate is not None
        self.seen.append((call.call_id, recovered))
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.gate.acquire()
        finally:
            self.running -= 1
        return f"result-{call.call_id}"


def settle_loop(runner: CallRunner) -> None:
    """Let the runner's loop run every task that is ready (each started call gets to `perform` or to
    its wait for a slot) before the test looks."""
    async def turns() -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    asyncio.run_coroutine_threadsafe(turns(), runner._loop).result(5)


def take_until(runner: CallRunner, results: list[Completion], count: int) -> None:
    wait_until(lambda: len(results.__iadd__(runner.take())) >= count)
    assert len(results) == count


def test_recovered_calls_beyond_the_limit_wait_unsent_for_a_slot_and_all_complete() -> None:
    limit, extra = 8, 5
    performer = GatedPerformer()
    runner = CallRunner(performer, limit=limit, name="t")
    try:
        # A restore starts every call its state records, with no regard for room (Processor._recover_calls).
        for i in range(limit + extra):
            runner.start(i % 2, f"k{i}", Call(f"c{i}", None), recovered=True)
        wait_until(lambda: performer.running == limit)
        settle_loop(runner)
        assert len(performer.seen) == limit and performer.peak == limit  # the others were not sent
        assert runner.room() == -extra  # the loop reads nothing until the runner has room again
        results: list[Completion] = []
        loop, gate = runner._loop, performer.gate
        assert gate is not None
        for done in range(1, limit + extra + 1):  # one call finishes at a time: the next waiting one goes out
            loop.call_soon_threadsafe(gate.release)
            take_until(runner, results, done)
            settle_loop(runner)
            assert performer.running == min(limit, limit + extra - done)
        assert performer.peak == limit
        assert sorted(c.call_id for c in results) == sorted(f"c{i}" for i in range(limit + extra))
        assert {recovered for _, recovered in performer.seen} == {True} and len(performer.seen) == limit + extra
        runner.settled(results)
        assert runner.room() == limit and not runner.busy()
    finally:
        runner.close()


def test_a_runner_revoked_after_it_closed_does_not_raise_and_a_processor_closes_its_consumer_first() -> None:
    runner = CallRunner(SlowPerformer(delay_s=5.0), limit=4, name="t")
    runner.start(0, "p-1", Call("c-1", "request"), recovered=False)
    runner.close()
    runner.revoke([0])  # a consumer closed after the runner runs the revoke callback: nothing to cancel
    rig = Rig()
    order: list[str] = []
    closing_consumer = rig.consumer.close
    closing_calls = rig.calls.close
    rig.consumer.close = lambda: (order.append("consumer"), closing_consumer())[1]  # type: ignore[method-assign]
    rig.calls.close = lambda: (order.append("calls"), closing_calls())[1]  # type: ignore[method-assign]
    rig.processor.close()
    assert order == ["consumer", "calls"]


def test_a_runner_whose_performer_cannot_open_fails_at_construction() -> None:
    class Broken(SlowPerformer):
        async def open(self) -> None:
            raise OSError("no network")

    with pytest.raises(CallRunnerError, match="no network"):
        CallRunner(Broken(), limit=1, name="t")
    assert not any(t.name == "t-calls" and t.is_alive() for t in threading.enumerate())
