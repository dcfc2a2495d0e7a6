from __future__ import annotations

import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.funds.accounts import Account, HoldConflictError, SeedError, load_seed, parse_seed
from consumers.funds.logic import FundsLogic, FundsState
from consumers.ids import reply_id
from payments.contracts.participants import (
    CommitFunds,
    FundsCommitResult,
    FundsReleaseResult,
    FundsReservationResult,
    ReleaseFunds,
    ReserveFunds,
)
from payments.contracts.topics import FUNDS_COMMANDS, FUNDS_REPLIES
from payments.money import Money
from tests.unit.consumers.helpers import NOW, envelope_of, incoming

SEED = parse_seed({"accounts": {
    "acc-a": {"balances": {"EUR": "100.00", "JPY": "5000"}},
    "acc-o": {"balances": {"EUR": "10.00"}, "overdraft_limits": {"EUR": "5.00"}},
}})


def reserve(account: str, minor: int, hold: str, currency: str = "EUR", payment: str = "pay-1") -> ReserveFunds:
    return ReserveFunds(payment_id=payment, command_id=str(uuid.uuid4()), issued_at=NOW, account=account,
                        amount=Money.of(minor, currency), hold_id=hold)


def release(account: str, hold: str, payment: str = "pay-1") -> ReleaseFunds:
    return ReleaseFunds(payment_id=payment, command_id=str(uuid.uuid4()), issued_at=NOW, account=account,
                        hold_id=hold)


def commit(account: str, hold: str, payment: str = "pay-1") -> CommitFunds:
    return CommitFunds(payment_id=payment, command_id=str(uuid.uuid4()), issued_at=NOW, account=account,
                       hold_id=hold, payee_account="acc-b")


Command = ReserveFunds | ReleaseFunds | CommitFunds


def run(logic: FundsLogic, state: FundsState | None, command: Command) -> tuple[FundsState | None, object]:
    decision = logic.decide(state, incoming(command, FUNDS_COMMANDS, key=command.account), NOW)
    assert len(decision.outgoing) == 1
    out = decision.outgoing[0]
    assert out.destination == FUNDS_REPLIES and out.key == command.payment_id
    assert out.message.reply_id == reply_id("funds", command.command_id)  # type: ignore[attr-defined]
    return decision.state, out.message


def eur(state: FundsState | None) -> tuple[int, int, int]:
    assert state is not None
    balance = state.account.balance("EUR")
    return balance.available, balance.held, balance.debited


def test_commands_are_keyed_by_account() -> None:
    logic = FundsLogic(SEED)
    assert logic.key_of(reserve("acc-a", 1, "h"), envelope_of(reserve("acc-a", 1, "h"))) == "acc-a"
    assert logic.key_of(release("acc-a", "h"), envelope_of(reserve("acc-a", 1, "h"))) == "acc-a"
    assert logic.key_of(commit("acc-a", "h"), envelope_of(reserve("acc-a", 1, "h"))) == "acc-a"


def test_reserve_then_commit_debits_the_payer() -> None:
    logic = FundsLogic(SEED)
    state, reply = run(logic, None, reserve("acc-a", 2500, "h1"))
    assert isinstance(reply, FundsReservationResult)
    assert (reply.outcome, reply.hold_id, reply.available) == ("RESERVED", "h1", Money.of(7500, "EUR"))
    assert eur(state) == (7500, 2500, 0)
    state, reply = run(logic, state, commit("acc-a", "h1"))
    assert isinstance(reply, FundsCommitResult) and reply.outcome == "COMMITTED"
    assert eur(state) == (7500, 0, 2500)


def test_reserve_then_release_restores_available() -> None:
    logic = FundsLogic(SEED)
    state, _ = run(logic, None, reserve("acc-a", 2500, "h1"))
    state, reply = run(logic, state, release("acc-a", "h1"))
    assert isinstance(reply, FundsReleaseResult) and reply.outcome == "RELEASED"
    assert eur(state) == (10000, 0, 0)


def test_insufficient_funds_reports_available_and_holds_nothing() -> None:
    logic = FundsLogic(SEED)
    state, reply = run(logic, None, reserve("acc-a", 10001, "h1"))
    assert isinstance(reply, FundsReservationResult)
    assert (reply.outcome, reply.available) == ("INSUFFICIENT_FUNDS", Money.of(10000, "EUR"))
    assert eur(state) == (10000, 0, 0)


def test_currency_the_account_does_not_hold_is_insufficient() -> None:
    _, reply = run(FundsLogic(SEED), None, reserve("acc-a", 1, "h1", currency="USD"))
    assert isinstance(reply, FundsReservationResult) and reply.outcome == "INSUFFICIENT_FUNDS"


def test_overdraft_limit_is_respected_exactly() -> None:
    logic = FundsLogic(SEED)
    state, reply = run(logic, None, reserve("acc-o", 1500, "h1"))  # 10.00 + 5.00 overdraft
    assert isinstance(reply, FundsReservationResult) and reply.outcome == "RESERVED"
    assert eur(state) == (-500, 1500, 0)
    state, reply = run(logic, state, reserve("acc-o", 1, "h2"))
    assert isinstance(reply, FundsReservationResult) and reply.outcome == "INSUFFICIENT_FUNDS"


def test_unknown_account_is_reported_and_keeps_no_state() -> None:
    logic = FundsLogic(SEED)
    state, reply = run(logic, None, reserve("acc-nobody", 1, "h1"))
    assert isinstance(reply, FundsReservationResult) and reply.outcome == "ACCOUNT_UNKNOWN"
    assert state is None
    _, reply = run(logic, None, release("acc-nobody", "h1"))
    assert isinstance(reply, FundsReleaseResult) and reply.outcome == "UNKNOWN_HOLD"
    _, reply = run(logic, None, commit("acc-nobody", "h1"))
    assert isinstance(reply, FundsCommitResult) and reply.outcome == "UNKNOWN_HOLD"


