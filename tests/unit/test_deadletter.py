from payments.runtime.deadletter import DeadLetter, original_headers


def test_dead_letter_headers_keep_the_original_headers_and_round_trip() -> None:
    dead = DeadLetter("UnknownSchemaError", "fingerprint 0x12 not found", "payments.commands", 3, 42)
    original = [("ce_id", b"abc"), ("traceparent", b"00-1-2-01")]
    headers = dead.headers(original)
    assert original_headers(headers) == original
    assert DeadLetter.from_headers(headers) == dead


def test_dead_letter_reason_is_bounded() -> None:
    dead = DeadLetter("UndecodableRecordError", "x" * 10_000, "t", 0, 0)
    reason = dict(dead.headers(None))["dlq_reason"]
    assert len(reason) == 2000
