from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from payments.contracts.envelope import (
    REQUIRED_HEADERS,
    Envelope,
    build_headers,
    check_consistent,
    format_time,
    parse_headers,
)
from payments.contracts.errors import ContractError, InvalidHeaderError, MissingHeaderError

from .test_codec import COMMAND_ID, initiate, initiated

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_command_headers_have_exact_names_and_values() -> None:
    headers = build_headers(initiate(), source="upstream-billing", traceparent=TRACEPARENT)
    assert headers == [
        ("ce_specversion", b"1.0"),
        ("ce_id", COMMAND_ID.encode()),
        ("ce_type", b"payments.commands.InitiatePayment"),
        ("ce_source", b"upstream-billing"),
        ("ce_time", b"2025-01-02T03:04:05.678Z"),
        ("content-type", b"application/avro"),
        ("traceparent", TRACEPARENT.encode()),
        ("idempotency_key", b"order-1234"),
    ]


def test_event_headers_omit_absent_optional_headers() -> None:
    event = initiated()
    names = [name for name, _ in build_headers(event, source="orchestrator", traceparent=None)]
    assert names == list(REQUIRED_HEADERS)


def test_round_trip_headers_to_envelope() -> None:
    msg = initiate()
    envelope = parse_headers(build_headers(msg, source="upstream", traceparent=TRACEPARENT))
    assert envelope == Envelope(
        id=COMMAND_ID,
        type="payments.commands.InitiatePayment",
        source="upstream",
        time=datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        content_type="application/avro",
        traceparent=TRACEPARENT,
        idempotency_key="order-1234",
    )
    check_consistent(envelope, msg)


def test_ce_time_is_rfc3339_utc_even_for_other_offsets() -> None:
    moment = datetime(2025, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2)))
    assert format_time(moment) == "2025-01-02T03:04:05.000Z"


def test_parse_accepts_confluent_style_header_lists_with_none_and_str_values() -> None:
    headers: list[tuple[str, bytes | str | None]] = list(
        build_headers(initiated(), source="orchestrator", traceparent=None))
    headers.append(("traceparent", None))
    headers.append(("x-other", "str value"))
    envelope = parse_headers(headers)
    assert envelope.traceparent is None
    assert envelope.idempotency_key is None


@pytest.mark.parametrize("missing", REQUIRED_HEADERS)
def test_missing_required_header_raises(missing: str) -> None:
    headers = [h for h in build_headers(initiate(), source="s", traceparent=None) if h[0] != missing]
    with pytest.raises(MissingHeaderError) as info:
        parse_headers(headers)
    assert info.value.reason == f"missing_header:{missing}"
    assert isinstance(info.value, ContractError)


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [("ce_time", b"yesterday", "bad_ce_time"), ("ce_time", b"2025-01-02T03:04:05", "bad_ce_time"),
     ("ce_specversion", b"0.3", "unsupported_specversion"), ("ce_id", b"\xff\xfe", "header_not_utf8")],
)
def test_malformed_header_raises(name: str, value: bytes, reason: str) -> None:
    headers = [(n, value if n == name else v) for n, v in build_headers(initiate(), source="s", traceparent=None)]
    with pytest.raises(InvalidHeaderError) as info:
        parse_headers(headers)
    assert info.value.reason == reason


def test_headers_that_disagree_with_the_value_are_detected() -> None:
    envelope = parse_headers(build_headers(initiate(), source="s", traceparent=None))
    with pytest.raises(InvalidHeaderError) as info:
        check_consistent(envelope, initiated())
    assert info.value.reason == "ce_type_mismatch"