def test_release_is_idempotent_and_unknown_holds_are_reported() -> None:
    logic = FundsLogic(SEED)
    state, _ = run(logic, None, reserve("acc-a", 100, "h1"))
    state, _ = run(logic, state, release("acc-a", "h1"))
    state, reply = run(logic, state, release("acc-a", "h1"))  # a compensation retry: new command id
    assert isinstance(reply, FundsReleaseResult) and reply.outcome == "RELEASED"
    assert eur(state) == (10000, 0, 0)
    _, reply = run(logic, state, release("acc-a", "h-unknown"))
    assert isinstance(reply, FundsReleaseResult) and reply.outcome == "UNKNOWN_HOLD"


def test_committed_hold_cannot_be_released_and_released_hold_cannot_be_committed() -> None:
    logic = FundsLogic(SEED)
    state, _ = run(logic, None, reserve("acc-a", 100, "h1"))
    state, _ = run(logic, state, commit("acc-a", "h1"))
    state, reply = run(logic, state, release("acc-a", "h1"))
    assert isinstance(reply, FundsReleaseResult) and reply.outcome == "UNKNOWN_HOLD"
    state, reply = run(logic, state, commit("acc-a", "h1"))
    assert isinstance(reply, FundsCommitResult) and reply.outcome == "COMMITTED"
    state, _ = run(logic, state, reserve("acc-a", 100, "h2"))
    state, _ = run(logic, state, release("acc-a", "h2"))
    _, reply = run(logic, state, commit("acc-a", "h2"))
    assert isinstance(reply, FundsCommitResult) and reply.outcome == "UNKNOWN_HOLD"
    assert eur(state) == (9900, 0, 100)


def test_redelivered_command_gets_the_first_reply_even_after_balances_changed() -> None:
    logic = FundsLogic(SEED)
    first = reserve("acc-a", 10000, "h1")
    state, reply1 = run(logic, None, first)
    state, _ = run(logic, state, release("acc-a", "h1"))
    again_state, reply2 = run(logic, state, first)
    assert reply2 == reply1
    assert again_state == state


def test_reserve_resent_with_new_command_id_for_the_same_hold_does_not_hold_twice() -> None:
    logic = FundsLogic(SEED)
    state, _ = run(logic, None, reserve("acc-a", 100, "h1"))
    state, reply = run(logic, state, reserve("acc-a", 100, "h1"))
    assert isinstance(reply, FundsReservationResult) and reply.outcome == "RESERVED"
    assert eur(state) == (9900, 100, 0)


def test_hold_id_reused_with_another_amount_is_a_conflict() -> None:
    logic = FundsLogic(SEED)
    state, _ = run(logic, None, reserve("acc-a", 100, "h1"))
    with pytest.raises(HoldConflictError):
        run(logic, state, reserve("acc-a", 200, "h1"))


def test_state_round_trips_through_the_changelog_encoding() -> None:
    logic = FundsLogic(SEED)
    state, _ = run(logic, None, reserve("acc-a", 100, "h1"))
    assert state is not None
    assert logic.decode_state(logic.encode_state(state)) == state


def test_packaged_seed_has_the_demo_accounts() -> None:
    seed = load_seed()
    for name in ("acc-alice", "acc-bob", "acc-mallory", "acc-payer-1", "acc-payee-1"):
        assert {"EUR", "USD", "GBP", "JPY", "BHD", "KRW"} <= set(seed[name].balances)
    assert seed["acc-poor"].balances["EUR"].available == 100


def test_invalid_seed_is_refused() -> None:
    with pytest.raises(SeedError):
        parse_seed({"accounts": {"acc-x": {"balances": {"EUR": "1.005"}}}})
    with pytest.raises(SeedError):
        parse_seed({"accounts": {"acc-x": {"balances": {"EUR": "-10.00"}}}})


# -- properties ---------------------------------------------------------------------------------

ACCOUNTS = ("acc-a", "acc-o")
op = st.tuples(st.sampled_from(["reserve", "release", "commit", "redeliver"]), st.sampled_from(ACCOUNTS),
               st.integers(0, 7), st.integers(1, 4000))


@settings(max_examples=200, deadline=None)
@given(st.lists(op, max_size=60))
def test_random_sequences_never_break_the_limit_and_conserve_money(ops: list[tuple[str, str, int, int]]) -> None:
    logic = FundsLogic(SEED)
    states: dict[str, FundsState | None] = dict.fromkeys(ACCOUNTS)
    sent: list[Command] = []
    for kind, account, hold_number, minor in ops:
        hold = f"{account}-h{hold_number}"
        command: Command
        if kind == "redeliver" and sent:
            command = sent[minor % len(sent)]
        elif kind == "reserve":
            command = reserve(account, minor, hold, payment=f"pay-{hold}-{minor}")
        elif kind == "release":
            command = release(account, hold)
        else:
            command = commit(account, hold)
        try:
            new_state, _ = run(logic, states[command.account], command)
        except HoldConflictError:
            continue  # the processor dead-letters it; the state is untouched
        sent.append(command)
        states[command.account] = new_state
    for name, state in states.items():
        if state is None:
            continue  # never touched
        opening: Account = SEED[name]
        for currency, balance in state.account.balances.items():
            assert balance.available >= -state.account.limit(currency)
            assert balance.available + balance.held + balance.debited == opening.balance(currency).opening
            state.account.check_invariants(currency)
