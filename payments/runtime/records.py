"""Small adapters over confluent-kafka record types."""

from __future__ import annotations

from typing import Any, Protocol

from confluent_kafka import KafkaError
from confluent_kafka import Message as KafkaRecord


def headers_of(record: KafkaRecord) -> list[tuple[str, bytes]]:
    """A record's headers as (name, bytes) pairs; a null header value becomes b""."""
    raw = record.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw
    return [(name, value.encode() if isinstance(value, str) else (value or b"")) for name, value in pairs]


class WarningLogger(Protocol):
    def warning(self, event: str, **fields: Any) -> Any: ...


def data_records(records: list[KafkaRecord], log: WarningLogger) -> list[KafkaRecord]:
    """The records that carry data. Consumer errors are logged (partition EOF is not an error) and dropped:
    librdkafka recovers from them by itself and reports a fatal one through the client's API calls."""
    kept = []
    for record in records:
        error = record.error()
        if error is None:
            kept.append(record)
        elif error.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer_error", error=str(error))
    return kept
