"""Participant commands and replies (risk, funds, partner). Keys: payment id, except funds commands,
which are keyed by the account they touch (see docs/contracts.md)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from payments.contracts.base import ParticipantCommand, ParticipantReply
from payments.contracts.codes import (
    CommitOutcome,
    PartnerStatus,
    ReleaseOutcome,
    ReservationOutcome,
    RiskDecision,
    SubmissionOutcome,
)
from payments.contracts.events import FeatureContribution, ScoreBp, ShadowScore
from payments.contracts.topics import (
    FUNDS_COMMANDS,
    FUNDS_REPLIES,
    PARTNER_COMMANDS,
    PARTNER_REPLIES,
    RISK_COMMANDS,
    RISK_OUTCOMES,
    RISK_REPLIES,
    RISK_SCORING,
)
from payments.contracts.types import Double, Int, Long, Str, UtcMillis
from payments.money import Money


class AssessRisk(ParticipantCommand):
    """Keyed by the payee account since v2: the risk service's first stage keeps the payee's history."""

    AVRO_NAME: ClassVar[str] = "payments.risk.AssessRisk"
    TOPIC: ClassVar[str] = RISK_COMMANDS

    payer_account: Str
    payee_account: Str
    amount: Money
    partner: Str = ""  # since v2
    initiated_at: UtcMillis | None = None  # since v2: the features' time; None from v1 (issued_at then)
    attempt: Int = 1  # since v2


class ScorePayment(ParticipantCommand):
    """Internal to the risk service, keyed by the payer account: the payee's side done, the payer's to do."""

    AVRO_NAME: ClassVar[str] = "payments.risk.ScorePayment"
    TOPIC: ClassVar[str] = RISK_SCORING

    assess_command_id: Str
    payer_account: Str
    payee_account: Str
    amount: Money
    partner: Str
    initiated_at: UtcMillis
    attempt: Int
    payee_seq: Long
    payee_features: dict[Str, Double]


class RecordRiskOutcome(ParticipantCommand):
    """From the saga, keyed by the payer account: a payment risk approved failed afterwards. No reply."""

    AVRO_NAME: ClassVar[str] = "payments.risk.RecordRiskOutcome"
    TOPIC: ClassVar[str] = RISK_OUTCOMES

    payer_account: Str
    outcome: Literal["FAILED"]
    reason_code: Str


class RiskAssessmentCompleted(ParticipantReply):
    """The answer; since v2 with what it was made from (the fields RiskAssessed records, docs/risk.md)."""

    AVRO_NAME: ClassVar[str] = "payments.risk.RiskAssessmentCompleted"
    TOPIC: ClassVar[str] = RISK_REPLIES

    score_bp: ScoreBp
    decision: RiskDecision
    reasons: list[Str]
    model_version: Str
    features: dict[Str, Double] = Field(default_factory=dict)
    contributions: list[FeatureContribution] = Field(default_factory=list)
    payer_seq: Long = 0
    payee_seq: Long = 0
    failures_before: list[Str] = Field(default_factory=list)
    shadow: ShadowScore | None = None


class ReserveFunds(ParticipantCommand):
    AVRO_NAME: ClassVar[str] = "payments.funds.ReserveFunds"
    TOPIC: ClassVar[str] = FUNDS_COMMANDS

    account: Str
    amount: Money
    hold_id: Str


class FundsReservationResult(ParticipantReply):
    AVRO_NAME: ClassVar[str] = "payments.funds.FundsReservationResult"
    TOPIC: ClassVar[str] = FUNDS_REPLIES

    hold_id: Str
    outcome: ReservationOutcome
    available: Money | None = None


class ReleaseFunds(ParticipantCommand):
    AVRO_NAME: ClassVar[str] = "payments.funds.ReleaseFunds"
    TOPIC: ClassVar[str] = FUNDS_COMMANDS

    account: Str
    hold_id: Str


class FundsReleaseResult(ParticipantReply):
    AVRO_NAME: ClassVar[str] = "payments.funds.FundsReleaseResult"
    TOPIC: ClassVar[str] = FUNDS_REPLIES

    hold_id: Str
    outcome: ReleaseOutcome


class CommitFunds(ParticipantCommand):
    AVRO_NAME: ClassVar[str] = "payments.funds.CommitFunds"
    TOPIC: ClassVar[str] = FUNDS_COMMANDS

    account: Str
    hold_id: Str
    payee_account: Str


class FundsCommitResult(ParticipantReply):
    AVRO_NAME: ClassVar[str] = "payments.funds.FundsCommitResult"
    TOPIC: ClassVar[str] = FUNDS_REPLIES

    hold_id: Str
    outcome: CommitOutcome


class SubmitToPartner(ParticipantCommand):
    AVRO_NAME: ClassVar[str] = "payments.partner.SubmitToPartner"
    TOPIC: ClassVar[str] = PARTNER_COMMANDS

    partner: Str
    submission_id: Str
    amount: Money
    payer_account: Str
    payee_account: Str
    expires_at: UtcMillis | None = None  # since v2: never sent to the partner after this


class PartnerSubmissionResult(ParticipantReply):
    AVRO_NAME: ClassVar[str] = "payments.partner.PartnerSubmissionResult"
    TOPIC: ClassVar[str] = PARTNER_REPLIES

    submission_id: Str
    outcome: SubmissionOutcome
    partner_reference: Str | None = None
    reason_code: Str | None = None


class QueryPartnerPayment(ParticipantCommand):
    AVRO_NAME: ClassVar[str] = "payments.partner.QueryPartnerPayment"
    TOPIC: ClassVar[str] = PARTNER_COMMANDS

    partner: Str
    submission_id: Str
    expires_at: UtcMillis | None = None  # since v2: the answer is no longer awaited after this


class PartnerQueryResult(ParticipantReply):
    AVRO_NAME: ClassVar[str] = "payments.partner.PartnerQueryResult"
    TOPIC: ClassVar[str] = PARTNER_REPLIES

    submission_id: Str
    status: PartnerStatus
    partner_reference: Str | None = None
