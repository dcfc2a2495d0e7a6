"""Dead letters: the original record as whole as the limits allow, why and where it failed, never oversize."""

from __future__ import annotations

import hashlib

from payments.runtime.deadletter import DeadLetter, DeadLetterLimits, original_headers, reason_code_of

LIMITS = DeadLetterLimits(copy_bytes_max=1_000, truncated_value_bytes=100, key_bytes_max=20, headers_bytes_max=200)
DEAD = DeadLetter("UnknownSchemaError", "unknown_fingerprint", "fingerprint 0x12 not found", "payments.commands", 3, 42)


def _size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    return len(key or b"") + len(value or b"") + sum(len(n) + len(v) for n, v in headers)


def test_a_record_that_fits_is_copied_whole_with_its_headers_and_the_reason_round_trips() -> None:
    original = [("ce_id", b"abc"), ("traceparent", b"00-1-2-01")]
    key, value, headers = DEAD.record(b"pay-1", b"v" * 500, original, LIMITS)
    assert (key, value) == (b"pay-1", b"v" * 500)
    assert original_headers(headers) == original
    assert DeadLetter.from_headers(headers) == DEAD
    assert dict(headers)["dlq_reason_code"] == b"unknown_fingerprint"
    assert "dlq_value_truncated" not in dict(headers)


def test_an_oversize_value_is_truncated_with_its_size_and_hash_and_the_copy_stays_bounded() -> None:
    value = bytes(range(256)) * 10_000  # 2.5 MB
    key, copied, headers = DEAD.record(b"pay-1", value, [("ce_id", b"abc")], LIMITS)
    found = dict(headers)
    assert copied == value[:100] and key == b"pay-1"
    assert found["dlq_value_truncated"] == b"true"
    assert found["dlq_original_value_bytes"] == str(len(value)).encode()
    assert found["dlq_original_value_sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert _size(key, copied, headers) < LIMITS.copy_bytes_max


def test_a_huge_key_and_huge_headers_are_cut_and_dropped() -> None:
    headers_in = [(f"h{i}", b"x" * 50) for i in range(100)]  # 5 KB of headers
    key, value, headers = DEAD.record(b"k" * 5_000, b"small", headers_in, LIMITS)
    found = dict(headers)
    assert key == b"k" * 20 and found["dlq_original_key_bytes"] == b"5000"
    assert original_headers(headers) == [] and found["dlq_original_headers_dropped"] == b"100"
    assert value == b"small"


def test_a_minimal_dead_letter_keeps_only_why_where_and_what_size() -> None:
    _key, value, headers = DEAD.as_minimal().record(b"pay-1", b"v" * 500, [("ce_id", b"abc")], LIMITS)
    found = dict(headers)
    assert value == b"" and original_headers(headers) == []
    assert found["dlq_original_value_bytes"] == b"500" and found["dlq_reason_code"] == b"unknown_fingerprint"


def test_the_detail_is_bounded_and_contract_reasons_give_bare_codes() -> None:
    dead = DeadLetter("UndecodableRecordError", "avro_body_unreadable", "x" * 10_000, "t", 0, 0)
    assert len(dict(dead.record(None, None, None)[2])["dlq_detail"]) == 2000
    assert reason_code_of("missing_header:ce_type") == "missing_header"
    assert reason_code_of("trailing_bytes") == "trailing_bytes"
