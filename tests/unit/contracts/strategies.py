"""Hypothesis strategies for every message model, derived from the models' annotations."""

from __future__ import annotations

import types
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from hypothesis import strategies as st
from pydantic import AwareDatetime, BaseModel

from payments.contracts.types import AvroHint
from payments.money import CURRENCY_EXPONENTS, Money

MILLIS_DATETIMES = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=d.microsecond - d.microsecond % 1000))

MONEY = st.builds(
    Money,
    amount_minor=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    currency=st.one_of(st.sampled_from(sorted(CURRENCY_EXPONENTS)), st.text(max_size=4)),
)


def _split(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any]]:
    while get_origin(annotation) is Annotated:
        base, *extra = get_args(annotation)
        metadata = [*metadata, *extra]
        annotation = base
    return annotation, metadata


def _bounds(metadata: list[Any]) -> tuple[int | None, int | None]:
    low: int | None = None
    high: int | None = None
    for item in metadata:
        for constraint in getattr(item, "metadata", [item]):  # FieldInfo carries its own metadata list
            if isinstance(constraint, annotated_types.Ge):
                low = int(constraint.ge) if low is None else max(low, int(constraint.ge))
            if isinstance(constraint, annotated_types.Le):
                high = int(constraint.le) if high is None else min(high, int(constraint.le))
    return low, high


def for_annotation(annotation: Any, metadata: list[Any]) -> st.SearchStrategy[Any]:  # noqa: PLR0911 - one branch per type
    annotation, metadata = _split(annotation, metadata)
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        assert len(members) == 1
        return st.none() | for_annotation(members[0], metadata)
    if origin is Literal:
        return st.sampled_from(get_args(annotation))
    if origin is list:
        return st.lists(for_annotation(get_args(annotation)[0], []), max_size=4)
    if origin is dict:
        return st.dictionaries(st.text(max_size=8), for_annotation(get_args(annotation)[1], []), max_size=4)
    if annotation is Money:
        return MONEY
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):  # a nested record
        return for_model(annotation)
    if annotation is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if annotation is str:
        return st.text(max_size=40)
    if annotation is int:
        low, high = _bounds(metadata)
        return st.integers(min_value=low, max_value=high)
    if annotation in (datetime, AwareDatetime):
        assert any(isinstance(m, AvroHint) for m in metadata)
        return MILLIS_DATETIMES
    raise AssertionError(f"no strategy for {annotation!r}")


def for_model(cls: type[BaseModel]) -> st.SearchStrategy[Any]:
    fields = {
        name: for_annotation(info.annotation, list(info.metadata)) for name, info in cls.model_fields.items()
    }
    return st.fixed_dictionaries(fields).map(lambda kwargs: cls(**kwargs))
