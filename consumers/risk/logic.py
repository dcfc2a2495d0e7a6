"""Risk participant: AssessRisk -> RiskAssessmentCompleted, pure, one answer per command id.

State per payment: the answers already given, by command id. A redelivered or re-sent AssessRisk
gets exactly the reply it got the first time (same reply_id, same score, same model version) even
if the model file changed in between; nothing new is decided.

Retention: a payment's answers are deleted `retention` after the last command about it (the saga asks
within minutes). An AssessRisk issued `retention` or longer ago is dead-lettered (StaleCommand), never
scored: its first answer may have been forgotten, and a new score under the same reply id must not be.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel

from consumers.ids import reply_id
from consumers.risk.scoring import RiskModel, assess, load_model
from payments.contracts.codes import RiskDecision
from payments.contracts.envelope import Envelope
from payments.contracts.messages import Message
from payments.contracts.participants import AssessRisk, RiskAssessmentCompleted
from payments.contracts.topics import RISK_COMMANDS, RISK_REPLIES
from payments.runtime.logic import STATE_CONFIG, Decision, Forgets, Incoming, InputRejected, JsonState, Outgoing

SERVICE = "risk"
ANSWERS_MAX = 64  # per payment; the saga asks a handful of times at most
RETENTION = timedelta(days=7)


class RiskAnswer(BaseModel):
    model_config = STATE_CONFIG

    score_bp: int
    decision: RiskDecision
    reasons: tuple[str, ...]
    model_version: str


class RiskState(BaseModel):
    """Answers given for one payment, by command id (insertion order = order answered)."""

    model_config = STATE_CONFIG

    answers: dict[str, RiskAnswer] = {}
    last_at: datetime | None = None  # the last command answered (retention counts from it)


def reply_for(command: AssessRisk, answer: RiskAnswer) -> RiskAssessmentCompleted:
    return RiskAssessmentCompleted(
        payment_id=command.payment_id, reply_id=reply_id(SERVICE, command.command_id),
        command_id=command.command_id, score_bp=answer.score_bp, decision=answer.decision,
        reasons=list(answer.reasons), model_version=answer.model_version)


class RiskLogic(JsonState[RiskState], Forgets[RiskState]):
    """The `Logic` of the risk service. The model is loaded once, at construction (not in decide)."""

    state_model = RiskState
    service: ClassVar[str] = SERVICE
    input_topics: ClassVar[tuple[str, ...]] = (RISK_COMMANDS,)
    output_topics: ClassVar[tuple[str, ...]] = (RISK_REPLIES,)

    def __init__(self, model: RiskModel | None = None, model_path: Path | None = None,
                 retention: timedelta = RETENTION) -> None:
        self.model = model if model is not None else load_model(model_path)
        self.retention = retention

    def forget_at(self, state: RiskState) -> datetime | None:
        return None if state.last_at is None else state.last_at + self.retention

    def key_of(self, message: Message, envelope: Envelope) -> str:
        return message.payment_id

    def decide(self, state: RiskState | None, incoming: Incoming, now: datetime) -> Decision[RiskState]:
        command = incoming.message
        if not isinstance(command, AssessRisk):
            return Decision(state)  # not ours (nothing else is published here): ignore, keep state
        current = state or RiskState()
        answer = current.answers.get(command.command_id)
        if answer is None and command.issued_at <= now - self.retention:
            raise InputRejected("StaleCommand", "stale_command", f"AssessRisk {command.command_id} was issued at "
                                f"{command.issued_at.isoformat()}, {self.retention} or more ago: not scored")
        if answer is None:
            result = assess(self.model, command.payer_account, command.payee_account, command.amount)
            answer = RiskAnswer(score_bp=result.score_bp, decision=result.decision, reasons=result.reasons,
                                model_version=result.model_version)
            kept = list(current.answers.items())[-(ANSWERS_MAX - 1):]
            current = RiskState(answers={**dict(kept), command.command_id: answer}, last_at=now)
        reply = reply_for(command, answer)
        return Decision(current, (Outgoing(RISK_REPLIES, command.payment_id, reply),))
