"""Risk participant: AssessRisk -> RiskAssessmentCompleted, pure, behavioural features kept per account.

Two stages in one service, each account's state on one partition (docs/risk.md, "Features online"):

1. **Payee stage** (`risk.commands`, keyed by the payee account): the payee's features of the payment from
   the payee's history, then the payment added to that history; the payment goes on to `risk.scoring`,
   keyed by the payer account, with those features and its position in the payee's history.
2. **Payer stage** (`risk.scoring`, keyed by the payer account): the payer's features from the payer's
   history, the rules and the active model (a candidate in shadow), then the payment added to the
   payer's history, a decline marked on it; the reply goes to `risk.replies`, keyed by payment id,
   carrying the features, the positions, the failures applied since the payer's previous payment and
   the shadow score, which the saga records in `RiskAssessed` (so a replay rebuilds the same features).
3. **Failures** (`risk.outcomes`, keyed by the payer account, from the saga): a payment risk approved
   that failed afterwards is marked on the payer's history, and named in the payer's next reply.

Only a first attempt (`AssessRisk.attempt` 1) is added to the histories. The payer stage keeps its recent
answers by payment id: a later attempt, or a redelivered command, gets the first answer again (same
score, same model version) even if the model changed in between. A later attempt whose first answer is
not kept is scored against the histories without being added (position 0: a replay leaves it out).

Retention: an account's state is deleted (a timer, a tombstone) once its histories would count as empty
for any payment still accepted (`IDLE_FORGET` after its last payment, plus `retention`). A command issued
`retention` or longer ago is dead-lettered (StaleCommand), never scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import ClassVar, Final

from pydantic import BaseModel

from consumers.ids import derived_event_id, reply_id
from consumers.risk.features import (
    EMPTY_HISTORY,
    IDLE_FORGET,
    RECENT_MAX,
    AccountHistory,
    Attempt,
    combined,
    current,
    knows,
    payee_features,
    payer_features,
    record,
    record_outcome,
)
from consumers.risk.models import Assessment, Models, assess
from consumers.risk.scoring import RiskRules
from payments.contracts.codes import RiskDecision
from payments.contracts.envelope import Envelope
from payments.contracts.events import FeatureContribution, ShadowScore
from payments.contracts.messages import Message
from payments.contracts.participants import AssessRisk, RecordRiskOutcome, RiskAssessmentCompleted, ScorePayment
from payments.contracts.topics import RISK_COMMANDS, RISK_OUTCOMES, RISK_REPLIES, RISK_SCORING
from payments.money import is_known_currency
from payments.runtime.logic import STATE_CONFIG, Decision, Incoming, InputRejected, JsonState, Outgoing

SERVICE = "risk"
RETENTION = timedelta(days=7)
ANSWERS_MAX: Final = 8  # per payer: the saga asks again within minutes, a handful of times at most
ANSWER_KEEP: Final = timedelta(hours=1)  # ... and an answer older than this (payment time) is not asked for
FAILURES_MAX: Final = RECENT_MAX  # a failure is only marked on a payment still among the recent ones
FORGET_MARGIN: Final = timedelta(days=1)


class Answer(BaseModel):
    """The payer stage's answer for one payment, kept to give it again."""

    model_config = STATE_CONFIG

    payment_id: str
    at: datetime  # the payment's time
    score_bp: int
    decision: RiskDecision
    reasons: tuple[str, ...]
    model_version: str
    features: dict[str, float] = {}
    contributions: tuple[tuple[str, int], ...] = ()
    payer_seq: int = 0
    payee_seq: int = 0
    failures_before: tuple[str, ...] = ()
    shadow: ShadowScore | None = None


class AccountRisk(BaseModel):
    """One account's risk state: its histories as payer and as payee, and the payer stage's bookkeeping."""

    model_config = STATE_CONFIG

    version: int = 1  # snapshot format
    payer: AccountHistory = EMPTY_HISTORY
    payee: AccountHistory = EMPTY_HISTORY
    failures: tuple[str, ...] = ()  # failures marked on `payer` since its last assessed payment, in order
    answers: tuple[Answer, ...] = ()  # oldest first

    def answer_for(self, payment_id: str) -> Answer | None:
        return next((a for a in self.answers if a.payment_id == payment_id), None)


