"""Participant replies. A reply counts only if it answers a command the saga still waits for;
a stale, duplicate or unsolicited reply changes nothing and emits nothing.

Attempts of one step get distinct command ids, and a late reply to an earlier attempt of the step
still being awaited is accepted (the participant's answer is the same whichever copy it answers).
A partner's definitive answer (ACCEPTED / DECLINED) for this payment's submission id is accepted from
any submission or query the saga issued while the partner step is open, so a late ACCEPTED is never lost.
"""

from __future__ import annotations

from orchestrator.policy import POLICIES, Step
from orchestrator.state import SagaState, command_id, hold_id, submission_id
from orchestrator.steps import Draft, finish_release, issue, start_release
from payments.contracts.events import (
    CompensationFailed,
    FundsCommitted,
    FundsReservationFailed,
    FundsReserved,
    PartnerAccepted,
    PartnerDeclined,
    PaymentFailed,
    PaymentSettled,
    RiskAssessed,
    SubmittedToPartner,
)
from payments.contracts.participants import (
    FundsCommitResult,
    FundsReleaseResult,
    FundsReservationResult,
    PartnerQueryResult,
    PartnerSubmissionResult,
    RiskAssessmentCompleted,
)

_PARTNER_OPEN = frozenset({"SUBMITTED", "QUERYING_PARTNER"})


def _answers(state: SagaState | None, step: Step, reply_command_id: str) -> bool:
    """Whether `reply_command_id` is an attempt of `step` and `step` is what the saga awaits."""
    if state is None or state.awaiting is None or state.awaiting.step != step:
        return False
    attempts = range(1, state.awaiting.attempt + 1)
    return reply_command_id in {command_id(state.payment_id, step, n) for n in attempts}


def _exactly_awaited(state: SagaState | None, reply_command_id: str) -> bool:
    return state is not None and state.awaiting is not None and state.awaiting.command_id == reply_command_id


def risk_completed(draft: Draft, reply: RiskAssessmentCompleted) -> None:
    if not _answers(draft.state, "RISK", reply.command_id) or draft.current.status != "AWAITING_RISK":
        return
    draft.event(RiskAssessed, score_bp=reply.score_bp, decision=reply.decision, reasons=reply.reasons,
                model_version=reply.model_version, features=reply.features, contributions=reply.contributions,
                payer_seq=reply.payer_seq, payee_seq=reply.payee_seq, failures_before=reply.failures_before,
                shadow=reply.shadow)
    if reply.decision == "APPROVE":
        draft.send_awaited()
    else:
        draft.event(PaymentFailed, stage="RISK", reason_code="RISK_DECLINED",
                    detail="; ".join(reply.reasons) or "declined by risk")


def reservation_result(draft: Draft, reply: FundsReservationResult) -> None:
    state = draft.state
    if not _answers(state, "FUNDS_RESERVE", reply.command_id) or reply.hold_id != hold_id(reply.payment_id):
        return
    terms = draft.current.require_terms()
    if reply.outcome == "RESERVED":
        draft.event(FundsReserved, hold_id=reply.hold_id, amount=terms.amount)
        draft.event(SubmittedToPartner, partner=terms.partner, attempt=1, submission_id=submission_id(reply.payment_id))
        draft.send_awaited()
        return
    available = f"; available {reply.available.format()}" if reply.available is not None else ""
    detail = f"{reply.outcome} on {terms.payer_account}{available}"
    draft.event(FundsReservationFailed, reason_code=reply.outcome, detail=detail)
    draft.event(PaymentFailed, stage="FUNDS", reason_code=reply.outcome, detail=detail)


def release_result(draft: Draft, reply: FundsReleaseResult) -> None:
    state = draft.state
    if not _answers(state, "FUNDS_RELEASE", reply.command_id) or reply.hold_id != hold_id(reply.payment_id):
        return
    if draft.current.status not in ("RELEASING", "COMPENSATION_FAILED"):
        return
    finish_release(draft, reply.outcome)


