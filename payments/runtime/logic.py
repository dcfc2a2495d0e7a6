"""The pure side of a service: what the shared processing loop calls. No Kafka, no clock, no I/O."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Final, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from payments.contracts.envelope import Envelope
from payments.contracts.messages import Message
from payments.errors import PaymentsError

S = TypeVar("S")
# The config of every state model snapshotted to a changelog: frozen, and fields it does not know are
# ignored, not refused. During a rolling deploy (or a rollback) an instance of the older version reads
# snapshots the newer one wrote; refusing a new field crashed it (chaos seed 3, a field added to SagaState).
STATE_CONFIG: Final = ConfigDict(frozen=True, extra="ignore")


@dataclass(frozen=True)
class Incoming:
    """A decoded, validated record handed to `decide`."""

    topic: str  # base topic name (no test prefix), e.g. "payments.commands"
    partition: int
    offset: int
    key: str
    message: Message
    envelope: Envelope
    timestamp_ms: int | None = None  # the record's Kafka timestamp (CreateTime or LogAppendTime), if it has one


@dataclass(frozen=True)
class Outgoing:
    """A message to produce in the same transaction. `destination` is a base topic name.

    With `envelope`, the record carries that envelope's CloudEvents attributes (id, source, time,
    trace) instead of new ones from this service: a message forwarded unchanged keeps its origin.
    """

    destination: str
    key: str
    message: Message
    envelope: Envelope | None = None


@dataclass(frozen=True)
class Decision(Generic[S]):
    """The new state for the key (None deletes it) and the messages to emit.

    `notes` are what the Logic wants counted once the decision is committed (its metrics): the loop hands
    them to an `Observing` Logic's `observe` after the commit, never for an aborted transaction."""

    state: S | None
    outgoing: tuple[Outgoing, ...] = field(default_factory=tuple)
    notes: tuple[object, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Outcome:
    """A terminal outcome a decision reached, for the metrics (payments.runtime.metrics): a Logic that has
    `outcomes(decision) -> tuple[Outcome, ...]` reports them, and the loop records them once committed."""

    outcome: str  # e.g. SETTLED, FAILED, CANCELLED, REJECTED
    reason_code: str  # "" when the outcome has none
    duration_s: float | None = None  # from the start of the work to this outcome, where known
    since_publish_s: float | None = None  # from the upstream client's publish to this outcome, where known


class Logic(Protocol[S]):
    """A service's decision function plus how its state is stored in the changelog.

    `decide` and `fire_timers` must be pure: same inputs, same outputs, no side effects. The loop
    may call them again for the same input after an aborted transaction.

    `service` names the consumer group, the transactional id and the changelog; `input_topics` and
    `output_topics` are base topic names (`payments.contracts.topics`). The topology is derived from
    them, and the loop refuses (dead-letters) a decision that emits to a topic not in `output_topics`.
    """

    service: ClassVar[str]
    input_topics: ClassVar[tuple[str, ...]]
    output_topics: ClassVar[tuple[str, ...]]

    def key_of(self, message: Message, envelope: Envelope) -> str:
        """The record key `message` must arrive with (the loop dead-letters a mismatch as KeyMismatch)."""
        ...

    def decide(self, state: S | None, incoming: Incoming, now: datetime) -> Decision[S]: ...

    def fire_timers(self, key: str, state: S, now: datetime) -> Decision[S]: ...

    def next_deadline(self, state: S) -> datetime | None: ...

    def encode_state(self, state: S) -> bytes: ...

    def decode_state(self, data: bytes) -> S: ...


class Observing(Protocol):
    """The extra side of a Logic that counts what it decided (the risk service's models, in shadow too)."""

    def observe(self, notes: Sequence[object]) -> None:
        """The notes of a committed checkpoint's decisions, in order. Metrics only: must not raise; the loop
        logs an exception and goes on."""
        ...


CallKey = tuple[int, str, str]  # partition, state key, call id


@dataclass(frozen=True)
class Call:
    """A call out of the service (an HTTP request, say) that a key's state records as not answered yet.
    `call_id` is unique within the key (the command id that asked for it); `request` is what the
    performer needs to make it (payments.runtime.calls)."""

    call_id: str
    request: Any


@dataclass(frozen=True)
class Completion:
    """A call's result, handed to `Calling.complete` in a later transaction than the one that recorded it."""

    partition: int
    key: str
    call_id: str
    result: Any

    @property
    def ident(self) -> CallKey:
        return self.partition, self.key, self.call_id


class Calling(Protocol[S]):
    """The extra side of a Logic that calls out (the partner gateway), run with a call runner.

    `decide` records a call in the key's state instead of making it; once that state is committed the
    loop starts every call `calls(state)` lists that is not running yet, and when one finishes, the
    loop hands its result to `complete` (pure, like `decide`) in a later transaction, which must drop
    the call from `calls(state)`. A completion for a call the state no longer lists is discarded.
    """

    def calls(self, state: S) -> tuple[Call, ...]: ...

    def complete(self, state: S, completion: Completion, now: datetime) -> Decision[S]: ...


PART_SEPARATOR = "\x1f"  # changelog key of a part: "<state key>\x1f<part>" (the head part is the state key alone)


def part_key(key: str, part: str) -> str:
    return key if not part else f"{key}{PART_SEPARATOR}{part}"


def split_part_key(changelog_key: str) -> tuple[str, str]:
    key, _, part = changelog_key.partition(PART_SEPARATOR)
    return key, part


class Parted(Protocol[S]):
    """The extra side of a Logic whose state is large and changes a little at a time (a hot account): the
    changelog holds it as parts, one record per part, so a change writes only the parts it touched and
    the bytes per change do not grow with the state. The head part is named "" (its record key is the
    state key itself); deleting the state deletes every part."""

    def encode_parts(self, before: S | None, after: S | None) -> dict[str, bytes | None]:
        """The part records for the change from `before` (committed) to `after`: part -> bytes, or None
        to delete that part. Only what changed."""
        ...

    def decode_parts(self, parts: dict[str, bytes]) -> S | None:
        """The state from its live parts (None when the head is missing: nothing to restore)."""
        ...


class InputRejected(PaymentsError):
    """Raised by `decide` for a record that is well-formed but not acceptable input for this service (a
    message of another type on a command topic, say): the loop dead-letters it with these codes, as
    bad input from upstream rather than a bug (`ProcessingError`)."""

    def __init__(self, error_class: str, reason_code: str, detail: str) -> None:
        super().__init__(detail)
        self.error_class = error_class
        self.reason_code = reason_code
        self.detail = detail


M = TypeVar("M", bound=BaseModel)


class JsonState(Generic[M]):
    """Changelog codec for a state that is a pydantic model: its JSON. Set `state_model` in the subclass."""

    state_model: type[M]

    def encode_state(self, state: M) -> bytes:
        return state.model_dump_json().encode()

    def decode_state(self, data: bytes) -> M:
        return self.state_model.model_validate_json(data)


class NoTimers(Generic[S]):
    """For a service that never waits on time: no deadlines, nothing fires."""

    def fire_timers(self, key: str, state: S, now: datetime) -> Decision[S]:
        return Decision(state)

    def next_deadline(self, state: S) -> datetime | None:
        return None


class Forgets(Generic[S]):
    """Timers for a state kept only to answer repeats: deleted (a tombstone) once `forget_at(state)` passed.
    The subclass says when; None keeps the state (it still has work under way)."""

    def forget_at(self, state: S) -> datetime | None:
        raise NotImplementedError

    def next_deadline(self, state: S) -> datetime | None:
        return self.forget_at(state)

    def fire_timers(self, key: str, state: S, now: datetime) -> Decision[S]:
        at = self.forget_at(state)
        return Decision(None) if at is not None and at <= now else Decision(state)


class NoState:
    """For a stateless service: nothing is kept, nothing is snapshotted, nothing fires."""

    def fire_timers(self, key: str, state: None, now: datetime) -> Decision[None]:
        return Decision(None)

    def next_deadline(self, state: None) -> datetime | None:
        return None

    def encode_state(self, state: None) -> bytes:
        raise AssertionError("a stateless service has no state to encode")

    def decode_state(self, data: bytes) -> None:
        raise AssertionError(f"a stateless service found {len(data)} bytes in its changelog")
