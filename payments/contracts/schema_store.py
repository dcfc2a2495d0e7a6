"""Every published Avro schema version, loaded from `schemas/<RecordFullName>/v<N>.avsc`.

Each file is self-contained (named types such as `payments.common.Money` are defined inline),
so each is parsed on its own with a fresh fastavro name table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import parse_schema, to_parsing_canonical_form

from payments.contracts.errors import SchemaStoreError, UnknownMessageTypeError, UnknownSchemaError

FINGERPRINT_BYTES: Final = 8
_VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.avsc$")


def default_schemas_dir() -> Path:
    """`schemas/` of the checkout this package runs from (an editable install); elsewhere the entry
    point passes the directory in (`PAYMENTS_SCHEMAS_DIR`, see ops.settings)."""
    return Path(__file__).resolve().parents[2] / "schemas"


def canonical_form(schema: Any) -> str:
    """Avro Parsing Canonical Form of a decoded JSON schema (dict, list, or primitive name)."""
    return str(to_parsing_canonical_form(parse_schema(schema, named_schemas={})))


def rabin_fingerprint(canonical: str) -> bytes:
    """CRC-64-AVRO (Rabin) fingerprint of a canonical form, as the 8 bytes the single-object
    header carries (little-endian, per the Avro spec)."""
    fp = bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))
    assert len(fp) == FINGERPRINT_BYTES
    return fp


@dataclass(frozen=True)
class SchemaVersion:
    name: str
    """Record full name, e.g. payments.commands.InitiatePayment."""
    version: int
    path: Path
    raw: dict[str, Any] = field(repr=False)
    """The JSON document as written (what a registry is given)."""
    parsed: dict[str, Any] = field(repr=False)
    """fastavro's parsed form (what its readers and writers take)."""
    canonical: str = field(repr=False)
    fingerprint: bytes

    @property
    def fingerprint_hex(self) -> str:
        return self.fingerprint.hex()

    @property
    def fingerprint_int(self) -> int:
        """The fingerprint as the signed 64-bit integer Java's SchemaNormalization returns."""
        return int.from_bytes(self.fingerprint, "little", signed=True)

    def schema_json(self) -> str:
        return json.dumps(self.raw, separators=(",", ":"))


def _load_file(path: Path, expected_name: str, version: int) -> SchemaVersion:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        parsed = parse_schema(raw, named_schemas={})
    except Exception as exc:  # fastavro raises several unrelated types for a bad schema
        raise SchemaStoreError("schema_unparseable", f"{path}: {exc}") from exc
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise SchemaStoreError("schema_not_a_record", str(path))
    if parsed["name"] != expected_name:
        raise SchemaStoreError("schema_name_mismatch", f"{path} defines {parsed['name']}, not {expected_name}")
    canonical = str(to_parsing_canonical_form(parsed))
    return SchemaVersion(expected_name, version, path, raw, parsed, canonical, rabin_fingerprint(canonical))


class SchemaStore:
    """All versions of all records, indexed by name and by fingerprint."""

    def __init__(self, schemas_dir: Path | None = None) -> None:
        self.schemas_dir = schemas_dir if schemas_dir is not None else default_schemas_dir()
        if not self.schemas_dir.is_dir():
            raise SchemaStoreError("schemas_dir_missing", str(self.schemas_dir))
        self._versions: dict[str, list[SchemaVersion]] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        for path in sorted(self.schemas_dir.glob("*/v*.avsc")):
            match = _VERSION_FILE.match(path.name)
            if match is None:
                raise SchemaStoreError("schema_file_misnamed", str(path))
            schema = _load_file(path, path.parent.name, int(match.group(1)))
            self._add(schema)
        for name, versions in self._versions.items():
            versions.sort(key=lambda s: s.version)
            numbers = [s.version for s in versions]
            if numbers != list(range(1, len(numbers) + 1)):
                raise SchemaStoreError("schema_versions_not_contiguous", f"{name}: {numbers}")

    def _add(self, schema: SchemaVersion) -> None:
        clash = self._by_fingerprint.get(schema.fingerprint)
        if clash is not None:
            raise SchemaStoreError("duplicate_schema", f"{schema.path} is identical in canonical form to {clash.path}")
        self._by_fingerprint[schema.fingerprint] = schema
        self._versions.setdefault(schema.name, []).append(schema)

    def names(self) -> list[str]:
        return sorted(self._versions)

    def versions(self, name: str) -> list[SchemaVersion]:
        try:
            return list(self._versions[name])
        except KeyError:
            raise UnknownMessageTypeError("no_schema_for_record", name) from None

    def latest(self, name: str) -> SchemaVersion:
        return self.versions(name)[-1]

    def get(self, name: str, version: int) -> SchemaVersion:
        for schema in self.versions(name):
            if schema.version == version:
                return schema
        raise UnknownSchemaError("unknown_schema_version", f"{name} v{version}")

    def by_fingerprint(self, fingerprint: bytes) -> SchemaVersion:
        try:
            return self._by_fingerprint[fingerprint]
        except KeyError:
            raise UnknownSchemaError("unknown_fingerprint", fingerprint.hex()) from None

    def __iter__(self) -> Iterator[SchemaVersion]:
        for name in self.names():
            yield from self._versions[name]


@lru_cache(maxsize=1)
def default_store() -> SchemaStore:
    """The store of `default_schemas_dir()`, loaded once per process."""
    return SchemaStore()
