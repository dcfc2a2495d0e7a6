from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payments.contracts.codec import (
    ConfluentRegistrySerde,
    SingleObjectSerde,
    serde_for,
)
from payments.contracts.errors import (
    ContractError,
    InvalidMessageError,
    UndecodableRecordError,
    UnknownMessageTypeError,
    UnknownSchemaError,
)
from payments.contracts.messages import MESSAGE_TYPES, InitiatePayment, Message, PaymentInitiated
from payments.contracts.schema_store import SchemaStore, canonical_form, default_store, rabin_fingerprint
from payments.money import Money

from .strategies import for_model

PAYMENT_ID = "5b0c3e52-6a5e-4e8e-9a57-2f2b1c7c2a10"
COMMAND_ID = "0f8e4a7c-1d2b-4c3a-9e8f-7a6b5c4d3e2f"


def initiate(**overrides: object) -> InitiatePayment:
    fields: dict[str, object] = {
        "payment_id": PAYMENT_ID,
        "command_id": COMMAND_ID,
        "idempotency_key": "order-1234",
        "payer_account": "acc_payer_1",
        "payee_account": "acc_payee_2",
        "amount": Money.of(1234, "EUR"),
        "partner": "sepa-sim",
        "reference": "invoice 42",
        "requested_at": datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
    }
    fields.update(overrides)
    return InitiatePayment.model_validate(fields)


def initiated() -> PaymentInitiated:
    return PaymentInitiated(
        payment_id=PAYMENT_ID,
        event_id="9d7e2c1a-3b4c-4d5e-8f90-a1b2c3d4e5f6",
        seq=1,
        occurred_at=datetime(2025, 1, 2, 3, 4, 6, tzinfo=UTC),
        causation_id=COMMAND_ID,
        payer_account="acc_payer_1",
        payee_account="acc_payee_2",
        amount=Money.of(1234, "EUR"),
        partner="sepa-sim",
        reference=None,
        idempotency_key="order-1234",
        request_hash="ab" * 32,
    )


# --- fingerprints: the Avro spec's test vectors (share/test/data/schema-tests.txt) ----------