def commit_result(draft: Draft, reply: FundsCommitResult) -> None:
    state = draft.state
    if not _answers(state, "FUNDS_COMMIT", reply.command_id) or reply.hold_id != hold_id(reply.payment_id):
        return
    current = draft.current
    if reply.outcome == "COMMITTED" and current.status in ("COMMITTING", "COMMIT_FAILED"):
        terms = current.require_terms()
        draft.event(FundsCommitted, hold_id=reply.hold_id, amount=terms.amount)
        draft.event(PaymentSettled, amount=terms.amount, partner=terms.partner,
                    partner_reference=current.partner_reference or "", payer_account=terms.payer_account,
                    payee_account=terms.payee_account)
    elif reply.outcome == "UNKNOWN_HOLD" and current.status == "COMMITTING":
        # The partner has paid but the hold is gone: nothing automatic is safe, an operator must act.
        assert current.awaiting is not None
        draft.event(CompensationFailed, step="FUNDS_COMMIT", attempts=current.awaiting.attempt,
                    detail=f"hold {reply.hold_id} unknown to the funds service after the partner accepted")


# -- partner -------------------------------------------------------------------------------------


def _issued_partner_ids(state: SagaState) -> set[str]:
    """Every partner command id the saga may have issued for this payment so far."""
    ids: set[str] = set()
    query_max = POLICIES["PARTNER_QUERY"].attempts_max
    for attempt in range(1, state.submit_attempt + 1):
        ids.add(command_id(state.payment_id, "PARTNER_SUBMIT", attempt))
        ids.update(command_id(state.payment_id, "PARTNER_QUERY", n, attempt) for n in range(1, query_max + 1))
    return ids


def _definitive(draft: Draft, reply_command_id: str, reply_submission_id: str) -> bool:
    state = draft.state
    return (state is not None and state.status in _PARTNER_OPEN
            and reply_submission_id == submission_id(state.payment_id)
            and reply_command_id in _issued_partner_ids(state))


def _accepted(draft: Draft, partner_reference: str | None) -> None:
    terms = draft.current.require_terms()
    draft.event(PartnerAccepted, partner=terms.partner, partner_reference=partner_reference or "")
    draft.send_awaited()


def _declined(draft: Draft, reason_code: str | None) -> None:
    terms = draft.current.require_terms()
    code = reason_code or "DECLINED"
    draft.event(PartnerDeclined, partner=terms.partner, reason_code=code, detail=f"{terms.partner} declined: {code}")
    draft.send_awaited()


def submission_result(draft: Draft, reply: PartnerSubmissionResult) -> None:
    if reply.outcome in ("ACCEPTED", "DECLINED"):
        if not _definitive(draft, reply.command_id, reply.submission_id):
            return
        if reply.outcome == "ACCEPTED":
            _accepted(draft, reply.partner_reference)
        else:
            _declined(draft, reply.reason_code)
        return
    # ERROR: the outcome is unknown. Never resubmit blindly: ask the partner first.
    if _exactly_awaited(draft.state, reply.command_id) and draft.current.status == "SUBMITTED":
        issue(draft, "PARTNER_QUERY", 1, "PARTNER_ERROR", reply.reason_code or "partner error")


def query_result(draft: Draft, reply: PartnerQueryResult) -> None:
    if reply.status in ("ACCEPTED", "DECLINED"):
        if not _definitive(draft, reply.command_id, reply.submission_id):
            return
        if reply.status == "ACCEPTED":
            _accepted(draft, reply.partner_reference)
        else:
            _declined(draft, None)
        return
    if not _exactly_awaited(draft.state, reply.command_id) or draft.current.status != "QUERYING_PARTNER":
        return
    if reply.status == "PENDING":
        return  # still processing: the query timer asks again after its backoff
    state = draft.current  # NOT_FOUND: the partner never got it, so submitting again cannot pay twice
    if state.submit_attempt < POLICIES["PARTNER_SUBMIT"].attempts_max:
        terms = state.require_terms()
        draft.event(SubmittedToPartner, partner=terms.partner, attempt=state.submit_attempt + 1,
                    submission_id=submission_id(state.payment_id))
        draft.send_awaited()
    else:
        start_release(draft, "PARTNER_NOT_FOUND",
                      f"partner has no record after {state.submit_attempt} submissions")