def reply_for(command_id: str, answer: Answer) -> RiskAssessmentCompleted:
    """The reply to the AssessRisk `command_id`: the same answer always gives the same reply, byte for byte."""
    return RiskAssessmentCompleted(
        payment_id=answer.payment_id, reply_id=reply_id(SERVICE, command_id), command_id=command_id,
        score_bp=answer.score_bp, decision=answer.decision, reasons=list(answer.reasons),
        model_version=answer.model_version, features=dict(answer.features),
        contributions=[FeatureContribution(feature=name, bp=bp) for name, bp in answer.contributions],
        payer_seq=answer.payer_seq, payee_seq=answer.payee_seq, failures_before=list(answer.failures_before),
        shadow=answer.shadow)


def attempt_of(command: AssessRisk | ScorePayment) -> Attempt:
    at = command.initiated_at or command.issued_at
    return Attempt(command.payment_id, at, command.payer_account, command.payee_account, command.amount,
                   command.partner)


class RiskLogic(JsonState[AccountRisk]):
    """The `Logic` of the risk service. Rules and models are configuration: the models are swapped between
    decisions when the operator promotes or rolls back (ops.risk_models), and every answer names its model."""

    state_model = AccountRisk
    service: ClassVar[str] = SERVICE
    input_topics: ClassVar[tuple[str, ...]] = (RISK_COMMANDS, RISK_SCORING, RISK_OUTCOMES)
    output_topics: ClassVar[tuple[str, ...]] = (RISK_SCORING, RISK_REPLIES)

    def __init__(self, rules: RiskRules, models: Models, retention: timedelta = RETENTION,
                 observer: Observer | None = None) -> None:
        self.rules = rules
        self.models = models
        self.retention = retention
        self.observer = observer

    def key_of(self, message: Message, envelope: Envelope) -> str:
        if isinstance(message, AssessRisk):
            return message.payee_account
        if isinstance(message, ScorePayment | RecordRiskOutcome):
            return message.payer_account
        return message.payment_id

    def decide(self, state: AccountRisk | None, incoming: Incoming, now: datetime) -> Decision[AccountRisk]:
        message = incoming.message
        if isinstance(message, AssessRisk):
            return self._payee_stage(state, message, now)
        if isinstance(message, ScorePayment):
            return self._payer_stage(state, message, now)
        if isinstance(message, RecordRiskOutcome):
            return self._failure(state, message)
        return Decision(state)  # not ours (nothing else is published here): ignore, keep state

    def _stale(self, command: AssessRisk | ScorePayment, now: datetime) -> None:
        if command.issued_at <= now - self.retention:
            raise InputRejected("StaleCommand", "stale_command", f"{type(command).__name__} {command.command_id} "
                                f"was issued at {command.issued_at.isoformat()}, {self.retention} or more ago: "
                                "not scored")

    def _payee_stage(self, state: AccountRisk | None, command: AssessRisk, now: datetime) -> Decision[AccountRisk]:
        self._stale(command, now)
        attempt = attempt_of(command)
        before = state or AccountRisk()
        side: dict[str, float] = {}
        seq, after = 0, state
        if is_known_currency(command.amount.currency):
            side = payee_features(before.payee, attempt)
            if command.attempt == 1:
                payee = record(before.payee, attempt, "payee")  # unchanged if it holds the payment already
                if payee.count > current(before.payee, attempt.at).count:
                    seq, after = payee.count, before.model_copy(update={"payee": payee})
        onward = ScorePayment(
            payment_id=command.payment_id, command_id=derived_event_id("risk-score", command.command_id),
            issued_at=command.issued_at, assess_command_id=command.command_id, payer_account=command.payer_account,
            payee_account=command.payee_account, amount=command.amount, partner=command.partner,
            initiated_at=attempt.at, attempt=command.attempt, payee_seq=seq, payee_features=side)
        return Decision(after, (Outgoing(RISK_SCORING, command.payer_account, onward),))

    def _payer_stage(self, state: AccountRisk | None, command: ScorePayment, now: datetime) -> Decision[AccountRisk]:
        before = state or AccountRisk()
        kept = before.answer_for(command.payment_id)
        if kept is not None:  # a later attempt or a redelivery: the first answer again, nothing new decided
            return Decision(state, (Outgoing(RISK_REPLIES, command.payment_id, reply_for(command.assess_command_id,
                                                                                       kept)),))
        self._stale(command, now)
        attempt = attempt_of(command)
        models = self.models  # one read: the operator may swap them between two decisions
        if not is_known_currency(command.amount.currency):
            assessment = assess(self.rules, models, attempt, {})
            answer = self._answer(attempt, assessment, {}, payer_seq=0, payee_seq=command.payee_seq,
                                  failures_before=())
            return self._answered(before, answer, command)
        features = combined(payer_features(before.payer, attempt), command.payee_features)
        assessment = assess(self.rules, models, attempt, features)
        payer, failures, seq = before.payer, before.failures, 0
        failures_before: tuple[str, ...] = ()
        added = record(payer, attempt, "payer") if command.attempt == 1 else payer
        if added.count > current(payer, attempt.at).count:  # a first attempt, not held already
            payer = added
            if assessment.decision == "DECLINE":
                payer = record_outcome(payer, attempt.payment_id, "DECLINED")
            seq, failures_before, failures = payer.count, failures, ()
        answer = self._answer(attempt, assessment, features, payer_seq=seq, payee_seq=command.payee_seq,
                              failures_before=failures_before)
        return self._answered(before.model_copy(update={"payer": payer, "failures": failures}), answer, command)

    @staticmethod
    def _answer(attempt: Attempt, assessment: Assessment, features: dict[str, float], *, payer_seq: int,
                payee_seq: int, failures_before: tuple[str, ...]) -> Answer:
        shadow = assessment.shadow
        return Answer(
            payment_id=attempt.payment_id, at=attempt.at, score_bp=assessment.score_bp,
            decision=assessment.decision, reasons=assessment.reasons, model_version=assessment.model_version,
            features=features, contributions=assessment.contributions, payer_seq=payer_seq, payee_seq=payee_seq,
            failures_before=failures_before,
            shadow=None if shadow is None else ShadowScore(model_version=shadow.model_version,
                                                           score_bp=shadow.score_bp, decision=shadow.decision))

    @staticmethod
    def _answered(state: AccountRisk, answer: Answer, command: ScorePayment) -> Decision[AccountRisk]:
        answers = (*(a for a in state.answers if a.at > answer.at - ANSWER_KEEP), answer)[-ANSWERS_MAX:]
        reply = reply_for(command.assess_command_id, answer)
        return Decision(state.model_copy(update={"answers": answers}),
                        (Outgoing(RISK_REPLIES, command.payment_id, reply),), notes=(answer,))

    @staticmethod
    def _failure(state: AccountRisk | None, notice: RecordRiskOutcome) -> Decision[AccountRisk]:
        """Mark a failure after approval on the payer's history, to be named in the payer's next reply."""
        if state is None or not knows(state.payer, notice.payment_id):
            return Decision(state)  # its payment has left the window (or the account was forgotten): no effect
        if any(r.outcome == notice.outcome for r in state.payer.recent if r.payment_id == notice.payment_id):
            return Decision(state)  # told twice
        payer = record_outcome(state.payer, notice.payment_id, notice.outcome)
        failures = (*state.failures, notice.payment_id)[-FAILURES_MAX:]
        return Decision(state.model_copy(update={"payer": payer, "failures": failures}))

    # -- timers: an account is forgotten once nothing it holds can count any more --------------------

    def next_deadline(self, state: AccountRisk) -> datetime | None:
        times = [t for t in (state.payer.last_at, state.payee.last_at, *(a.at for a in state.answers[-1:]))
                 if t is not None]
        return max(times) + IDLE_FORGET + self.retention + FORGET_MARGIN if times else None

    def fire_timers(self, key: str, state: AccountRisk, now: datetime) -> Decision[AccountRisk]:
        at = self.next_deadline(state)
        return Decision(None) if at is not None and at <= now else Decision(state)

    # -- after a commit: metrics (payments.runtime.logic.Observing) ------------------------------

    def observe(self, notes: Sequence[object]) -> None:
        if self.observer is not None:
            self.observer([note for note in notes if isinstance(note, Answer)])


class Observer:
    """What the service counts of its committed answers (consumers/risk/telemetry.py implements it)."""

    def __call__(self, answers: list[Answer]) -> None:
        raise NotImplementedError