def _rabin_reference(data: bytes) -> int:
    """The CRC-64-AVRO algorithm exactly as printed in the Avro specification."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


@pytest.mark.parametrize(
    ("schema", "canonical", "signed_fingerprint"),
    [
        ("int", '"int"', 8247732601305521295),
        ("null", '"null"', 7195948357588979594),
        ("string", '"string"', -8142146995180207161),
        ({"fields": [], "type": "record", "name": "foo"}, '{"name":"foo","type":"record","fields":[]}',
         -4824392279771201922),
    ],
)
def test_fingerprint_matches_avro_spec_vectors(schema: object, canonical: str, signed_fingerprint: int) -> None:
    assert canonical_form(schema) == canonical
    fp = rabin_fingerprint(canonical)
    assert int.from_bytes(fp, "little", signed=True) == signed_fingerprint
    assert int.from_bytes(fp, "little") == _rabin_reference(canonical.encode())


def test_int_single_object_header_matches_avro_reference() -> None:
    # Avro's Ruby test suite: header of "int" is c3 01 8f 5c 39 3f 1a d5 75 72.
    assert b"\xc3\x01" + rabin_fingerprint('"int"') == bytes.fromhex("c3018f5c393f1ad57572")


def test_every_stored_fingerprint_agrees_with_the_reference_algorithm() -> None:
    for schema in default_store():
        assert int.from_bytes(schema.fingerprint, "little") == _rabin_reference(schema.canonical.encode())


# --- single-object encoding ------------------------------------------------------------------


def test_initiate_payment_single_object_layout() -> None:
    store = default_store()
    data = SingleObjectSerde(store).encode(initiate())
    latest = store.latest(InitiatePayment.AVRO_NAME)
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == latest.fingerprint
    assert latest.version == 2


@pytest.mark.parametrize("msg", [initiate(), initiate(reference=None, metadata={"channel": "api"}), initiated()])
def test_round_trip_initiate_and_initiated(msg: Message) -> None:
    serde = SingleObjectSerde()
    decoded = serde.decode(serde.encode(msg))
    assert decoded == msg
    assert type(decoded) is type(msg)


def test_timestamps_decode_as_aware_utc() -> None:
    serde = SingleObjectSerde()
    decoded = serde.decode(serde.encode(initiate()))
    assert isinstance(decoded, InitiatePayment)
    assert decoded.requested_at.tzinfo is not None
    assert decoded.requested_at.utcoffset() is not None
    assert decoded.requested_at == datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def test_bad_but_decodable_values_decode_so_validation_can_reject_them() -> None:
    serde = SingleObjectSerde()
    odd = initiate(idempotency_key="", amount=Money.of(-5, "XYZ"), payment_id="not-a-uuid")
    assert serde.decode(serde.encode(odd)) == odd


def test_v1_initiate_payment_is_read_into_latest_model_with_default_metadata() -> None:
    store = default_store()
    v1 = store.get(InitiatePayment.AVRO_NAME, 1)
    from payments.contracts.codec import write_body

    class V1Only(InitiatePayment):
        def to_avro(self) -> dict[str, object]:
            datum = super().to_avro()
            del datum["metadata"]
            return datum

    msg = initiate()
    data = b"\xc3\x01" + v1.fingerprint + write_body(v1, V1Only.model_validate(msg.model_dump()))
    decoded = SingleObjectSerde(store).decode(data)
    assert decoded == msg
    assert isinstance(decoded, InitiatePayment)
    assert decoded.metadata == {}


@pytest.mark.parametrize(
    ("data", "error", "reason"),
    [
        (b"", UndecodableRecordError, "too_short"),
        (b"\xc3\x01\x00", UndecodableRecordError, "too_short"),
        (b"\x00\x01" + bytes(8), UndecodableRecordError, "bad_magic"),
        (b"\xc3\x01" + bytes(8), UnknownSchemaError, "unknown_fingerprint"),
    ],
)
def test_malformed_frames_raise_typed_errors(data: bytes, error: type[ContractError], reason: str) -> None:
    with pytest.raises(error) as info:
        SingleObjectSerde().decode(data)
    assert info.value.reason == reason


def test_truncated_body_is_undecodable() -> None:
    data = SingleObjectSerde().encode(initiate())
    with pytest.raises(UndecodableRecordError) as info:
        SingleObjectSerde().decode(data[:-3])
    assert info.value.reason == "avro_body_unreadable"


def test_trailing_bytes_are_undecodable() -> None:
    data = SingleObjectSerde().encode(initiate())
    with pytest.raises(UndecodableRecordError) as info:
        SingleObjectSerde().decode(data + b"\x00")
    assert info.value.reason == "trailing_bytes"


def test_decodable_record_failing_model_validation_is_invalid_message() -> None:
    serde = SingleObjectSerde()
    schema = default_store().latest("payments.events.RiskAssessed")
    from payments.contracts.codec import write_body
    from payments.contracts.messages import RiskAssessed

    good = RiskAssessed(payment_id="p", event_id="e", seq=1, occurred_at=datetime(2025, 1, 1, tzinfo=UTC),
                        causation_id="c", score_bp=10, decision="APPROVE", reasons=[], model_version="m")
    body = write_body(schema, good)
    bad_body = body.replace(b"\x0eAPPROVE", b"\x0eMAYBE!!")
    assert bad_body != body
    with pytest.raises(InvalidMessageError) as info:
        serde.decode(b"\xc3\x01" + schema.fingerprint + bad_body)
    assert info.value.reason == "validation_failed"
    assert serde.decode(serde.encode(good)) == good


def test_schema_without_model_is_unknown_message_type(tmp_path: object) -> None:
    import json
    from pathlib import Path

    root = Path(str(tmp_path))
    (root / "x.y.Stray").mkdir()
    (root / "x.y.Stray" / "v1.avsc").write_text(json.dumps(
        {"type": "record", "name": "Stray", "namespace": "x.y", "fields": [{"name": "a", "type": "string"}]}))
    store = SchemaStore(root)
    body = b"\x02z"
    with pytest.raises(UnknownMessageTypeError):
        SingleObjectSerde(store).decode(b"\xc3\x01" + store.latest("x.y.Stray").fingerprint + body)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_contract_errors(data: bytes) -> None:
    serde = SingleObjectSerde()
    with contextlib.suppress(ContractError):
        serde.decode(data)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(default_store(), key=lambda s: (s.name, s.version))), st.binary(max_size=200))
def test_random_bodies_behind_valid_fingerprints_only_raise_contract_errors(schema: object, body: bytes) -> None:
    from payments.contracts.schema_store import SchemaVersion

    assert isinstance(schema, SchemaVersion)
    with contextlib.suppress(ContractError):
        SingleObjectSerde().decode(b"\xc3\x01" + schema.fingerprint + body)


# --- every message type round-trips ----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MESSAGE_TYPES))
def test_every_message_type_round_trips(name: str) -> None:
    serde = SingleObjectSerde()

    @settings(max_examples=40, deadline=None)
    @given(for_model(MESSAGE_TYPES[name]))
    def check(msg: Message) -> None:
        assert serde.decode(serde.encode(msg)) == msg

    check()


# --- Confluent wire format via confluent-kafka's in-process mock registry ----------------------


def test_confluent_framing_and_round_trip_with_mock_registry() -> None:
    serde = ConfluentRegistrySerde("mock://contracts-test-1")
    msg = initiate()
    data = serde.encode(msg)
    assert data[0] == 0
    schema_id = int.from_bytes(data[1:5], "big")
    assert schema_id > 0
    # the body is the same Avro binary as in single-object encoding
    assert data[5:] == SingleObjectSerde().encode(msg)[10:]
    assert serde.decode(data) == msg
    # record-name subject strategy: subject is the record's full name
    assert InitiatePayment.AVRO_NAME in serde._client.get_subjects()
    # a second serde on the same registry (a consumer, cold caches) fetches the writer schema by id
    consumer = ConfluentRegistrySerde("mock://contracts-test-1", client=serde._client)
    assert consumer.decode(data) == msg
    assert consumer.decode(serde.encode(initiated())) == initiated()


def test_confluent_unknown_schema_id_and_bad_magic() -> None:
    serde = ConfluentRegistrySerde("mock://contracts-test-2")
    with pytest.raises(UnknownSchemaError) as info:
        serde.decode(b"\x00\x00\x00\x7f\xff\x02")
    assert info.value.reason == "unknown_schema_id"
    with pytest.raises(UndecodableRecordError):
        serde.decode(b"\x01\x00\x00\x00\x01")
    with pytest.raises(UndecodableRecordError):
        serde.decode(b"\x00\x00")


def test_serde_for_picks_the_wire_format_from_the_registry_url() -> None:
    assert isinstance(serde_for(None), SingleObjectSerde)
    assert isinstance(serde_for("  "), SingleObjectSerde)
    assert isinstance(serde_for("mock://contracts-test-3"), ConfluentRegistrySerde)
