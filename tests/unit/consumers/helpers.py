"""Building `Incoming` records for participant logic without Kafka."""

from __future__ import annotations

from datetime import UTC, datetime

from payments.contracts.envelope import Envelope
from payments.contracts.messages import Message
from payments.runtime.logic import Incoming

NOW = datetime(2025, 3, 14, 9, 26, 53, tzinfo=UTC)


def envelope_of(message: Message, source: str = "test") -> Envelope:
    return Envelope(id=message.message_id, type=message.AVRO_NAME, source=source, time=NOW,
                    content_type="application/avro")


def incoming(message: Message, topic: str, key: str | None = None, offset: int = 0) -> Incoming:
    envelope = envelope_of(message)
    return Incoming(topic=topic, partition=0, offset=offset, key=key or message.payment_id, message=message,
                    envelope=envelope)
