"""Serdes: message <-> bytes, in Avro single-object encoding or the Confluent wire format.

Single-object encoding (the default, no registry server needed), per the Avro spec:

    C3 01 | 8-byte CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical Form,
            little-endian | Avro binary body (schemaless)

Decoding resolves the writer schema by fingerprint from `schemas/` and reads the body into
the LATEST version of the same record (Avro schema resolution), so a consumer on the newest
schemas reads every kept version.

Confluent mode (`SCHEMA_REGISTRY_URL` set): `00 | 4-byte big-endian schema id | body`, the
schema registered under the record-name subject strategy (subject = record full name), so
one topic (payments.events) carries many record types.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Final, Protocol

from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import parse_schema, to_parsing_canonical_form
from pydantic import ValidationError

from payments.contracts.base import Message
from payments.contracts.envelope import CONTENT_TYPE_CONFLUENT, CONTENT_TYPE_SINGLE_OBJECT
from payments.contracts.errors import (
    ContractError,
    EncodeError,
    InvalidMessageError,
    UndecodableRecordError,
    UnknownMessageTypeError,
    UnknownSchemaError,
)
from payments.contracts.messages import MESSAGE_TYPES
from payments.contracts.schema_store import (
    FINGERPRINT_BYTES,
    SchemaStore,
    SchemaVersion,
    default_store,
    rabin_fingerprint,
)

SINGLE_OBJECT_MAGIC: Final = b"\xc3\x01"
SINGLE_OBJECT_HEADER_BYTES: Final = len(SINGLE_OBJECT_MAGIC) + FINGERPRINT_BYTES
CONFLUENT_MAGIC: Final = b"\x00"
CONFLUENT_HEADER_BYTES: Final = 5



class Serde(Protocol):
    """Turns messages into record values and back. `decode` raises only ContractError."""

    content_type: str

    def encode(self, msg: Message) -> bytes: ...

    def decode(self, data: bytes) -> Message: ...


def write_body(schema: SchemaVersion, msg: Message) -> bytes:
    """Avro binary encoding of `msg` with `schema`, without any framing."""
    out = io.BytesIO()
    try:
        schemaless_writer(out, schema.parsed, msg.to_avro())
    except Exception as exc:  # fastavro raises TypeError/ValueError/OverflowError for a bad datum
        raise EncodeError("avro_write_failed", f"{schema.name} v{schema.version}: {exc}") from exc
    return out.getvalue()


def read_body(body: bytes, writer: SchemaVersion, reader: SchemaVersion) -> dict[str, Any]:
    """Decode an Avro body written with `writer` into the shape of `reader` (schema resolution).

    The whole body must be consumed: trailing bytes mean a framing error, not a record.
    """
    stream = io.BytesIO(body)
    try:
        datum = schemaless_reader(stream, writer.parsed, reader.parsed)
    except Exception as exc:  # random bytes raise EOFError, ValueError, UnicodeDecodeError, OverflowError, ...
        raise UndecodableRecordError("avro_body_unreadable", f"{writer.name} v{writer.version}: {exc!r}") from exc
    if stream.tell() != len(body):
        raise UndecodableRecordError("trailing_bytes", f"{len(body) - stream.tell()} bytes after the record")
    if not isinstance(datum, dict):  # pragma: no cover - every stored schema is a record
        raise UndecodableRecordError("not_a_record", writer.name)
    return datum


def to_message(name: str, datum: dict[str, Any]) -> Message:
    """Validate a decoded datum into its model."""
    cls = MESSAGE_TYPES.get(name)
    if cls is None:
        raise UnknownMessageTypeError("no_model_for_record", name)
    try:
        return cls.from_avro(datum)
    except ValidationError as exc:
        raise InvalidMessageError("validation_failed", f"{name}: {exc.errors(include_url=False)}") from exc


def latest_schema_of(store: SchemaStore, msg: Message) -> SchemaVersion:
    return store.latest(type(msg).AVRO_NAME)


class SingleObjectSerde:
    """Avro single-object encoding; writer schemas come from the local SchemaStore."""

    content_type: str = CONTENT_TYPE_SINGLE_OBJECT

    def __init__(self, store: SchemaStore | None = None) -> None:
        self.store = store if store is not None else default_store()

    def encode(self, msg: Message) -> bytes:
        schema = latest_schema_of(self.store, msg)
        return SINGLE_OBJECT_MAGIC + schema.fingerprint + write_body(schema, msg)

    def decode(self, data: bytes) -> Message:
        if len(data) < SINGLE_OBJECT_HEADER_BYTES:
            raise UndecodableRecordError("too_short", f"{len(data)} bytes")
        if data[:2] != SINGLE_OBJECT_MAGIC:
            raise UndecodableRecordError("bad_magic", data[:2].hex())
        writer = self.store.by_fingerprint(bytes(data[2:SINGLE_OBJECT_HEADER_BYTES]))
        reader = self.store.latest(writer.name)
        datum = read_body(bytes(data[SINGLE_OBJECT_HEADER_BYTES:]), writer, reader)
        return to_message(writer.name, datum)


class ConfluentRegistrySerde:
    """Confluent Schema Registry wire format: `00 | schema id (4 bytes, big-endian) | body`.

    Subject naming is the RECORD-NAME strategy (subject = record full name, e.g.
    `payments.events.PaymentSettled`): payments.events carries many record types, which the
    topic strategy (`<topic>-value`, one type per topic) cannot. Encoding registers (or looks
    up) the latest local schema of the record under that subject; decoding fetches the writer
    schema by id from the registry and resolves it into the latest local version of the same
    record. `url` may be `mock://<scope>` for confluent-kafka's in-process mock registry.
    """

    content_type: str = CONTENT_TYPE_CONFLUENT

    def __init__(self, url: str, *, store: SchemaStore | None = None, client: Any | None = None,
                 auto_register: bool = True) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self.store = store if store is not None else default_store()
        self.url = url
        self.auto_register = auto_register
        self._client: Any = client if client is not None else SchemaRegistryClient.new_client({"url": url})
        self._ids: dict[str, int] = {}  # record name -> schema id of its latest local version
        self._writers: dict[int, SchemaVersion] = {}

    def _schema_id(self, schema: SchemaVersion) -> int:
        cached = self._ids.get(schema.name)
        if cached is not None:
            return cached
        from confluent_kafka.schema_registry import Schema

        registry_schema = Schema(schema.schema_json(), "AVRO")
        try:
            if self.auto_register:
                schema_id = int(self._client.register_schema(schema.name, registry_schema))
            else:
                schema_id = int(self._client.lookup_schema(schema.name, registry_schema).schema_id)
        except Exception as exc:  # registry errors (HTTP, unknown subject) surface as one typed error
            raise EncodeError("registry_registration_failed", f"{schema.name}: {exc}") from exc
        self._ids[schema.name] = schema_id
        self._writers[schema_id] = schema
        return schema_id

    def encode(self, msg: Message) -> bytes:
        schema = latest_schema_of(self.store, msg)
        schema_id = self._schema_id(schema)
        return CONFLUENT_MAGIC + schema_id.to_bytes(4, "big") + write_body(schema, msg)

    def _writer(self, schema_id: int) -> SchemaVersion:
        known = self._writers.get(schema_id)
        if known is not None:
            return known
        try:
            registry_schema = self._client.get_schema(schema_id)
        except Exception as exc:  # SchemaRegistryError for unknown ids, transport errors otherwise
            raise UnknownSchemaError("unknown_schema_id", f"{schema_id}: {exc}") from exc
        try:
            parsed = parse_schema(json.loads(registry_schema.schema_str), named_schemas={})
        except Exception as exc:  # a registry schema we cannot parse is as good as unknown
            raise UnknownSchemaError("registry_schema_unparseable", f"{schema_id}: {exc}") from exc
        if not isinstance(parsed, dict) or parsed.get("type") != "record":
            raise UnknownSchemaError("registry_schema_not_a_record", str(schema_id))
        canonical = str(to_parsing_canonical_form(parsed))
        try:
            # Prefer the local copy: it also proves the registry holds one of OUR versions.
            writer = self.store.by_fingerprint(rabin_fingerprint(canonical))
        except UnknownSchemaError:
            # A version we do not hold (a producer ahead of us): still resolvable into our latest.
            name = str(parsed["name"])
            writer = SchemaVersion(name, 0, self.store.schemas_dir, {}, parsed, canonical, rabin_fingerprint(canonical))
        self._writers[schema_id] = writer
        return writer

    def decode(self, data: bytes) -> Message:
        if len(data) < CONFLUENT_HEADER_BYTES:
            raise UndecodableRecordError("too_short", f"{len(data)} bytes")
        if data[:1] != CONFLUENT_MAGIC:
            raise UndecodableRecordError("bad_magic", data[:1].hex())
        writer = self._writer(int.from_bytes(data[1:CONFLUENT_HEADER_BYTES], "big"))
        reader = self.store.latest(writer.name)
        datum = read_body(bytes(data[CONFLUENT_HEADER_BYTES:]), writer, reader)
        return to_message(writer.name, datum)


def serde_for(schema_registry_url: str | None, *, schemas_dir: Path | None = None) -> Serde:
    """ConfluentRegistrySerde when a registry URL is given, else SingleObjectSerde; schemas from
    `schemas_dir` (default: the checkout's `schemas/`)."""
    store = SchemaStore(schemas_dir) if schemas_dir is not None else default_store()
    url = (schema_registry_url or "").strip()
    if url:
        return ConfluentRegistrySerde(url, store=store)
    return SingleObjectSerde(store)


__all__ = [
    "CONTENT_TYPE_CONFLUENT",
    "CONTENT_TYPE_SINGLE_OBJECT",
    "ConfluentRegistrySerde",
    "ContractError",
    "Serde",
    "SingleObjectSerde",
    "serde_for",
]
