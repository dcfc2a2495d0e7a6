"""Upstream commands (InitiatePayment, CancelPayment, RefundPayment) and the intake's duplicate notices.

Idempotency has two layers. The intake deduplicates per client and key, whatever payment id a retry
carries, and tells the saga with a `DuplicateCommand` (answered here by `duplicate`). Within a
payment, the saga also keeps what was asked (idempotency key + request hash) in the payment's own
state, so a command for an existing payment under another key or with other terms is refused too.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from orchestrator.config import SagaConfig
from orchestrator.state import CANCEL_REQUESTED, TERMINAL, SagaState
from orchestrator.steps import Draft, issue
from payments.contracts.codes import RejectCode
from payments.contracts.commands import CancelPayment, InitiatePayment, RefundPayment
from payments.contracts.events import (
    PaymentCancelled,
    PaymentInitiated,
    PaymentRefunded,
    PaymentRejected,
    RefundRejected,
)
from payments.contracts.intake import DuplicateCommand
from payments.contracts.validation import validate_cancel, validate_initiate, validate_refund

# Until the payment is submitted to the partner it can be cancelled.
_CANCELLABLE_AT_ONCE = frozenset({"AWAITING_RISK"})
_CANCELLABLE_BY_RELEASE = frozenset({"RESERVING_FUNDS"})


def request_hash(command: InitiatePayment) -> str:
    """What makes two InitiatePayment commands 'the same request' for idempotency."""
    fields = (command.payment_id, command.payer_account, command.payee_account,
              str(command.amount.amount_minor), command.amount.currency, command.partner, command.reference or "")
    return hashlib.sha256("\x1f".join(fields).encode()).hexdigest()


def _reject(draft: Draft, code: RejectCode, detail: str, idempotency_key: str,
            original_payment_id: str | None = None) -> None:
    draft.event(PaymentRejected, reason_code=code, detail=detail, idempotency_key=idempotency_key,
                original_payment_id=original_payment_id)


def _initiate_problem(command: InitiatePayment, now: datetime, config: SagaConfig) -> tuple[RejectCode, str] | None:
    """Why a new payment cannot start from `command` (code, detail), or None when it can."""
    # A forgotten payment id (docs/saga.md, "Retention") must never be started again by an old command.
    if command.requested_at <= now - config.retention:
        return "REQUEST_EXPIRED", f"requested at {command.requested_at.isoformat()}, {config.retention} or more ago"
    if command.requested_at > now + config.clock_skew:
        return "REQUESTED_IN_FUTURE", (f"requested at {command.requested_at.isoformat()}, more than "
                                       f"{config.clock_skew} ahead of {now.isoformat()}")
    reasons = validate_initiate(command)
    if reasons:
        return reasons[0].code, reasons[0].detail
    if command.partner not in config.partners:
        return "UNKNOWN_PARTNER", (f"partner {command.partner[:100]!r} is not one of "
                                   f"{', '.join(sorted(config.partners))}")
    return None


def initiate(draft: Draft, command: InitiatePayment, config: SagaConfig, published_at: datetime | None = None) -> None:
    state = draft.state
    digest = request_hash(command)
    if state is not None and state.status == "REJECTED":
        return  # the original outcome stands; a rejected payment id is not reused
    if state is not None and state.status != "UNKNOWN":
        terms = state.require_terms()
        if terms.idempotency_key == command.idempotency_key and terms.request_hash == digest:
            return  # the same request again: nothing new happens
        what = "idempotency key" if terms.idempotency_key != command.idempotency_key else "parameters"
        _reject(draft, "IDEMPOTENCY_KEY_REUSED",
                f"payment {command.payment_id} was initiated with other {what}", command.idempotency_key)
        return
    problem = _initiate_problem(command, draft.now, config)
    if problem is not None:
        _reject(draft, *problem, command.idempotency_key)
        return
    draft.event(PaymentInitiated, payer_account=command.payer_account, payee_account=command.payee_account,
                amount=command.amount, partner=command.partner, reference=command.reference,
                idempotency_key=command.idempotency_key, request_hash=digest, published_at=published_at)
    draft.send_awaited()


def cancel(draft: Draft, command: CancelPayment) -> None:
    state = draft.state
    # Unknown first: any other rejection code as a payment's first event would mean "initiate rejected".
    if state is None or state.status == "UNKNOWN":
        _reject(draft, "UNKNOWN_PAYMENT", f"no payment {command.payment_id}", command.idempotency_key)
        return
    if state.status in ("CANCELLED", "REJECTED"):
        return  # already the outcome asked for, or a payment that never existed: nothing to change
    reasons = validate_cancel(command)
    if reasons:
        _reject(draft, reasons[0].code, reasons[0].detail, command.idempotency_key)
        return
    after = state.after_release
    if state.status == "RELEASING" and after is not None and after.outcome == "CANCELLED":
        return  # a cancel is already under way
    if state.status in _CANCELLABLE_AT_ONCE:
        draft.event(PaymentCancelled, reason=command.reason)
    elif state.status in _CANCELLABLE_BY_RELEASE:
        # The reservation may already have happened: release first, cancel once released.
        issue(draft, "FUNDS_RELEASE", 1, CANCEL_REQUESTED, command.reason)
    else:
        word = "terminal" if state.status in TERMINAL else "past submission to the partner"
        _reject(draft, "INVALID_STATE", f"cannot cancel: payment is {state.status} ({word})",
                command.idempotency_key)


def _refund_problem(state: SagaState, command: RefundPayment, now: datetime,
                    config: SagaConfig) -> RejectCode | None:
    """Why `command` cannot be refunded from `state` (an initiated payment), or None when it can."""
    if state.status != "SETTLED" or state.settled is None or state.refunded is None:
        return "INVALID_STATE"
    if state.settled_at is not None and now > state.settled_at + config.refund_window:
        return "REFUND_WINDOW_CLOSED"
    if command.amount.currency != state.settled.currency:
        return "CURRENCY_MISMATCH"
    if state.refunded.amount_minor + command.amount.amount_minor > state.settled.amount_minor:
        return "REFUND_EXCEEDS_SETTLED"
    return None


def refund(draft: Draft, command: RefundPayment, config: SagaConfig) -> None:
    state = draft.state
    if state is not None and state.status == "REJECTED":
        return  # a rejected payment id is inert
    reasons = validate_refund(command)
    code: RejectCode | None = reasons[0].code if reasons else None
    if code is None and (state is None or state.status == "UNKNOWN"):
        code = "UNKNOWN_PAYMENT"
    if code is None and state is not None and command.refund_id in state.refund_ids:
        return  # this refund was already made
    if code is None and state is not None:
        code = _refund_problem(state, command, draft.now, config)
    if code is not None:
        draft.event(RefundRejected, refund_id=command.refund_id, reason_code=code)
        return
    current = draft.current
    assert current.refunded is not None
    draft.event(PaymentRefunded, refund_id=command.refund_id, amount=command.amount,
                refunded_total=current.refunded.add(command.amount))


def duplicate(draft: Draft, notice: DuplicateCommand) -> None:
    """The intake saw this command's (client, idempotency key) before: answer with the original outcome."""
    if notice.verdict == "KEY_REUSED":
        detail = (f"idempotency key already used by {notice.command_type} {notice.original_command_id} "
                  f"(payment {notice.original_payment_id}) with another request")
        if notice.command_type == "RefundPayment" and notice.refund_id is not None:
            draft.event(RefundRejected, refund_id=notice.refund_id, reason_code="IDEMPOTENCY_KEY_REUSED")
        else:
            _reject(draft, "IDEMPOTENCY_KEY_REUSED", detail, notice.idempotency_key)
        return
    if notice.command_type == "RefundPayment":
        if notice.refund_id is not None and notice.refund_id != notice.original_refund_id:
            draft.event(RefundRejected, refund_id=notice.refund_id, reason_code="DUPLICATE_REQUEST",
                        original_refund_id=notice.original_refund_id)
        return  # the same refund again: its outcome is already on this payment's events
    if notice.payment_id == notice.original_payment_id:
        return  # the same command again: nothing new happens
    _reject(draft, "DUPLICATE_REQUEST", f"the same request under the same idempotency key created payment "
            f"{notice.original_payment_id}: its outcome is this request's", notice.idempotency_key,
            original_payment_id=notice.original_payment_id)
