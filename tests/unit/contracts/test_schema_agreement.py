"""Every model agrees with the latest Avro schema of its record: same fields, in the same
order, same optionality and defaults, same types (walking both, nested records included)."""

from __future__ import annotations

import types
from datetime import datetime
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
from pydantic import AwareDatetime, BaseModel
from pydantic_core import PydanticUndefined

from payments.contracts.events import FeatureContribution, ShadowScore
from payments.contracts.messages import MESSAGE_TYPES
from payments.contracts.schema_store import default_store
from payments.contracts.types import INT32_MAX, INT32_MIN, INT64_MAX, INT64_MIN, AvroHint
from payments.money import Money


def avro_shape(schema: Any, named: dict[str, Any] | None = None) -> Any:  # noqa: PLR0911 - one branch per type
    """Reduce a fastavro-parsed type to a comparable shape; references to named types are expanded."""
    named = {} if named is None else named
    if isinstance(schema, list):
        return ("union", *(avro_shape(branch, named) for branch in schema))
    if isinstance(schema, str):
        return named.get(schema, schema)
    kind = schema["type"]
    if schema.get("logicalType") == "timestamp-millis":
        return "timestamp-millis"
    if kind == "record":
        shape = ("record", schema["name"], tuple((f["name"], avro_shape(f["type"], named)) for f in schema["fields"]))
        named[schema["name"]] = shape
        return shape
    if kind == "array":
        return ("array", avro_shape(schema["items"], named))
    if kind == "map":
        return ("map", avro_shape(schema["values"], named))
    if isinstance(kind, str) and kind in {"string", "long", "int", "boolean", "null", "double"}:
        return kind
    raise AssertionError(f"unexpected Avro type {schema!r}")


def python_shape(annotation: Any, metadata: list[Any]) -> Any:  # noqa: PLR0911 - one branch per type
    while get_origin(annotation) is Annotated:
        annotation, *extra = get_args(annotation)
        metadata = [*metadata, *extra]
    hints = [m.avro_type for m in metadata if isinstance(m, AvroHint)]
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        assert len(members) == 1, "only optional unions are modelled"
        return ("union", "null", python_shape(members[0], metadata))
    if origin is Literal:
        assert all(isinstance(v, str) for v in get_args(annotation))
        return "string"
    if origin is list:
        return ("array", python_shape(get_args(annotation)[0], []))
    if origin is dict:
        key, value = get_args(annotation)
        assert python_shape(key, []) == "string"
        return ("map", python_shape(value, []))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return ("record", MODEL_RECORD_NAMES[annotation], model_fields_shape(annotation))
    if annotation is str:
        return "string"
    if annotation is int:
        return hints[0] if hints else _int_kind_from_bounds(metadata)
    if annotation is bool:
        return "boolean"
    if annotation is float:
        assert hints == ["double"], "a float field is an Avro double, and only a model input (risk features)"
        return "double"
    if annotation in (datetime, AwareDatetime):
        assert hints == ["timestamp-millis"]
        return "timestamp-millis"
    raise AssertionError(f"unmapped annotation {annotation!r}")


def _int_kind_from_bounds(metadata: list[Any]) -> str:
    """Money lives outside the contracts package and states its Avro long by its int64 bounds."""
    bounds = {(type(m).__name__, getattr(m, "ge", getattr(m, "le", None))) for m in metadata}
    if {("Ge", INT64_MIN), ("Le", INT64_MAX)} <= bounds:
        return "long"
    if {("Ge", INT32_MIN), ("Le", INT32_MAX)} <= bounds:
        return "int"
    raise AssertionError(f"an int field must be bounded to int32 or int64, got {metadata!r}")


MODEL_RECORD_NAMES: dict[type[BaseModel], str] = {Money: "payments.common.Money",
                                                   FeatureContribution: "payments.risk.FeatureContribution",
                                                   ShadowScore: "payments.risk.ShadowScore"}


def model_fields_shape(cls: type[BaseModel]) -> tuple[tuple[str, Any], ...]:
    return tuple((name, python_shape(info.annotation, list(info.metadata))) for name, info in cls.model_fields.items())


@pytest.mark.parametrize("name", sorted(MESSAGE_TYPES))
def test_model_fields_and_types_agree_with_latest_schema(name: str) -> None:
    cls = MESSAGE_TYPES[name]
    schema = default_store().latest(name).parsed
    assert schema["name"] == cls.AVRO_NAME == name
    assert model_fields_shape(cls) == avro_shape(schema)[2]


@pytest.mark.parametrize("name", sorted(MESSAGE_TYPES))
def test_optionality_and_defaults_agree_with_latest_schema(name: str) -> None:
    cls = MESSAGE_TYPES[name]
    for avro_field in default_store().latest(name).parsed["fields"]:
        info = cls.model_fields[avro_field["name"]]
        if "default" not in avro_field:
            assert info.is_required(), f"{name}.{avro_field['name']} has no Avro default, so must be required"
            continue
        assert not info.is_required(), f"{name}.{avro_field['name']} has an Avro default, so must be optional"
        model_default = info.default_factory() if info.default is PydanticUndefined else info.default  # type: ignore[call-arg]
        assert model_default == avro_field["default"], f"{name}.{avro_field['name']} defaults differ"


def test_every_model_has_a_schema_and_every_schema_a_model() -> None:
    assert set(MESSAGE_TYPES) == set(default_store().names())


def test_every_record_keeps_contiguous_versions_starting_at_one() -> None:
    store = default_store()
    for name in store.names():
        assert [s.version for s in store.versions(name)] == list(range(1, len(store.versions(name)) + 1))
