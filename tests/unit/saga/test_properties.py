"""Property-based: random sequences of commands, replies (duplicate, stale, out of order, contradictory)
and timer firings keep the saga's invariants."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from orchestrator.policy import POLICIES
from orchestrator.state import ALERT, RETIRABLE, TERMINAL, fold
from payments.contracts.base import Message, ParticipantCommand
from payments.contracts.events import (
    FundsCommitted,
    FundsReleased,
    FundsReserved,
    PartnerAccepted,
    PaymentFailed,
    PaymentRefunded,
    PaymentRejected,
    PaymentSettled,
    RefundRejected,
    RiskAssessed,
    SubmittedToPartner,
)
from payments.contracts.participants import (
    AssessRisk,
    CommitFunds,
    PartnerQueryResult,
    QueryPartnerPayment,
    RecordRiskOutcome,
    ReleaseFunds,
    ReserveFunds,
    SubmitToPartner,
)
from tests.unit.saga import stages
from tests.unit.saga.harness import (
    Saga,
    cancel,
    commit_reply,
    initiate,
    query_reply,
    refund,
    release_reply,
    reservation_reply,
    risk_reply,
    submission_reply,
)

OUTCOMES: dict[type[ParticipantCommand], tuple[str, ...]] = {
    AssessRisk: ("APPROVE", "DECLINE"),
    ReserveFunds: ("RESERVED", "INSUFFICIENT_FUNDS", "ACCOUNT_UNKNOWN"),
    ReleaseFunds: ("RELEASED", "UNKNOWN_HOLD"),
    CommitFunds: ("COMMITTED", "UNKNOWN_HOLD"),
    SubmitToPartner: ("ACCEPTED", "DECLINED", "ERROR"),
    QueryPartnerPayment: ("ACCEPTED", "DECLINED", "NOT_FOUND", "PENDING"),
}
SIGNALS = (PaymentRejected, RefundRejected)


def reply_to(command: ParticipantCommand, outcome: str) -> Message:
    match command:
        case AssessRisk():
            return risk_reply(command, outcome)
        case ReserveFunds():
            return reservation_reply(command, outcome)
        case ReleaseFunds():
            return release_reply(command, outcome)
        case CommitFunds():
            return commit_reply(command, outcome)
        case SubmitToPartner():
            return submission_reply(command, outcome)
        case QueryPartnerPayment():
            return query_reply(command, outcome)
    raise AssertionError(command)


class SagaMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.saga = Saga()
        self.terminal: tuple[str, int] | None = None  # (status, number of events when it became terminal)
        self.replies: list[Message] = []

    def _handle(self, message: Message) -> None:
        before = len(self.saga.events)
        self.saga.handle(message)
        self._check_step(before, message)

    def _check_step(self, before: int, cause: Message | None) -> None:
        new = self.saga.events[before:]
        # The risk service hears of a failure exactly when a payment it approved fails
        approved = any(isinstance(e, RiskAssessed) and e.decision == "APPROVE" for e in self.saga.events)
        told = [o for o in self.saga.last if isinstance(o.message, RecordRiskOutcome)] if new else []
        failed_now = any(isinstance(e, PaymentFailed) for e in new)
        assert len(told) == (1 if failed_now and approved else 0), (new, told)
        for event in new:
            if isinstance(event, SubmittedToPartner) and event.attempt > 1:
                # a resubmission only ever follows the partner saying it has no record
                assert isinstance(cause, PartnerQueryResult) and cause.status == "NOT_FOUND"
        if self.terminal is not None:
            status, _ = self.terminal
            allowed = (*SIGNALS, PaymentRefunded) if status == "SETTLED" else SIGNALS
            assert all(isinstance(e, allowed) for e in new), (status, new)
            assert self.saga.status == status
            if status == "REJECTED":
                assert new == []
        elif self.saga.state is not None and self.saga.status in TERMINAL:
            self.terminal = (self.saga.status, len(self.saga.events))

    @initialize()
    def start(self) -> None:
        self._handle(initiate())

    @rule()
    def repeat_initiate(self) -> None:
        self._handle(initiate())

    @rule(amount=st.integers(min_value=-5, max_value=5000))
    def initiate_other_parameters(self, amount: int) -> None:
        self._handle(initiate(amount_minor=amount))

    # Cancels end most payments early; drawing them rarely lets sequences reach the later steps.
    @rule(n=st.integers(min_value=1, max_value=3), rare=st.integers(min_value=0, max_value=5))
    def cancel(self, n: int, rare: int) -> None:
        if rare == 0:
            self._handle(cancel(n=n))

    @precondition(lambda self: bool(self.saga.sent))
    @rule()
    def progress(self) -> None:
        """The participant answers the latest command the way the happy path needs."""
        # The latest command that awaits a reply (a failure notice to risk awaits none)
        command = [out.message for out in self.saga.sent if type(out.message) in OUTCOMES][-1]
        assert isinstance(command, ParticipantCommand)
        message = reply_to(command, OUTCOMES[type(command)][0])
        self.replies.append(message)
        self._handle(message)

    @rule(amount=st.integers(min_value=1, max_value=1500), n=st.integers(min_value=1, max_value=4),
          currency=st.sampled_from(["EUR", "EUR", "USD"]))
    def refund(self, amount: int, n: int, currency: str) -> None:
        self._handle(refund(amount, n=n, currency=currency))

    @precondition(lambda self: bool(self.saga.sent))
    @rule(data=st.data())
    def reply(self, data: st.DataObject) -> None:
        """A reply to any command ever sent: the latest, an old one (stale) or one already answered."""
        commands = [out.message for out in self.saga.sent if type(out.message) in OUTCOMES]
        latest_first = st.integers(min_value=0, max_value=len(commands) - 1).map(lambda i: len(commands) - 1 - i)
        command = commands[data.draw(latest_first)]
        outcome = data.draw(st.sampled_from(OUTCOMES[type(command)]))
        message = reply_to(command, outcome)
        self.replies.append(message)
        self._handle(message)

    @precondition(lambda self: bool(self.replies))
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        self._handle(data.draw(st.sampled_from(self.replies)))

    @rule(seconds=st.integers(min_value=0, max_value=200))
    def advance(self, seconds: int) -> None:
        before = len(self.saga.events)
        self.saga.advance(timedelta(seconds=seconds))
        self._check_step(before, None)

    # Step timers only: a finished payment's retention timer deletes it (tests/unit/saga/test_retention.py).
    @precondition(lambda self: self.saga.state is not None and self.saga.status not in RETIRABLE
                  and self.saga.logic.next_deadline(self.saga.state))
    @rule()
    def expire(self) -> None:
        before = len(self.saga.events)
        self.saga.expire()
        self._check_step(before, None)

    # -- invariants -------------------------------------------------------------------------------

    @invariant()
    def seq_increases_by_one(self) -> None:
        assert [e.seq for e in self.saga.events] == list(range(1, len(self.saga.events) + 1))
        assert len({e.event_id for e in self.saga.events}) == len(self.saga.events)

    @invariant()
    def state_is_the_fold_of_its_events(self) -> None:
        assert fold(self.saga.events) == self.saga.state
        if self.saga.state is not None:
            logic = self.saga.logic
            assert logic.decode_state(logic.encode_state(self.saga.state)) == self.saga.state

    @invariant()
    def money_is_conserved(self) -> None:
        reserved = len(self.saga.emitted(FundsReserved))
        committed = len(self.saga.emitted(FundsCommitted))
        released = len(self.saga.emitted(FundsReleased))
        assert reserved <= 1
        assert committed + released <= reserved
        if self.saga.state is not None and self.saga.status in TERMINAL:
            assert committed + released == reserved  # a finished payment holds nothing
        refunded = self.saga.emitted(PaymentRefunded)
        settled = self.saga.emitted(PaymentSettled)
        if refunded:
            assert len(settled) == 1
            assert sum(r.amount.amount_minor for r in refunded) == refunded[-1].refunded_total.amount_minor
            assert refunded[-1].refunded_total.amount_minor <= settled[0].amount.amount_minor

    @invariant()
    def no_step_happens_twice(self) -> None:
        submissions = self.saga.emitted(SubmittedToPartner)
        assert [s.attempt for s in submissions] == list(range(1, len(submissions) + 1))
        assert len(self.saga.commands(SubmitToPartner)) == len(submissions)
        assert len(submissions) <= POLICIES["PARTNER_SUBMIT"].attempts_max
        assert len(self.saga.emitted(PartnerAccepted)) <= 1
        assert len(self.saga.emitted(PaymentSettled)) <= 1
        assert len({c.command_id for c in self.saga.commands(CommitFunds)}) == len(self.saga.commands(CommitFunds))
        if self.saga.commands(CommitFunds):
            assert len(self.saga.emitted(PartnerAccepted)) == 1
        if self.saga.emitted(PaymentSettled):
            assert len(self.saga.emitted(FundsCommitted)) == 1
        refund_ids = [r.refund_id for r in self.saga.emitted(PaymentRefunded)]
        assert len(set(refund_ids)) == len(refund_ids)

    @invariant()
    def a_live_payment_always_has_a_timer(self) -> None:
        state = self.saga.state
        if state is None or state.status in TERMINAL or state.status in ALERT or state.status == "UNKNOWN":
            return
        assert state.awaiting is not None
        assert self.saga.logic.next_deadline(state) is not None


SagaMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])
TestSagaProperties = SagaMachine.TestCase


class SubmittedSagaMachine(SagaMachine):
    """The same rules from a payment already submitted to the partner: partner, commit and
    compensation paths (queries, resubmissions, releases, alerts) get most of the examples."""

    @initialize()
    def start(self) -> None:
        self.saga = stages.submitted()
        self._check_step(0, None)


SubmittedSagaMachine.TestCase.settings = SagaMachine.TestCase.settings
TestSubmittedSagaProperties = SubmittedSagaMachine.TestCase
