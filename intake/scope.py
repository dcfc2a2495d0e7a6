"""Idempotency scope and request identity: what makes two commands "the same key" and "the same request".

Keys are scoped per client, as Stripe scopes them per account: the scope is (ce_source, idempotency
key), so two clients may use the same key without colliding. Within a scope, two commands are the
same request when everything that asks for something is equal; ids the client mints for the object
it creates (`payment_id` of an InitiatePayment, `refund_id` of a RefundPayment), the command's own id,
free-text reasons and `metadata` are not part of it, so a retry that regenerated them is still a retry.
"""

from __future__ import annotations

import hashlib
from typing import Final

from intake.errors import UnknownCommandError
from payments.contracts.base import Command
from payments.contracts.commands import CancelPayment, InitiatePayment, RefundPayment

IDEMPOTENCY_KEY_CHARS_MAX: Final = 255  # longer keys are rejected by the orchestrator (MALFORMED_ID)


def scope_key(source: str, idempotency_key: str) -> str:
    """The record key of a command on intake.requests: a hash of (source, key), unambiguous and fixed-size."""
    return hashlib.sha256(f"{len(source)}:{source}\x1f{idempotency_key}".encode()).hexdigest()


def unscoped_key(payment_id: str) -> str:
    """The record key of a command without a usable idempotency key (it is forwarded to be rejected)."""
    return hashlib.sha256(f"unscoped\x1f{payment_id}".encode()).hexdigest()


def has_usable_key(command: Command) -> bool:
    key = command.idempotency_key
    return bool(key.strip()) and len(key) <= IDEMPOTENCY_KEY_CHARS_MAX


def request_hash(command: Command) -> str:
    """What must be equal for two commands under one key to be the same request.

    UnknownCommandError for a command type without a rule here: the contracts define the commands, and
    one added there must get its request identity here before the intake can claim its key."""
    match command:
        case InitiatePayment():
            fields = ["InitiatePayment", command.payer_account, command.payee_account,
                      str(command.amount.amount_minor), command.amount.currency, command.partner,
                      command.reference or ""]
        case CancelPayment():
            fields = ["CancelPayment", command.payment_id]
        case RefundPayment():
            fields = ["RefundPayment", command.payment_id, str(command.amount.amount_minor), command.amount.currency]
        case _:
            raise UnknownCommandError(f"{type(command).__name__} has no request identity in intake.scope: "
                                      "its commands cannot be claimed")
    return hashlib.sha256("\x1f".join(fields).encode()).hexdigest()
