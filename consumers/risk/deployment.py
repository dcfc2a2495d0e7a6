"""Which risk model decides and which runs in shadow: operator changes, each recorded as an event.

`risk.models` (one partition, kept forever) holds one `ModelChange` per operator command (`payments risk
shadow|promote|rollback|unshadow`, ops/risk_models.py), each stating the whole resulting deployment, so the
last record is all a reader needs and the topic is the audit of every change: who, when, why. Every risk
instance reads it at start and follows it while it runs; which model decided a payment is in the payment's
`RiskAssessed` (model_version, and a candidate's score under `shadow`).

Pure: the fold and the planning of a change; reading and writing the topic is the composition root's.
Records are JSON of a versioned model, like the dead-letter redrive audit: an operational topic that only
this system reads, not a contract (docs/contracts.md lists the contracts).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from consumers.risk.scoring import RiskModelError

Action = Literal["shadow", "unshadow", "promote", "rollback"]
Version = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._-]+$")]


class ModelChange(BaseModel):
    """One operator change, and the deployment it leaves (active, candidate, what a rollback returns to)."""

    model_config = ConfigDict(frozen=True, extra="ignore")  # a newer writer's extra field must not stop a reader

    format: Literal["risk-models/1"] = "risk-models/1"
    change_id: str
    at: datetime
    action: Action
    active: Version
    candidate: Version | None = None
    previous_active: Version | None = None  # the model `rollback` makes active again
    operator: str
    reason: str


@dataclass(frozen=True)
class Deployment:
    active: str
    candidate: str | None = None
    previous_active: str | None = None
    changed_by: ModelChange | None = None  # None: nothing recorded yet, the service's configured default


def current(changes: Iterable[ModelChange], default: Deployment) -> Deployment:
    """The deployment after `changes` (in log order): the last one states it whole."""
    last = None
    for change in changes:
        last = change
    if last is None:
        return default
    return Deployment(last.active, last.candidate, last.previous_active, last)


def plan(now: Deployment, action: Action, version: str | None) -> tuple[str, str | None, str | None]:
    """(active, candidate, previous active) after `action` on `now`; RiskModelError when it makes no sense."""
    match action:
        case "shadow":
            if version is None or version == now.active:
                raise RiskModelError(f"name a candidate other than the active model {now.active}")
            return now.active, version, now.previous_active
        case "unshadow":
            if now.candidate is None:
                raise RiskModelError("no candidate runs in shadow")
            return now.active, None, now.previous_active
        case "promote":
            chosen = version or now.candidate
            if chosen is None:
                raise RiskModelError("no candidate runs in shadow: name the model to promote")
            if chosen == now.active:
                raise RiskModelError(f"{chosen} is already the active model")
            candidate = None if now.candidate == chosen else now.candidate
            return chosen, candidate, now.active
        case "rollback":
            if now.previous_active is None:
                raise RiskModelError(f"no earlier active model to roll back to from {now.active}")
            return now.previous_active, None, now.active
    raise AssertionError(action)
