"""Partner gateway participant: SubmitToPartner / QueryPartnerPayment -> the partner's answer.

The call to the partner is the effect this service exists for, and no Kafka transaction can include
it. So `decide` does not call: it records the call in the payment's state (committed, with the
command's offset), the loop makes the call after that commit (payments.runtime.calls, many at once),
and `complete` turns the answer into the reply in a later transaction. No transaction waits on the
network, and a command is never called for twice by one owner.

Exactly-once toward the partner rests on two rules:
  * the partner is idempotent by `submission_id` (sent as its Idempotency-Key): a resubmission returns
    its recorded outcome, money never moves twice;
  * a call recorded but not answered when its owner died may have reached the partner: the new owner
    asks the partner before it submits (`recovered`, see consumers.partner.caller), and the saga
    resolves an unknown outcome (ERROR) with QueryPartnerPayment before it ever submits again.

Each command carries `expires_at`, the end of the saga's window for it: the gateway never starts a
submission after it (the saga has moved on to asking), and answers ERROR / PARTNER_UNAVAILABLE instead.

State per payment: the calls out (by command id) and the answers given, so a redelivered command gets
its first reply back (same reply_id and content) without calling the partner again.

Retention: once no call is out, a payment's state is deleted `retention` after its last answer. A
command redelivered after that is long past its `expires_at`, so it is answered without a call
(ERROR / PARTNER_UNAVAILABLE for a submission, PENDING for a query): never a second submission.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import ClassVar, Final, Literal

from pydantic import BaseModel

from consumers.ids import reply_id
from payments.contracts.envelope import Envelope
from payments.contracts.messages import Message
from payments.contracts.participants import (
    PartnerQueryResult,
    PartnerSubmissionResult,
    QueryPartnerPayment,
    SubmitToPartner,
)
from payments.contracts.topics import PARTNER_COMMANDS, PARTNER_REPLIES
from payments.money import Money
from payments.runtime.logic import STATE_CONFIG, Call, Completion, Decision, Forgets, Incoming, JsonState, Outgoing

SERVICE: Final = "partner"
ANSWERS_MAX: Final = 64  # per payment: a few submissions and queries at most
# A command without expires_at (SubmitToPartner / QueryPartnerPayment v1) may be sent this long after issue.
DEFAULT_CALL_WINDOW: Final = timedelta(seconds=60)
RETENTION: Final = timedelta(days=7)
# Reason codes of the gateway's own ERROR answers (the partner's codes are passed through verbatim).
TIMEOUT: Final = "TIMEOUT"  # the submission may have reached the partner; its outcome is unknown
PARTNER_UNAVAILABLE: Final = "PARTNER_UNAVAILABLE"  # not sent: the partner could not be reached before expires_at
PARTNER_NOT_CONFIGURED: Final = "PARTNER_NOT_CONFIGURED"  # the gateway has no endpoint for this partner


class PartnerAnswer(BaseModel):
    model_config = STATE_CONFIG

    kind: Literal["submit", "query"]
    submission_id: str
    code: str  # SubmissionOutcome for submit, PartnerStatus for query
    partner_reference: str | None = None
    reason_code: str | None = None


class PendingCall(BaseModel):
    """A call recorded before it goes out: everything needed to make it, or to recover it after a crash."""

    model_config = STATE_CONFIG

    kind: Literal["submit", "query"]
    command_id: str
    submission_id: str
    partner: str
    expires_at: datetime
    amount: Money | None = None
    payer_account: str | None = None
    payee_account: str | None = None
    traceparent: str | None = None  # the asking command's trace context: the call's span joins its trace

    def unanswered(self, reason_code: str) -> PartnerAnswer:
        """The answer when nothing was learnt: ERROR for a submission, PENDING for a query."""
        if self.kind == "submit":
            return PartnerAnswer(kind="submit", submission_id=self.submission_id, code="ERROR",
                                 reason_code=reason_code)
        return PartnerAnswer(kind="query", submission_id=self.submission_id, code="PENDING")


class PartnerState(BaseModel):
    model_config = STATE_CONFIG

    pending: dict[str, PendingCall] = {}
    answers: dict[str, PartnerAnswer] = {}
    last_at: datetime | None = None  # the last answer (retention counts from it)

    def calling(self, call: PendingCall) -> PartnerState:
        return self.model_copy(update={"pending": {**self.pending, call.command_id: call}})

    def answered(self, command_id: str, answer: PartnerAnswer, now: datetime) -> PartnerState:
        kept = list(self.answers.items())[-(ANSWERS_MAX - 1):]
        pending = {cid: call for cid, call in self.pending.items() if cid != command_id}
        return PartnerState(pending=pending, answers={**dict(kept), command_id: answer}, last_at=now)


def reply_of(payment_id: str, command_id: str, answer: PartnerAnswer) -> PartnerSubmissionResult | PartnerQueryResult:
    common = {"payment_id": payment_id, "reply_id": reply_id(SERVICE, command_id), "command_id": command_id,
              "submission_id": answer.submission_id, "partner_reference": answer.partner_reference}
    if answer.kind == "submit":
        return PartnerSubmissionResult.model_validate({**common, "outcome": answer.code,
                                                       "reason_code": answer.reason_code})
    return PartnerQueryResult.model_validate({**common, "status": answer.code})


def pending_call(command: SubmitToPartner | QueryPartnerPayment, traceparent: str | None = None) -> PendingCall:
    expires_at = command.expires_at or command.issued_at + DEFAULT_CALL_WINDOW
    if isinstance(command, SubmitToPartner):
        return PendingCall(kind="submit", command_id=command.command_id, submission_id=command.submission_id,
                           partner=command.partner, expires_at=expires_at, amount=command.amount,
                           payer_account=command.payer_account, payee_account=command.payee_account,
                           traceparent=traceparent)
    return PendingCall(kind="query", command_id=command.command_id, submission_id=command.submission_id,
                       partner=command.partner, expires_at=expires_at, traceparent=traceparent)


class PartnerGatewayLogic(JsonState[PartnerState], Forgets[PartnerState]):
    """The `Logic` (and `Calling`) of the partner service; its calls are made by consumers.partner.caller."""

    state_model = PartnerState
    service: ClassVar[str] = SERVICE
    input_topics: ClassVar[tuple[str, ...]] = (PARTNER_COMMANDS,)
    output_topics: ClassVar[tuple[str, ...]] = (PARTNER_REPLIES,)

    def __init__(self, retention: timedelta = RETENTION) -> None:
        self.retention = retention

    def forget_at(self, state: PartnerState) -> datetime | None:
        if state.pending or state.last_at is None:
            return None  # a call is out: its answer must find the state
        return state.last_at + self.retention

    def key_of(self, message: Message, envelope: Envelope) -> str:
        return message.payment_id

    def decide(self, state: PartnerState | None, incoming: Incoming, now: datetime) -> Decision[PartnerState]:
        command = incoming.message
        if not isinstance(command, SubmitToPartner | QueryPartnerPayment):
            return Decision(state)
        current = state or PartnerState()
        answer = current.answers.get(command.command_id)
        if answer is not None:  # a redelivered command: the same reply again
            return Decision(current, (Outgoing(PARTNER_REPLIES, command.payment_id,
                                               reply_of(command.payment_id, command.command_id, answer)),))
        if command.command_id in current.pending:  # the call is out: its answer comes through complete()
            return Decision(current)
        call = pending_call(command, incoming.envelope.traceparent)
        if now >= call.expires_at:  # the saga stopped waiting for it: never send it now
            return self._answer(current, command.payment_id, command.command_id,
                                call.unanswered(PARTNER_UNAVAILABLE), now)
        return Decision(current.calling(call))

    # -- Calling --------------------------------------------------------------------------------

    def calls(self, state: PartnerState) -> tuple[Call, ...]:
        return tuple(Call(command_id, call) for command_id, call in state.pending.items())

    def complete(self, state: PartnerState, completion: Completion, now: datetime) -> Decision[PartnerState]:
        answer = completion.result
        assert isinstance(answer, PartnerAnswer), f"a partner call returned {type(answer).__name__}"
        return self._answer(state, completion.key, completion.call_id, answer, now)

    @staticmethod
    def _answer(state: PartnerState, payment_id: str, command_id: str,
                answer: PartnerAnswer, now: datetime) -> Decision[PartnerState]:
        reply = reply_of(payment_id, command_id, answer)
        return Decision(state.answered(command_id, answer, now), (Outgoing(PARTNER_REPLIES, payment_id, reply),))
