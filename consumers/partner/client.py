"""The port a payment partner adapter implements. The gateway talks only to this interface.

Contract a real adapter must honour (the simulator does, and its tests show how):
  * `submit` is idempotent by `submission_id`: submitting an id the partner already has returns the
    partner's recorded outcome for it and never moves money a second time;
  * `query` tells what the partner knows about a submission id (NOT_FOUND if nothing), so the saga can
    resolve an unknown outcome before it resubmits;
  * a call whose answer is lost (timeout) returns `SubmissionOutcome("ERROR", reason_code="TIMEOUT")`;
    transport failures either become such an ERROR or raise `PartnerUnavailableError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from consumers.errors import ParticipantError
from payments.contracts.codes import PartnerStatus
from payments.contracts.codes import SubmissionOutcome as SubmissionCode
from payments.money import Money

TIMEOUT = "TIMEOUT"
PARTNER_UNAVAILABLE = "PARTNER_UNAVAILABLE"


class PartnerError(ParticipantError):
    """Root of partner adapter errors."""


class PartnerUnavailableError(PartnerError):
    """The partner could not be reached; nothing is known about the submission."""


@dataclass(frozen=True)
class SubmissionOutcome:
    outcome: SubmissionCode
    partner_reference: str | None = None
    reason_code: str | None = None  # the partner's own code for DECLINED/ERROR, passed through verbatim


@dataclass(frozen=True)
class QueryOutcome:
    status: PartnerStatus
    partner_reference: str | None = None


class PartnerClient(Protocol):
    def submit(self, submission_id: str, amount: Money, payer: str, payee: str) -> SubmissionOutcome: ...

    def query(self, submission_id: str) -> QueryOutcome: ...
