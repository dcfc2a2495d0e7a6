"""The worked example in docs/contracts.md is what the encoder actually produces."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from payments.contracts.codec import SingleObjectSerde
from payments.contracts.messages import InitiatePayment
from payments.contracts.schema_store import default_store
from payments.money import Money

DOC = Path(__file__).resolve().parents[3] / "docs" / "contracts.md"


def example() -> InitiatePayment:
    return InitiatePayment(
        payment_id="5b0c3e52-6a5e-4e8e-9a57-2f2b1c7c2a10",
        command_id="0f8e4a7c-1d2b-4c3a-9e8f-7a6b5c4d3e2f",
        idempotency_key="order-1234",
        payer_account="acc_payer_1",
        payee_account="acc_payee_2",
        amount=Money.of(1234, "EUR"),
        partner="sepa-sim",
        reference="invoice 42",
        requested_at=datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        metadata={"channel": "api"},
    )


def test_full_value_in_docs_matches_encoder() -> None:
    text = DOC.read_text(encoding="utf-8")
    block = text.split("Full value:\n\n```\n", 1)[1].split("```", 1)[0]
    documented = bytes.fromhex(re.sub(r"\s+", "", block))
    encoded = SingleObjectSerde().encode(example())
    assert documented == encoded
    assert len(encoded) == 166
    assert SingleObjectSerde().decode(documented) == example()


def test_fingerprints_in_docs_match_store() -> None:
    text = DOC.read_text(encoding="utf-8")
    v1, v2 = default_store().versions(InitiatePayment.AVRO_NAME)
    for schema in (v1, v2):
        assert f"0x{int.from_bytes(schema.fingerprint, 'little'):X}" in text
        assert schema.fingerprint.hex(" ") in text
    assert str(v2.fingerprint_int) in text
