"""Request fingerprints and derived ids (the PostgreSQL store: tests/integration/test_http_intake.py)."""

from __future__ import annotations

import uuid

from intake.http.idempotency import derived_id, fingerprint
from intake.http.models import CancelPaymentRequest, InitiatePaymentRequest

BODY = {"amount": {"amount_minor": 1250, "currency": "EUR"}, "payer_account": "acc-1", "payee_account": "acc-2",
        "partner": "simbank"}


def test_the_fingerprint_is_of_the_meaning_not_the_bytes() -> None:
    one = InitiatePaymentRequest.model_validate_json(
        '{"amount": {"currency": "EUR", "amount_minor": 1250}, "payer_account": "acc-1", '
        '"payee_account": "acc-2", "partner": "simbank", "metadata": {}}')
    other = InitiatePaymentRequest.model_validate(BODY)
    assert fingerprint("initiate", "p", one) == fingerprint("initiate", "p", other)


def test_the_fingerprint_changes_with_the_body_the_operation_or_the_payment() -> None:
    base = InitiatePaymentRequest.model_validate(BODY)
    more = InitiatePaymentRequest.model_validate({**BODY, "amount": {"amount_minor": 1251, "currency": "EUR"}})
    prints = {fingerprint("initiate", "p", base), fingerprint("initiate", "p", more),
              fingerprint("initiate", "q", base), fingerprint("cancel", "p", CancelPaymentRequest(reason="x"))}
    assert len(prints) == 4


def test_ids_derive_from_client_key_and_purpose() -> None:
    first = derived_id("client-a", "key-1", "payment")
    assert first == derived_id("client-a", "key-1", "payment")
    assert uuid.UUID(first).version == 5
    others = {derived_id("client-b", "key-1", "payment"), derived_id("client-a", "key-2", "payment"),
              derived_id("client-a", "key-1", "command"), derived_id("client-a\x00", "key-1", "payment")}
    assert first not in others
    assert len(others) == 4
