"""Deterministic ids for what participants emit: the same input yields the same id.

A redelivered command therefore gets a reply with the same `reply_id`, and the orchestrator
(which deduplicates replies by id) sees one answer however often the command arrives.
"""

from __future__ import annotations

import uuid

_NAMESPACE = uuid.UUID("0b7d8a52-5f0e-4c4b-9a63-3f2d1c9e7a41")


def reply_id(service: str, command_id: str) -> str:
    """The id of `service`'s reply to the command `command_id`."""
    return str(uuid.uuid5(_NAMESPACE, f"reply:{service}:{command_id}"))


def derived_event_id(kind: str, source_event_id: str) -> str:
    """The id of a message published because of the event `source_event_id`."""
    return str(uuid.uuid5(_NAMESPACE, f"{kind}:{source_event_id}"))
