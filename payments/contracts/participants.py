"""Participant commands and replies (risk, funds, partner). Keys: payment id, except funds commands,
which are keyed by the account they touch (see docs/contracts.md)."""

from __future__ import annotations

from typing import ClassVar

from payments.contracts.base import ParticipantCommand, ParticipantReply
from payments.contracts.codes import (
    CommitOutcome,
    PartnerStatus,
    ReleaseOutcome,
    ReservationOutcome,
    RiskDecision,
    SubmissionOutcome,
)
from payments.contracts.events import ScoreBp
from payments.contracts.topics import (
    FUNDS_COMMANDS,
    FUNDS_REPLIES,
    PARTNER_COMMANDS,
    PARTNER_REPLIES,
    RISK_COMMANDS,
    RISK_REPLIES,
)
from payments.contracts.types import Str, UtcMillis
from payments.money import Money


class AssessRisk(ParticipantCommand):
    AVRO_NAME: ClassVar[str] = "payments.risk.AssessRisk"
    TOPIC: ClassVar[str] = RISK_COMMANDS

    payer_account: Str
    payee_account: Str
    amount: Money


class RiskAssessmentCompleted(ParticipantReply):
    AVRO_NAME: ClassVar[str] = "payments.risk.RiskAssessmentCompleted"
    TOPIC: ClassVar[str] = RISK_REPLIES

    score_bp: ScoreBp
    decision: RiskDecision
    reasons: list[Str]
    model_version: Str


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
