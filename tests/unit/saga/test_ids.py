"""The saga's deterministic ids are RFC 4122 version-5 UUIDs: the fast path equals uuid.uuid5 exactly, so
ids written before it (in topics, changelogs, read models) are the ids computed now."""

from __future__ import annotations

import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.ids import _NAMESPACE, derived_id, event_id


@settings(max_examples=500)
@given(st.lists(st.text(), min_size=1, max_size=5))
def test_a_derived_id_is_the_uuid5_of_its_parts_joined(parts: list[str]) -> None:
    assert derived_id(*parts) == str(uuid.uuid5(_NAMESPACE, ":".join(parts)))


@settings(max_examples=200)
@given(st.text(), st.integers(min_value=1, max_value=10**9), st.text())
def test_an_event_id_is_the_uuid5_of_payment_seq_and_cause(payment_id: str, seq: int, causation_id: str) -> None:
    assert event_id(payment_id, seq, causation_id) == str(
        uuid.uuid5(_NAMESPACE, f"event:{payment_id}:{seq}:{causation_id}"))


def test_a_known_id_is_unchanged() -> None:
    # Pinned: an id already on the topics must be computed the same way for ever.
    assert derived_id("p-1", "hold") == str(uuid.uuid5(uuid.UUID("6f1c3f5e-8a52-4c1e-9d0b-2b8f0e7f4a10"), "p-1:hold"))


@settings(max_examples=200)
@given(st.text(), st.text())
def test_a_participants_reply_id_is_the_uuid5_it_always_was(service: str, command_id: str) -> None:
    from consumers.ids import _NAMESPACE as PARTICIPANTS
    from consumers.ids import derived_event_id, reply_id

    assert reply_id(service, command_id) == str(uuid.uuid5(PARTICIPANTS, f"reply:{service}:{command_id}"))
    assert derived_event_id(service, command_id) == str(uuid.uuid5(PARTICIPANTS, f"{service}:{command_id}"))
