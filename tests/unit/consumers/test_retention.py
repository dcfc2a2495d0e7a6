"""Participant retention (docs/participants.md): what each keeps, for how long, and what an older command gets.
The risk service's is in test_risk.py (its accounts' histories)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from consumers.funds.logic import FundsLogic, FundsState
from consumers.partner.logic import PartnerAnswer, PartnerGatewayLogic
from consumers.settlement.logic import SettlementPublisherLogic
from payments.contracts.participants import FundsReleaseResult, PartnerSubmissionResult, ReleaseFunds
from payments.contracts.topics import FUNDS_COMMANDS, PARTNER_COMMANDS
from payments.runtime.logic import Completion, InputRejected
from tests.unit.consumers.helpers import NOW, incoming
from tests.unit.consumers.test_funds import SEED, commit, release, reserve
from tests.unit.consumers.test_partner import submit_command
from tests.unit.consumers.test_settlement import EVENTS, refunded, settled

DAY = timedelta(days=1)
RETENTION = 7 * DAY


def test_the_partner_gateway_keeps_a_payment_while_a_call_is_out_and_forgets_it_after_the_last_answer() -> None:
    logic = PartnerGatewayLogic(retention=RETENTION)
    command = submit_command()
    calling = logic.decide(None, incoming(command, PARTNER_COMMANDS), NOW).state
    assert calling is not None and calling.pending
    assert logic.next_deadline(calling) is None  # the call's answer must find the state
    answer = PartnerAnswer(kind="submit", submission_id=command.submission_id, code="ACCEPTED",
                           partner_reference="SIM-1")
    answered_at = NOW + timedelta(seconds=1)
    done = logic.complete(calling, Completion(0, "pay-1", command.command_id, answer), answered_at).state
    assert done is not None and logic.next_deadline(done) == answered_at + RETENTION
    assert logic.fire_timers("pay-1", done, answered_at + RETENTION).state is None
    # Redelivered after that: past its expires_at, so answered at once and never sent again.
    again = logic.decide(None, incoming(command, PARTNER_COMMANDS), answered_at + RETENTION)
    assert again.state is not None and not again.state.pending
    (reply,) = again.outgoing
    assert isinstance(reply.message, PartnerSubmissionResult)
    assert (reply.message.outcome, reply.message.reason_code) == ("ERROR", "PARTNER_UNAVAILABLE")


def test_settlement_keeps_a_payment_through_its_refund_window_and_skips_an_event_older_than_that() -> None:
    logic = SettlementPublisherLogic(refund_window=30 * DAY, retention=RETENTION)
    state = logic.decide(None, incoming(settled(), EVENTS), NOW).state
    assert state is not None and logic.next_deadline(state) == NOW + 37 * DAY
    refund = logic.decide(state, incoming(refunded(), EVENTS), NOW + 29 * DAY)
    assert len(refund.outgoing) == 1  # a refund inside the window still has its settlement's facts
    assert logic.fire_timers("pay-1", state, NOW + 37 * DAY).state is None
    late = logic.decide(None, incoming(settled(), EVENTS), NOW + 37 * DAY)
    assert late.state is None and late.outgoing == ()  # published when it was new


def _funds(logic: FundsLogic, state: FundsState | None, command: object, now: object) -> FundsState:
    decision = logic.decide(state, incoming(command, FUNDS_COMMANDS, key=command.account), now)  # type: ignore[arg-type, attr-defined]
    assert decision.state is not None
    return decision.state


def test_funds_keeps_open_holds_for_ever_and_finished_holds_and_answers_for_the_retention() -> None:
    logic = FundsLogic(seed=SEED, retention=RETENTION)
    finished, released, still_open = reserve("acc-a", 100, "h-1"), release("acc-a", "h-1"), reserve("acc-a", 50, "h-2")
    state = _funds(logic, None, finished, NOW)
    state = _funds(logic, state, released, NOW)
    state = _funds(logic, state, still_open, NOW)
    assert set(state.account.finished) == {"h-1"} and set(state.account.holds) == {"h-2"}
    assert len(state.answers) == 3
    # Inside the retention: a redelivered release repeats its first answer exactly.
    repeat = logic.decide(state, incoming(released, FUNDS_COMMANDS, key="acc-a"), NOW + RETENTION - DAY)
    assert isinstance(repeat.outgoing[0].message, FundsReleaseResult)
    assert repeat.outgoing[0].message.outcome == "RELEASED" and repeat.state is state
    # The account's next change after the retention drops what finished or was answered before it.
    later = reserve("acc-a", 10, "h-3").model_copy(update={"issued_at": NOW + RETENTION})
    state = _funds(logic, state, later, NOW + RETENTION)
    assert set(state.account.holds) == {"h-2", "h-3"}  # h-2 is still open however old
    assert state.account.finished == {}
    assert list(state.answers) == [later.command_id]
    assert state.account.balance("EUR").held == 60


def test_funds_dead_letters_a_command_older_than_the_retention_instead_of_applying_it() -> None:
    logic = FundsLogic(seed=SEED, retention=RETENTION)
    state = _funds(logic, None, reserve("acc-a", 100, "h-1"), NOW)
    stale: ReleaseFunds = release("acc-a", "h-1")
    with pytest.raises(InputRejected) as rejected:
        logic.decide(state, incoming(stale, FUNDS_COMMANDS, key="acc-a"), NOW + RETENTION)
    assert rejected.value.reason_code == "stale_command"
    fresh = commit("acc-a", "h-1").model_copy(update={"issued_at": NOW + RETENTION})
    assert _funds(logic, state, fresh, NOW + RETENTION).account.balance("EUR").debited == 100
