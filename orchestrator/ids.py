"""Deterministic ids: the same decision yields the same ids, which keeps `decide` pure and replayable."""

from __future__ import annotations

import uuid
from functools import lru_cache

from payments.ids import uuid5

_NAMESPACE = uuid.UUID("6f1c3f5e-8a52-4c1e-9d0b-2b8f0e7f4a10")


def event_id(payment_id: str, seq: int, causation_id: str) -> str:
    """Unique per committed event, also across a payment id's generations: a payment forgotten after its
    retention (docs/saga.md) starts again at seq 1 if a command finds it, caused by another message."""
    return uuid5(_NAMESPACE, f"event:{payment_id}:{seq}:{causation_id}")


@lru_cache(maxsize=65_536)  # the same ids are asked again and again while a payment is in flight (~10 MB)
def derived_id(*parts: str) -> str:
    """An id for a command or hold derived from what caused it (e.g. a payment and a step attempt)."""
    return uuid5(_NAMESPACE, ":".join(parts))
