"""Machine-readable codes carried as Avro strings (not Avro enums: those are hard to evolve).

Adding a value is a change consumers must learn first (an old reader rejects an unknown
value as InvalidMessageError); removing one is never done.
"""

from __future__ import annotations

from typing import Literal, get_args

RejectCode = Literal[
    "AMOUNT_NOT_POSITIVE",
    "AMOUNT_OVER_LIMIT",
    "UNKNOWN_CURRENCY",
    "SAME_PAYER_AND_PAYEE",
    "MISSING_IDEMPOTENCY_KEY",
    "MALFORMED_ID",
    "IDEMPOTENCY_KEY_REUSED",
    "UNKNOWN_PAYMENT",
    "INVALID_STATE",
    "CURRENCY_MISMATCH",
    "REFUND_EXCEEDS_SETTLED",
    "UNKNOWN_PARTNER",  # since PaymentRejected v2
    "DUPLICATE_REQUEST",  # since PaymentRejected/RefundRejected v2: see original_payment_id / original_refund_id
    "REFUND_WINDOW_CLOSED",  # a refund asked for longer after the settlement than the refund window
    "REQUEST_EXPIRED",  # an InitiatePayment requested longer ago than the saga's retention
    "REQUESTED_IN_FUTURE",  # an InitiatePayment requested ahead of the saga's clock by more than the skew allowed
]
REJECT_CODES: tuple[str, ...] = get_args(RejectCode)

RiskDecision = Literal["APPROVE", "DECLINE"]
FundsReservationFailureCode = Literal["INSUFFICIENT_FUNDS", "ACCOUNT_UNKNOWN", "TIMEOUT"]
FailureStage = Literal["VALIDATION", "RISK", "FUNDS", "PARTNER", "TIMEOUT"]
ReservationOutcome = Literal["RESERVED", "INSUFFICIENT_FUNDS", "ACCOUNT_UNKNOWN"]
ReleaseOutcome = Literal["RELEASED", "UNKNOWN_HOLD"]
CommitOutcome = Literal["COMMITTED", "UNKNOWN_HOLD"]
SubmissionOutcome = Literal["ACCEPTED", "DECLINED", "ERROR"]
PartnerStatus = Literal["ACCEPTED", "DECLINED", "NOT_FOUND", "PENDING"]
SettlementKind = Literal["SETTLEMENT", "REFUND"]
DuplicateVerdict = Literal["SAME_REQUEST", "KEY_REUSED"]
ClaimVerdict = Literal["GRANTED", "SAME_REQUEST", "KEY_REUSED"]
CommandType = Literal["InitiatePayment", "CancelPayment", "RefundPayment"]
