"""What the runner, replay and the CLI need to know about one projection, declared once in the registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from payments.contracts.messages import Message
from projections.runner import BatchProjection, RecordMeta

Rows = dict[str, list[tuple[object, ...]]]


class Fold(Protocol):
    """The projection's tables as a pure fold of its records (replay verification compares them)."""

    def apply(self, message: Message, meta: RecordMeta) -> None: ...

    def rows(self) -> Rows: ...


@dataclass(frozen=True)
class ProjectionSpec:
    """One read model.

    `migrations` are the files under projections/migrations that create and change its tables, in
    order (every file but the shared core belongs to exactly one projection; a unit test checks it).
    Its tables and trigger functions are not listed anywhere: replay reads them from the schema
    those migrations build.
    """

    name: str
    summary: str
    projection: Callable[[], BatchProjection]
    fold: Callable[[], Fold]
    migrations: tuple[str, ...]

    def __post_init__(self) -> None:
        assert self.name == self.projection().name, f"{self.name} names a projection called {self.projection().name}"
