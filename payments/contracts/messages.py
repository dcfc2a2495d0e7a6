"""Every message model, and `MESSAGE_TYPES`: Avro record full name -> model class.

A model registers itself when its module is imported (`Message.__pydantic_init_subclass__`), so a new
record needs its model in one of the modules imported here and its schema file, nothing else.
"""

from __future__ import annotations

from typing import Final

from payments.contracts.base import (
    Command,
    Message,
    ParticipantCommand,
    ParticipantReply,
    SagaEvent,
    registered_messages,
)
from payments.contracts.commands import CancelPayment, InitiatePayment, RefundPayment
from payments.contracts.events import (
    CompensationFailed,
    FundsCommitted,
    FundsReleased,
    FundsReservationFailed,
    FundsReserved,
    ParticipantCommandIssued,
    PartnerAccepted,
    PartnerDeclined,
    PaymentCancelled,
    PaymentFailed,
    PaymentInitiated,
    PaymentRefunded,
    PaymentRejected,
    PaymentSettled,
    RefundRejected,
    RiskAssessed,
    SubmittedToPartner,
)
from payments.contracts.intake import DuplicateCommand, KeyClaim, KeyClaimResult
from payments.contracts.participants import (
    AssessRisk,
    CommitFunds,
    FundsCommitResult,
    FundsReleaseResult,
    FundsReservationResult,
    PartnerQueryResult,
    PartnerSubmissionResult,
    QueryPartnerPayment,
    RecordRiskOutcome,
    ReleaseFunds,
    ReserveFunds,
    RiskAssessmentCompleted,
    ScorePayment,
    SubmitToPartner,
)
from payments.contracts.settlements import SettlementEvent

# Importing the modules above defined every model; each registered itself under its Avro name.
MESSAGE_TYPES: Final[dict[str, type[Message]]] = registered_messages()

__all__ = [
    "MESSAGE_TYPES",
    "AssessRisk",
    "CancelPayment",
    "Command",
    "CommitFunds",
    "CompensationFailed",
    "DuplicateCommand",
    "FundsCommitResult",
    "FundsCommitted",
    "FundsReleaseResult",
    "FundsReleased",
    "FundsReservationFailed",
    "FundsReservationResult",
    "FundsReserved",
    "InitiatePayment",
    "KeyClaim",
    "KeyClaimResult",
    "Message",
    "ParticipantCommand",
    "ParticipantCommandIssued",
    "ParticipantReply",
    "PartnerAccepted",
    "PartnerDeclined",
    "PartnerQueryResult",
    "PartnerSubmissionResult",
    "PaymentCancelled",
    "PaymentFailed",
    "PaymentInitiated",
    "PaymentRefunded",
    "PaymentRejected",
    "PaymentSettled",
    "QueryPartnerPayment",
    "RecordRiskOutcome",
    "RefundPayment",
    "RefundRejected",
    "ReleaseFunds",
    "ReserveFunds",
    "RiskAssessed",
    "RiskAssessmentCompleted",
    "SagaEvent",
    "ScorePayment",
    "SettlementEvent",
    "SubmitToPartner",
    "SubmittedToPartner",
]
