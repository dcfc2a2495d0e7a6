"""CloudEvents 1.0 Kafka protocol binding, binary content mode: attributes travel as headers.

Headers (all values UTF-8 bytes):

    ce_specversion  "1.0"
    ce_id           the message's command_id / event_id / reply_id
    ce_type         the Avro record full name, e.g. "payments.commands.InitiatePayment"
    ce_source       the producing service, e.g. "orchestrator" or "upstream-billing"
    ce_time         RFC 3339 UTC timestamp, millisecond precision, e.g. "2025-01-02T03:04:05.678Z"
    content-type    "application/avro" (Avro single-object encoding) or
                    "application/vnd.confluent.avro" (Confluent wire format)
    traceparent     optional, W3C trace context
    idempotency_key optional, the command's idempotency key (commands only)

The record value is the encoded message; the record key is the payment id (UTF-8).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Final

from payments.contracts.base import Message
from payments.contracts.errors import InvalidHeaderError, MissingHeaderError

SPEC_VERSION: Final = "1.0"
CONTENT_TYPE_SINGLE_OBJECT: Final = "application/avro"  # Avro single-object encoding
CONTENT_TYPE_CONFLUENT: Final = "application/vnd.confluent.avro"  # Confluent Schema Registry wire format
H_ID: Final = "ce_id"
H_TYPE: Final = "ce_type"
H_SOURCE: Final = "ce_source"
H_TIME: Final = "ce_time"
H_SPECVERSION: Final = "ce_specversion"
H_CONTENT_TYPE: Final = "content-type"
H_TRACEPARENT: Final = "traceparent"
H_PUBLISHED_AT: Final = "payments_published_at"  # internal topics only (Envelope.published_at)
H_IDEMPOTENCY_KEY: Final = "idempotency_key"
REQUIRED_HEADERS: Final = (H_SPECVERSION, H_ID, H_TYPE, H_SOURCE, H_TIME, H_CONTENT_TYPE)

Headers = Sequence[tuple[str, bytes | str | None]]


@dataclass(frozen=True)
class Envelope:
    id: str
    type: str
    source: str
    time: datetime
    content_type: str
    specversion: str = SPEC_VERSION
    traceparent: str | None = None
    idempotency_key: str | None = None
    # When the upstream client published the command (its record's timestamp on payments.commands): set by
    # the intake router, carried on the internal topics in `payments_published_at`, never read from upstream.
    published_at: datetime | None = None


@lru_cache(maxsize=4096)  # the messages of one batch share their decision's time: formatted once
def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and a `Z` suffix."""
    if moment.tzinfo is None:
        raise ValueError("ce_time needs a timezone-aware datetime")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidHeaderError("bad_ce_time", text) from exc
    if moment.tzinfo is None:
        raise InvalidHeaderError("bad_ce_time", f"{text} has no UTC offset")
    return moment.astimezone(UTC)


def forwarded_headers(envelope: Envelope, msg: Message, *, content_type: str) -> list[tuple[str, bytes]]:
    """Headers that carry `envelope`'s attributes for `msg` forwarded unchanged (same id, source, time, trace)."""
    headers = [(H_SPECVERSION, envelope.specversion), (H_ID, envelope.id), (H_TYPE, type(msg).AVRO_NAME),
               (H_SOURCE, envelope.source), (H_TIME, format_time(envelope.time)), (H_CONTENT_TYPE, content_type)]
    if envelope.traceparent:
        headers.append((H_TRACEPARENT, envelope.traceparent))
    if envelope.published_at is not None:
        headers.append((H_PUBLISHED_AT, format_time(envelope.published_at)))
    key = msg.idempotency_key_header
    if key is not None:
        headers.append((H_IDEMPOTENCY_KEY, key))
    return [(name, value.encode("utf-8")) for name, value in headers]


def build_headers(
    msg: Message,
    *,
    source: str,
    traceparent: str | None,
    content_type: str = CONTENT_TYPE_SINGLE_OBJECT,
    now: datetime | None = None,
) -> list[tuple[str, bytes]]:
    """Kafka headers for `msg`. ce_time is the message's own timestamp when it has one
    (requested_at / occurred_at / issued_at / settled_at), else `now` (default: the clock)."""
    moment = msg.message_time or now or datetime.now(UTC)
    headers = [
        (H_SPECVERSION, SPEC_VERSION),
        (H_ID, msg.message_id),
        (H_TYPE, type(msg).AVRO_NAME),
        (H_SOURCE, source),
        (H_TIME, format_time(moment)),
        (H_CONTENT_TYPE, content_type),
    ]
    if traceparent:
        headers.append((H_TRACEPARENT, traceparent))
    key = msg.idempotency_key_header
    if key is not None:
        headers.append((H_IDEMPOTENCY_KEY, key))
    return [(name, value.encode("utf-8")) for name, value in headers]


def _decode_value(name: str, value: bytes | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidHeaderError("header_not_utf8", name) from exc


def parse_headers(headers: Headers) -> Envelope:
    """The envelope of a record. The first occurrence of a repeated header wins.

    Raises MissingHeaderError (reason `missing_header:<name>`) for an absent required header
    and InvalidHeaderError for a malformed one.
    """
    found: dict[str, str] = {}
    for name, raw in headers:
        if name in found:
            continue
        value = _decode_value(name, raw)
        if value is not None:
            found[name] = value
    for name in REQUIRED_HEADERS:
        if not found.get(name):
            raise MissingHeaderError(f"missing_header:{name}", name)
    if found[H_SPECVERSION] != SPEC_VERSION:
        raise InvalidHeaderError("unsupported_specversion", found[H_SPECVERSION])
    return Envelope(
        id=found[H_ID],
        type=found[H_TYPE],
        source=found[H_SOURCE],
        time=parse_time(found[H_TIME]),
        content_type=found[H_CONTENT_TYPE],
        specversion=found[H_SPECVERSION],
        traceparent=found.get(H_TRACEPARENT) or None,
        idempotency_key=found.get(H_IDEMPOTENCY_KEY),
        published_at=_published_at(found.get(H_PUBLISHED_AT)),
    )


def _published_at(text: str | None) -> datetime | None:
    """An internal, informational header: a malformed one is ignored, never a reason to refuse a record."""
    if not text:
        return None
    try:
        return parse_time(text)
    except InvalidHeaderError:
        return None


def check_consistent(envelope: Envelope, msg: Message) -> None:
    """Raise InvalidHeaderError when the headers describe another message than the value."""
    if envelope.type != type(msg).AVRO_NAME:
        raise InvalidHeaderError("ce_type_mismatch", f"header {envelope.type}, value {type(msg).AVRO_NAME}")
    if envelope.id != msg.message_id:
        raise InvalidHeaderError("ce_id_mismatch", f"header {envelope.id}, value {msg.message_id}")
