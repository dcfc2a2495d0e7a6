"""Deterministic ids for what participants emit: the same input yields the same id.

A redelivered command therefore gets a byte-identical reply (same `reply_id`). The orchestrator
accepts a reply only while the saga awaits an attempt of that step (it matches the reply's
`command_id`), so a second copy of an answer already applied changes nothing.
"""

from __future__ import annotations

import uuid

from payments.ids import uuid5

_NAMESPACE = uuid.UUID("0b7d8a52-5f0e-4c4b-9a63-3f2d1c9e7a41")


def reply_id(service: str, command_id: str) -> str:
    """The id of `service`'s reply to the command `command_id`."""
    return uuid5(_NAMESPACE, f"reply:{service}:{command_id}")


def derived_event_id(kind: str, source_event_id: str) -> str:
    """The id of a message published because of the event `source_event_id`."""
    return uuid5(_NAMESPACE, f"{kind}:{source_event_id}")
