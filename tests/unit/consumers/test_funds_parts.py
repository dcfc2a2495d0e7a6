"""The funds changelog in parts: what a change writes is what changed, and the parts rebuild the state.

Driven through the real exactly-once loop (on the in-memory broker) and through the pure encoder: a
restore from the parts gives the committed state back; the bytes a change writes do not grow with the
finished holds and answers the account keeps."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.funds.logic import FundsLogic, FundsState, decode_parts, encode_parts
from payments.contracts.codec import SingleObjectSerde
from payments.contracts.envelope import build_headers
from payments.contracts.topics import FUNDS_COMMANDS
from payments.runtime.config import ProcessorConfig
from payments.runtime.logic import split_part_key
from payments.runtime.processor import Processor
from payments.runtime.topics import Topics
from tests.unit.consumers.helpers import NOW, incoming
from tests.unit.consumers.test_funds import SEED, Command, commit, release, reserve
from tests.unit.runtime.fakes import FakeBroker, fake_clients, restore_assigned

DAY = timedelta(days=1)
TOPICS = Topics("t.")
SERDE = SingleObjectSerde()


def _apply(changelog: dict[str, bytes], parts: dict[str, bytes | None]) -> None:
    for name, data in parts.items():
        if data is None:
            changelog.pop(name, None)
        else:
            changelog[name] = data


op = st.tuples(st.sampled_from(["reserve", "release", "commit"]), st.integers(0, 9), st.integers(1, 3000),
               st.integers(0, 3))


@settings(max_examples=150, deadline=None)
@given(st.lists(op, max_size=50))
def test_applying_each_change_s_parts_always_rebuilds_the_state(ops: list[tuple[str, int, int, int]]) -> None:
    logic = FundsLogic(SEED, retention=2 * DAY)
    state: FundsState | None = None
    changelog: dict[str, bytes] = {}
    now = NOW
    for kind, hold_number, minor, days in ops:
        now += days * DAY  # time passes: finished holds and answers age out of the 2-day retention
        hold = f"h{hold_number}"
        command: Command = (reserve("acc-a", minor, hold, payment=f"pay-{hold}") if kind == "reserve"
                            else release("acc-a", hold) if kind == "release" else commit("acc-a", hold))
        command = command.model_copy(update={"issued_at": now})
        try:
            after = logic.decide(state, incoming(command, FUNDS_COMMANDS, key="acc-a"), now).state
        except Exception as error:  # a conflicting hold id: dead-lettered by the loop, the state is untouched
            assert type(error).__name__ == "HoldConflictError", error
            continue
        _apply(changelog, encode_parts(state, after))
        state = after
        assert decode_parts(changelog) == state


def _with_history(holds: int) -> FundsState:
    """acc-a after `holds` payments reserved and committed within the retention: that many finished holds
    and twice that many answers."""
    logic = FundsLogic(SEED)
    state: FundsState | None = None
    for n in range(holds):
        for command in (reserve("acc-a", 1, f"h{n}", payment=f"p{n}"), commit("acc-a", f"h{n}", payment=f"p{n}")):
            state = logic.decide(state, incoming(command, FUNDS_COMMANDS, key="acc-a"), NOW).state
    assert state is not None and len(state.account.finished) == holds
    return state


def _change_bytes(state: FundsState) -> tuple[int, int]:
    """(bytes of the parts, bytes of a whole snapshot) for one more reserve on the account."""
    logic = FundsLogic(SEED)
    after = logic.decide(state, incoming(reserve("acc-a", 1, "h-new", payment="p-new"), FUNDS_COMMANDS,
                                         key="acc-a"), NOW).state
    parts = encode_parts(state, after)
    assert after is not None
    return sum(len(name) + len(data or b"") for name, data in parts.items()), len(logic.encode_state(after))


def test_the_bytes_a_change_writes_do_not_grow_with_the_account_s_history() -> None:
    small, _ = _change_bytes(_with_history(10))
    large, large_whole = _change_bytes(_with_history(2_000))
    # The same change writes the same parts whatever the history (give or take the digits of a balance).
    assert abs(large - small) < 16 and large <= 2_048
    assert large_whole > 100 * large  # a whole snapshot would carry every hold and answer


def test_the_loop_snapshots_funds_in_parts_and_a_new_owner_restores_the_same_accounts() -> None:
    broker = FakeBroker()

    def processor() -> Processor[Any]:
        clients, consumer, _ = fake_clients(broker, TOPICS.changelog("funds"))
        made: Processor[Any] = Processor(FundsLogic(SEED), clients=clients, topics=TOPICS, serde=SERDE,
                                         instance_id="i", config=ProcessorConfig(), clock=lambda: NOW)
        consumer.subscribe(list(made._inputs), on_assign=made._on_assign, on_revoke=made._on_revoke,
                           on_lost=made._on_revoke)
        restore_assigned(made)
        return made

    first = processor()
    for n in range(30):
        account = "acc-a" if n % 3 else "acc-o"
        finish = (commit if n % 2 else release)(account, f"h{n}", payment=f"p{n}")
        for command in (reserve(account, 10, f"h{n}", payment=f"p{n}"), *([finish] if n < 28 else [])):
            broker.append(TOPICS.name(FUNDS_COMMANDS), account.encode(), SERDE.encode(command),
                          [*build_headers(command, source="test", traceparent=None)])
    for _ in range(5):
        first.step()
    live = {account: first.state_of(account) for account in ("acc-a", "acc-o")}
    assert all(state is not None and state.account.finished for state in live.values())
    keys = {split_part_key(r.key.decode())[1][:2] for r in broker.records(TOPICS.changelog("funds")) if r.key}
    assert keys == {"", "o/", "f/", "a/"}  # heads, open and finished holds, answers: each its own record

    second = processor()
    assert {account: second.state_of(account) for account in live} == live
