"""Small adapters over confluent-kafka record types."""

from __future__ import annotations

from confluent_kafka import Message as KafkaRecord


def headers_of(record: KafkaRecord) -> list[tuple[str, bytes]]:
    """A record's headers as (name, bytes) pairs; a null header value becomes b""."""
    raw = record.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [(name, value.encode() if isinstance(value, str) else (value or b"")) for name, value in pairs]
