"""Saga events decided by the orchestrator (topic payments.events, key payment_id)."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from payments.contracts.base import SagaEvent
from payments.contracts.codes import FailureStage, FundsReservationFailureCode, RejectCode, RiskDecision
from payments.contracts.types import Double, Int, Long, Str, UtcMillis
from payments.money import Money

ScoreBp = Annotated[Int, Field(ge=0, le=10_000)]


class PaymentInitiated(SagaEvent):
    AVRO_NAME: ClassVar[str] = "payments.events.PaymentInitiated"

    payer_account: Str
    payee_account: Str
    amount: Money
    partner: Str
    reference: Str | None = None
    idempotency_key: Str
    request_hash: Str
    published_at: UtcMillis | None = None  # since v2: the upstream record's timestamp, as the intake took it


class PaymentRejected(SagaEvent):
    """A command was rejected before it had any effect; the payment may be unknown."""

    AVRO_NAME: ClassVar[str] = "payments.events.PaymentRejected"

    reason_code: RejectCode
    detail: Str
    idempotency_key: Str
    original_payment_id: Str | None = None  # since v2, with DUPLICATE_REQUEST


class FeatureContribution(BaseModel):
    """How much one feature raised a model's score (Avro record payments.risk.FeatureContribution)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    feature: Str
    bp: Int  # basis points the score falls when this feature alone is set to its training median


class ShadowScore(BaseModel):
    """A candidate model's score of a payment, in shadow: recorded, never acted on (payments.risk.ShadowScore)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_version: Str
    score_bp: ScoreBp
    decision: RiskDecision


class RiskAssessed(SagaEvent):
    """The risk service's answer, as the saga accepted it. Since v2 with what the answer was made from:
    the features, the top contributions of a model decline, the payment's positions in its payer's and
    payee's histories and the failures applied before it (a replay rebuilds the same features from these,
    docs/risk.md), and a shadow model's score."""

    AVRO_NAME: ClassVar[str] = "payments.events.RiskAssessed"

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


class FundsReserved(SagaEvent):
    AVRO_NAME: ClassVar[str] = "payments.events.FundsReserved"

    hold_id: Str
    amount: Money


class FundsReservationFailed(SagaEvent):
    AVRO_NAME: ClassVar[str] = "payments.events.FundsReservationFailed"

    reason_code: FundsReservationFailureCode
    detail: Str


class FundsReleased(SagaEvent):
    AVRO_NAME: ClassVar[str] = "payments.events.FundsReleased"

    hold_id: Str
    amount: Money
    reason: Str


class FundsCommitted(SagaEvent):
    AVRO_NAME: ClassVar[str] = "payments.events.FundsCommitted"

    hold_id: Str
    amount: Money


class SubmittedToPartner(SagaEvent):
    AVRO_NAME: ClassVar[str] = "payments.events.SubmittedToPartner"

    partner: Str
    attempt: Int
    submission_id: Str


class PartnerAccepted(SagaEvent):
    AVRO_NAME: ClassVar[str] = "payments.events.PartnerAccepted"

    partner: Str
    partner_reference: Str


class PartnerDeclined(SagaEvent):
    AVRO_NAME: ClassVar[str] = "payments.events.PartnerDeclined"

    partner: Str
    reason_code: Str  # the partner's own code, passed through verbatim
    detail: Str


class PaymentSettled(SagaEvent):
    AVRO_NAME: ClassVar[str] = "payments.events.PaymentSettled"

    amount: Money
    partner: Str
    partner_reference: Str
    payer_account: Str
    payee_account: Str


class PaymentFailed(SagaEvent):
    AVRO_NAME: ClassVar[str] = "payments.events.PaymentFailed"

    stage: FailureStage
    reason_code: Str
    detail: Str


class PaymentCancelled(SagaEvent):
    AVRO_NAME: ClassVar[str] = "payments.events.PaymentCancelled"

    reason: Str


class PaymentRefunded(SagaEvent):
    AVRO_NAME: ClassVar[str] = "payments.events.PaymentRefunded"

    refund_id: Str
    amount: Money
    refunded_total: Money


class RefundRejected(SagaEvent):
    AVRO_NAME: ClassVar[str] = "payments.events.RefundRejected"

    refund_id: Str
    reason_code: RejectCode
    original_refund_id: Str | None = None  # since v2, with DUPLICATE_REQUEST


class CompensationFailed(SagaEvent):
    """A compensating step kept failing; an operator must act."""

    AVRO_NAME: ClassVar[str] = "payments.events.CompensationFailed"

    step: Str
    attempts: Int
    detail: Str


class ParticipantCommandIssued(SagaEvent):
    """A participant command no other event implies: a retry, a partner query, a compensating release.

    Recorded so that the saga state, including its pending timer, stays the fold of its events.
    """

    AVRO_NAME: ClassVar[str] = "payments.events.ParticipantCommandIssued"

    step: Str
    attempt: Int
    command_id: Str
    reason: Str
    detail: Str
