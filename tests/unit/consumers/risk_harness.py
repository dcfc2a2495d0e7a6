"""The risk service without Kafka: its two stages and the failure notices over one partition's states, with
the saga's side played by the test (it records the first reply of each payment, as RiskAssessed)."""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from consumers.risk.features import Attempt
from consumers.risk.logic import AccountRisk, RiskLogic
from consumers.risk.replay import Assessed
from payments.contracts.messages import Message
from payments.contracts.participants import AssessRisk, RecordRiskOutcome, RiskAssessmentCompleted, ScorePayment
from payments.contracts.topics import RISK_COMMANDS, RISK_OUTCOMES, RISK_REPLIES, RISK_SCORING
from payments.money import Money
from tests.unit.consumers.helpers import incoming

TOPIC_OF = {AssessRisk: RISK_COMMANDS, ScorePayment: RISK_SCORING, RecordRiskOutcome: RISK_OUTCOMES}


def assess_risk(payment_id: str | None = None, *, payer: str = "acc-alice", payee: str = "acc-bob",
                amount: Money | None = None, at: datetime, attempt: int = 1, partner: str = "simbank",
                issued_at: datetime | None = None) -> AssessRisk:
    return AssessRisk(payment_id=payment_id or str(uuid.uuid4()), command_id=str(uuid.uuid4()),
                      issued_at=issued_at or at, payer_account=payer, payee_account=payee,
                      amount=amount or Money.parse("12.50", "EUR"), partner=partner, initiated_at=at, attempt=attempt)


def failed(payment_id: str, payer: str, at: datetime) -> RecordRiskOutcome:
    return RecordRiskOutcome(payment_id=payment_id, command_id=str(uuid.uuid4()), issued_at=at, payer_account=payer,
                             outcome="FAILED", reason_code="INSUFFICIENT_FUNDS")


@dataclass
class Harness:
    logic: RiskLogic
    states: dict[str, AccountRisk] = field(default_factory=dict)
    queues: dict[str, deque[Message]] = field(default_factory=lambda: {t: deque() for t in TOPIC_OF.values()})
    replies: list[RiskAssessmentCompleted] = field(default_factory=list)
    terms: dict[str, AssessRisk] = field(default_factory=dict)
    kept: dict[str, RiskAssessmentCompleted] = field(default_factory=dict)  # the saga's first reply per payment
    offset: int = 0

    def send(self, message: AssessRisk | RecordRiskOutcome) -> None:
        if isinstance(message, AssessRisk):
            self.terms.setdefault(message.payment_id, message)
        self.queues[TOPIC_OF[type(message)]].append(message)

    def step(self, topic: str, now: datetime | None = None) -> None:
        """Decide the next record of `topic` as the loop would: its key's state in, the new state kept."""
        message = self.queues[topic].popleft()
        key = self.logic.key_of(message, None)  # type: ignore[arg-type]  # the risk logic reads no envelope
        self.offset += 1
        at = now or getattr(message, "issued_at")  # noqa: B009
        decision = self.logic.decide(self.states.get(key), incoming(message, topic, key=key, offset=self.offset), at)
        if decision.state is None:
            self.states.pop(key, None)
        else:
            self.states[key] = decision.state
        for out in decision.outgoing:
            assert out.destination in self.logic.output_topics
            if out.destination == RISK_REPLIES:
                assert out.key == out.message.payment_id and isinstance(out.message, RiskAssessmentCompleted)
                self.replies.append(out.message)
                self.kept.setdefault(out.message.payment_id, out.message)
            else:
                assert isinstance(out.message, ScorePayment) and out.key == out.message.payer_account
                self.queues[out.destination].append(out.message)

    def drain(self) -> None:
        """Every queued record, payee stage first, then the payer stage, then notices, until none is left."""
        while any(self.queues.values()):
            for topic in (RISK_COMMANDS, RISK_SCORING, RISK_OUTCOMES):
                while self.queues[topic]:
                    self.step(topic)

    def assess(self, command: AssessRisk) -> RiskAssessmentCompleted:
        """One AssessRisk through both stages; its reply."""
        self.send(command)
        self.step(RISK_COMMANDS)
        self.step(RISK_SCORING)
        return self.replies[-1]

    def recorded(self) -> list[Assessed]:
        """What payments.events would hold of each payment the saga kept a reply for."""
        found = []
        for payment_id, reply in self.kept.items():
            command = self.terms[payment_id]
            found.append(Assessed(
                Attempt(payment_id, command.initiated_at or command.issued_at, command.payer_account,
                        command.payee_account, command.amount, command.partner),
                reply.decision, reply.payer_seq, reply.payee_seq, tuple(reply.failures_before), reply.features,
                reply.model_version))
        return found


def later(at: datetime, seconds: float) -> datetime:
    return at + timedelta(seconds=seconds)
