"""Partner gateway participant: SubmitToPartner / QueryPartnerPayment -> the partner's answer.

This is the ONE participant whose `decide` performs I/O: it calls the partner. That call is the
effect the service exists for, and no transaction can include it, so exactly-once is achieved
differently from the other participants:
  * the partner is idempotent by `submission_id` (the saga derives it per payment and attempt): if
    the Kafka transaction that carried the reply aborts and the command is processed again, the
    partner returns its recorded outcome instead of paying twice;
  * an unknown outcome (ERROR/TIMEOUT) is resolved by the saga with QueryPartnerPayment before it
    ever submits again.
`decide` is still deterministic given the partner's answers, and the processor may call it again
for the same command after an abort, which is exactly the case the partner's idempotency covers.

State per payment: the answers given, by command id, so a redelivered command gets its first reply
back (same reply_id and content) without calling the partner again.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from consumers.ids import reply_id
from consumers.partner.client import (
    PARTNER_UNAVAILABLE,
    PartnerClient,
    PartnerUnavailableError,
    QueryOutcome,
    SubmissionOutcome,
)
from payments.contracts.envelope import Envelope
from payments.contracts.messages import Message
from payments.contracts.participants import (
    PartnerQueryResult,
    PartnerSubmissionResult,
    QueryPartnerPayment,
    SubmitToPartner,
)
from payments.contracts.topics import PARTNER_COMMANDS, PARTNER_REPLIES
from payments.runtime.logic import Decision, Incoming, JsonState, NoTimers, Outgoing

SERVICE = "partner"
ANSWERS_MAX = 64  # per payment: a few submissions and queries at most


class PartnerAnswer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["submit", "query"]
    submission_id: str
    code: str  # SubmissionOutcome for submit, PartnerStatus for query
    partner_reference: str | None = None
    reason_code: str | None = None


class PartnerState(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    answers: dict[str, PartnerAnswer] = {}

    def answered(self, command_id: str, answer: PartnerAnswer) -> PartnerState:
        kept = list(self.answers.items())[-(ANSWERS_MAX - 1):]
        return PartnerState(answers={**dict(kept), command_id: answer})


def reply_of(payment_id: str, command_id: str, answer: PartnerAnswer) -> PartnerSubmissionResult | PartnerQueryResult:
    common = {"payment_id": payment_id, "reply_id": reply_id(SERVICE, command_id), "command_id": command_id,
              "submission_id": answer.submission_id, "partner_reference": answer.partner_reference}
    if answer.kind == "submit":
        return PartnerSubmissionResult.model_validate({**common, "outcome": answer.code,
                                                       "reason_code": answer.reason_code})
    return PartnerQueryResult.model_validate({**common, "status": answer.code})


class PartnerGatewayLogic(JsonState[PartnerState], NoTimers[PartnerState]):
    """The `Logic` of the partner service; `client` is the partner adapter (the simulator by default)."""

    state_model = PartnerState
    service: ClassVar[str] = SERVICE
    input_topics: ClassVar[tuple[str, ...]] = (PARTNER_COMMANDS,)
    output_topics: ClassVar[tuple[str, ...]] = (PARTNER_REPLIES,)

    def __init__(self, client: PartnerClient) -> None:
        self.client = client

    def key_of(self, message: Message, envelope: Envelope) -> str:
        return message.payment_id

    def decide(self, state: PartnerState | None, incoming: Incoming, now: datetime) -> Decision[PartnerState]:
        command = incoming.message
        if not isinstance(command, SubmitToPartner | QueryPartnerPayment):
            return Decision(state)
        current = state or PartnerState()
        answer = current.answers.get(command.command_id)
        if answer is None:
            answer = self._submit(command) if isinstance(command, SubmitToPartner) else self._query(command)
            current = current.answered(command.command_id, answer)
        reply = reply_of(command.payment_id, command.command_id, answer)
        return Decision(current, (Outgoing(PARTNER_REPLIES, command.payment_id, reply),))

    def _submit(self, command: SubmitToPartner) -> PartnerAnswer:
        try:
            outcome = self.client.submit(command.submission_id, command.amount, command.payer_account,
                                         command.payee_account)
        except PartnerUnavailableError:
            outcome = SubmissionOutcome("ERROR", reason_code=PARTNER_UNAVAILABLE)
        return PartnerAnswer(kind="submit", submission_id=command.submission_id, code=outcome.outcome,
                             partner_reference=outcome.partner_reference, reason_code=outcome.reason_code)

    def _query(self, command: QueryPartnerPayment) -> PartnerAnswer:
        try:
            outcome = self.client.query(command.submission_id)
        except PartnerUnavailableError:
            outcome = QueryOutcome("PENDING")  # nothing learnt: the saga asks again later
        return PartnerAnswer(kind="query", submission_id=command.submission_id, code=outcome.status,
                             partner_reference=outcome.partner_reference)
