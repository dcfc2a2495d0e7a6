from __future__ import annotations

import pytest

from payments.contracts.codes import REJECT_CODES
from payments.contracts.messages import CancelPayment, RefundPayment
from payments.contracts.validation import (
    DEFAULT_LIMITS,
    Limits,
    RejectReason,
    validate_cancel,
    validate_initiate,
    validate_refund,
)
from payments.money import Money

from .test_codec import COMMAND_ID, PAYMENT_ID, initiate

REFUND_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


def codes(reasons: list[RejectReason]) -> list[str]:
    return [r.code for r in reasons]


def test_valid_initiate_has_no_reasons() -> None:
    assert validate_initiate(initiate()) == []


@pytest.mark.parametrize("minor", [0, -1, -(2**63)])
def test_non_positive_amount_is_rejected(minor: int) -> None:
    assert codes(validate_initiate(initiate(amount=Money.of(minor, "EUR")))) == ["AMOUNT_NOT_POSITIVE"]


def test_amount_over_limit_is_rejected_per_currency() -> None:
    assert validate_initiate(initiate(amount=Money.of(100_000_000, "EUR"))) == []
    reasons = validate_initiate(initiate(amount=Money.of(100_000_001, "EUR")))
    assert codes(reasons) == ["AMOUNT_OVER_LIMIT"]
    assert "1000000.01 EUR" in reasons[0].detail
    assert codes(validate_initiate(initiate(amount=Money.of(150_000_001, "JPY")))) == ["AMOUNT_OVER_LIMIT"]
    assert codes(validate_initiate(initiate(amount=Money.of(1_000_000_001, "BHD")))) == ["AMOUNT_OVER_LIMIT"]


def test_limits_are_configurable() -> None:
    limits = Limits(amount_major_max=10, amount_minor_max_by_currency={"USD": 500})
    assert codes(validate_initiate(initiate(amount=Money.of(1001, "EUR")), limits)) == ["AMOUNT_OVER_LIMIT"]
    assert codes(validate_initiate(initiate(amount=Money.of(501, "USD")), limits)) == ["AMOUNT_OVER_LIMIT"]
    assert validate_initiate(initiate(amount=Money.of(500, "USD")), limits) == []
    assert DEFAULT_LIMITS.amount_minor_max("EUR") == 100_000_000


@pytest.mark.parametrize("currency", ["XYZ", "eur", "", "EURO"])
def test_unknown_currency_is_rejected(currency: str) -> None:
    assert codes(validate_initiate(initiate(amount=Money.of(100, currency)))) == ["UNKNOWN_CURRENCY"]


def test_same_payer_and_payee_is_rejected() -> None:
    reasons = validate_initiate(initiate(payer_account="acc_1", payee_account="acc_1"))
    assert codes(reasons) == ["SAME_PAYER_AND_PAYEE"]


@pytest.mark.parametrize("key", ["", "   "])
def test_missing_idempotency_key_is_rejected(key: str) -> None:
    assert codes(validate_initiate(initiate(idempotency_key=key))) == ["MISSING_IDEMPOTENCY_KEY"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("payment_id", "not-a-uuid"),
        ("payment_id", ""),
        ("command_id", "5b0c3e52-6a5e-4e8e-9a57-2f2b1c7c2a1"),
        ("command_id", "5b0c3e526a5e4e8e9a572f2b1c7c2a10"),
        ("payer_account", "acc with space"),
        ("payer_account", ""),
        ("payee_account", "x" * 65),
        ("payee_account", "acc/1"),
        ("idempotency_key", "k" * 256),
    ],
)
def test_malformed_ids_are_rejected(field: str, value: str) -> None:
    reasons = validate_initiate(initiate(**{field: value}))
    assert codes(reasons) == ["MALFORMED_ID"]
    assert reasons[0].field == field


def test_all_reasons_are_reported_together() -> None:
    bad = initiate(payment_id="x", idempotency_key="", payer_account="a", payee_account="a", amount=Money.of(0, "EUR"))
    assert codes(validate_initiate(bad)) == [
        "MALFORMED_ID", "MISSING_IDEMPOTENCY_KEY", "SAME_PAYER_AND_PAYEE", "AMOUNT_NOT_POSITIVE"]


def test_every_reason_code_is_a_published_reject_code() -> None:
    for code in ["AMOUNT_NOT_POSITIVE", "AMOUNT_OVER_LIMIT", "UNKNOWN_CURRENCY", "SAME_PAYER_AND_PAYEE",
                 "MISSING_IDEMPOTENCY_KEY", "MALFORMED_ID"]:
        assert code in REJECT_CODES


def refund(**overrides: object) -> RefundPayment:
    fields: dict[str, object] = {
        "payment_id": PAYMENT_ID, "command_id": COMMAND_ID, "idempotency_key": "refund-1",
        "refund_id": REFUND_ID, "amount": Money.of(500, "EUR"), "reason": "customer request",
    }
    fields.update(overrides)
    return RefundPayment.model_validate(fields)


def test_refund_validation() -> None:
    assert validate_refund(refund()) == []
    assert codes(validate_refund(refund(amount=Money.of(0, "EUR")))) == ["AMOUNT_NOT_POSITIVE"]
    assert codes(validate_refund(refund(amount=Money.of(5, "QQQ")))) == ["UNKNOWN_CURRENCY"]
    assert codes(validate_refund(refund(amount=Money.of(10**12, "EUR")))) == ["AMOUNT_OVER_LIMIT"]
    assert codes(validate_refund(refund(refund_id="r-1"))) == ["MALFORMED_ID"]
    assert codes(validate_refund(refund(idempotency_key=""))) == ["MISSING_IDEMPOTENCY_KEY"]


def test_cancel_validation() -> None:
    cancel = CancelPayment(payment_id=PAYMENT_ID, command_id=COMMAND_ID, idempotency_key="c-1", reason="dup")
    assert validate_cancel(cancel) == []
    bad = cancel.model_copy(update={"payment_id": "nope", "idempotency_key": ""})
    assert codes(validate_cancel(bad)) == ["MALFORMED_ID", "MISSING_IDEMPOTENCY_KEY"]
