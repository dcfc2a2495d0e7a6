"""Schema evolution check: every consecutive pair of kept versions must be FULL compatible.

For each record with more than one version and each consecutive pair (old, new), sample data
is actually encoded with one schema and decoded with the other through fastavro's schema
resolution, in both directions:

- backward: a consumer on `new` reads data written with `old`;
- forward:  a consumer still on `old` reads data written with `new`.

The samples are generated deterministically from the writer schema, one per union branch
(so both the null and the non-null side of an optional field are exercised).

`payments schemas check` calls `main`.
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from fastavro import schemaless_reader, schemaless_writer

from payments.contracts.errors import ContractError
from payments.contracts.schema_store import SchemaStore, SchemaVersion

Direction = Literal["backward", "forward"]
_SAMPLES_MAX = 8  # one sample per union branch; our unions have 2


@dataclass(frozen=True)
class Incompatibility:
    record: str
    old_version: int
    new_version: int
    direction: Direction
    error: str

    @property
    def message(self) -> str:
        if self.direction == "backward":
            what = f"v{self.new_version} reader cannot read v{self.old_version} data"
        else:
            what = f"v{self.old_version} reader cannot read v{self.new_version} data"
        return (f"{self.record} v{self.old_version} -> v{self.new_version}: {self.direction.upper()} "
                f"incompatible ({what}): {self.error}")


def _union_width(schema: Any) -> int:
    if isinstance(schema, list):
        return max(len(schema), *(_union_width(branch) for branch in schema))
    if isinstance(schema, dict):
        kind = schema.get("type")
        if kind == "record":
            return max([1, *(_union_width(f["type"]) for f in schema["fields"])])
        if kind == "array":
            return _union_width(schema["items"])
        if kind == "map":
            return _union_width(schema["values"])
    return 1


def sample_datum(schema: Any, variant: int = 0) -> Any:  # noqa: PLR0911 - one branch per Avro type
    """A datum valid for the fastavro-parsed `schema`; `variant` picks union branch variant % n."""
    if isinstance(schema, list):
        return sample_datum(schema[variant % len(schema)], variant)
    if isinstance(schema, str):
        primitive = {"null": None, "boolean": True, "int": 7, "long": 7, "float": 1, "double": 1,
                     "bytes": b"\x01", "string": "sample"}
        if schema not in primitive:
            raise AssertionError(f"unresolved named type {schema!r}: pass a fastavro-parsed schema")
        return primitive[schema]
    kind = schema["type"]
    logical = schema.get("logicalType")
    if logical == "decimal":
        return Decimal(1)
    if logical == "uuid":
        return "00000000-0000-4000-8000-000000000000"
    if kind == "record":
        return {f["name"]: sample_datum(f["type"], variant) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][variant % len(schema["symbols"])]
    if kind == "array":
        return [sample_datum(schema["items"], variant)]
    if kind == "map":
        return {"key": sample_datum(schema["values"], variant)}
    if kind == "fixed":
        return bytes(schema["size"])
    return sample_datum(kind, variant)  # {"type": "long", "logicalType": ...} and friends


def samples(schema: SchemaVersion) -> list[Any]:
    width = min(_union_width(schema.parsed), _SAMPLES_MAX)
    return [sample_datum(schema.parsed, variant) for variant in range(width)]


def _read_across(writer: SchemaVersion, reader: SchemaVersion) -> str | None:
    """None when every sample written with `writer` is read by `reader`, else fastavro's error."""
    for datum in samples(writer):
        out = io.BytesIO()
        schemaless_writer(out, writer.parsed, datum)
        stream = io.BytesIO(out.getvalue())
        try:
            schemaless_reader(stream, writer.parsed, reader.parsed)
        except Exception as exc:  # fastavro's SchemaResolutionError and friends: report, don't crash
            return f"{type(exc).__name__}: {exc}"
        if stream.tell() != len(out.getvalue()):
            return "reader stopped before the end of the record"
    return None


def check_pair(old: SchemaVersion, new: SchemaVersion) -> list[Incompatibility]:
    assert old.name == new.name and old.version < new.version
    found = []
    backward = _read_across(writer=old, reader=new)
    if backward is not None:
        found.append(Incompatibility(old.name, old.version, new.version, "backward", backward))
    forward = _read_across(writer=new, reader=old)
    if forward is not None:
        found.append(Incompatibility(old.name, old.version, new.version, "forward", forward))
    return found


def consecutive_pairs(store: SchemaStore) -> Iterator[tuple[SchemaVersion, SchemaVersion]]:
    for name in store.names():
        versions = store.versions(name)
        yield from itertools.pairwise(versions)


def check_compatibility(store: SchemaStore) -> list[Incompatibility]:
    """Every incompatibility between consecutive kept versions; empty when all are FULL compatible."""
    return [problem for old, new in consecutive_pairs(store) for problem in check_pair(old, new)]


def main(argv: Sequence[str] | None = None) -> int:
    """`payments schemas check [--schemas-dir DIR]`: exit 0 when compatible, 1 when not, 2 on a bad store."""
    parser = argparse.ArgumentParser(prog="payments schemas check", description=__doc__.splitlines()[0])
    parser.add_argument("--schemas-dir", default=None, help="default: $PAYMENTS_SCHEMAS_DIR or <repo>/schemas")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        store = SchemaStore(Path(args.schemas_dir) if args.schemas_dir else None)
    except ContractError as exc:
        print(f"error: cannot load schemas: {exc}", file=sys.stderr)
        return 2
    pairs = 0
    problems: list[Incompatibility] = []
    for old, new in consecutive_pairs(store):
        pairs += 1
        found = check_pair(old, new)
        problems.extend(found)
        if found:
            for problem in found:
                print(f"FAIL {problem.message}")
        else:
            print(f"ok   {old.name} v{old.version} -> v{new.version} (backward and forward)")
    records = len(store.names())
    versions = sum(len(store.versions(name)) for name in store.names())
    print(f"checked {pairs} version pair(s) across {records} record(s), {versions} schema file(s): "
          f"{len(problems)} incompatibilit{'y' if len(problems) == 1 else 'ies'}")
    return 1 if problems else 0
