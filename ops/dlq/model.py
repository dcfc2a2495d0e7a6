"""The dead letters of `payments dlq`, their selection, grouping and redrive planning: pure, no I/O.

A `Letter` is one record of the dead-letter topic (payments.runtime.deadletter wrote it); a `Redrive` one
record of the audit topic. `plan_redrive` decides which selected letters a run republishes and why it skips
each other one; the edge (ops.dlq.kafka) reads and writes, and asks it again once it has fenced other runs.
"""

from __future__ import annotations

import getpass
import json
import socket
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Final

from ops.errors import OpsError
from payments.contracts.codec import Serde
from payments.contracts.errors import ContractError
from payments.contracts.topics import FUNDS_COMMANDS, INTAKE_CLAIMS
from payments.runtime.deadletter import DeadLetter, Headers
from payments.runtime.topics import Topics

REDRIVE_RECORDS_MAX: Final = 10_000  # per run (one transaction, held in memory); the rest on the next run
# Topics whose key is not the payment id (docs/contracts.md §1): there the payment id comes from the value only.
NOT_PAYMENT_KEYED: Final = frozenset({FUNDS_COMMANDS, INTAKE_CLAIMS})
# Headers saying the DLQ copy is not the whole record (payments.runtime.deadletter), and why that refuses a redrive.
INCOMPLETE: Final = (
    ("dlq_value_truncated", "the value was truncated (dlq_value_truncated)"),
    ("dlq_original_key_bytes", "the key was cut (dlq_original_key_bytes)"),
    ("dlq_original_headers_dropped", "the original headers were dropped (dlq_original_headers_dropped)"),
)


class DlqError(OpsError):
    """A dead-letter command could not do what it was asked (the message says what, and what happened)."""




@dataclass(frozen=True)
class Letter:
    """One record of the dead-letter topic. `value` is None when it was not kept (only its size is)."""

    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    value_bytes: int
    headers: Headers
    dead: DeadLetter | None  # None: the record has no (readable) dlq_* headers, so it is not one of ours
    payment_id: str | None = None

    @property
    def position(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def error_class(self) -> str:
        return self.dead.error_class if self.dead else "(not a dead letter)"

    @property
    def reason_code(self) -> str:
        return self.dead.reason_code if self.dead else "missing_dlq_headers"

    @property
    def source(self) -> tuple[str, int, int] | None:
        return (self.dead.source_topic, self.dead.source_partition, self.dead.source_offset) if self.dead else None

    def header(self, name: str) -> str | None:
        found = [value for header, value in self.headers if header == name]
        return found[-1].decode(errors="replace") if found else None

    def incomplete(self) -> str | None:
        """Why the DLQ copy is not the whole original record, or None when it is."""
        reasons = [why for name, why in INCOMPLETE if self.header(name) is not None]
        return "; ".join(reasons) or None


def letter_of(partition: int, offset: int, *, timestamp_ms: int, key: bytes | None, value: bytes | None,
              headers: Headers) -> Letter:
    try:
        dead: DeadLetter | None = DeadLetter.from_headers(headers)
    except (KeyError, ValueError):  # a missing or unreadable dlq_* header: someone else's record on the DLQ
        dead = None
    return Letter(partition, offset, timestamp_ms, key, value, len(value or b""), headers, dead)


def payment_id_of(letter: Letter, serde: Serde, topics: Topics) -> str | None:
    """The payment the dead letter is about: the decoded value's, else the key on a payment-keyed topic."""
    if letter.value and not letter.incomplete():
        try:
            return serde.decode(letter.value).payment_id
        except (ContractError, ValueError):  # the usual case on a DLQ: the value is why it is here
            pass
    keyed_otherwise = {topics.name(name) for name in NOT_PAYMENT_KEYED}
    if letter.key and letter.source and letter.source[0] not in keyed_otherwise:
        try:
            return letter.key.decode()
        except UnicodeDecodeError:
            return None
    return None


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command is about; None matches anything. `offsets` is (partition, first, last)."""

    offsets: tuple[int, int, int] | None = None
    error_class: str | None = None
    reason_code: str | None = None
    payment_id: str | None = None
    source_topic: str | None = None
    since_ms: int | None = None

    def matches(self, letter: Letter) -> bool:
        if self.offsets is not None:
            partition, first, last = self.offsets
            if letter.partition != partition or not first <= letter.offset <= last:
                return False
        return ((self.error_class is None or letter.error_class == self.error_class)
                and (self.reason_code is None or letter.reason_code == self.reason_code)
                and (self.payment_id is None or letter.payment_id == self.payment_id)
                and (self.source_topic is None or (letter.source is not None and letter.source[0] == self.source_topic))
                and (self.since_ms is None or letter.timestamp_ms >= self.since_ms))


def parse_position(text: str) -> tuple[int, int]:
    """`P:O` -> (partition, offset)."""
    partition, sep, offset = text.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise DlqError(f"{text!r} is not a DLQ position <partition>:<offset> (e.g. 3:1042)")
    return int(partition), int(offset)


def parse_offsets(text: str) -> tuple[int, int, int]:
    """`P:FROM-TO` (both included) or `P:O` -> (partition, first, last)."""
    partition, sep, span = text.partition(":")
    first, dash, last = span.partition("-")
    if not sep or not partition.isdigit() or not first.isdigit() or (dash and not last.isdigit()):
        raise DlqError(f"{text!r} is not <partition>:<from>-<to> (both included, e.g. 3:100-120) "
                       f"or <partition>:<offset>")
    bounds = (int(first), int(last) if dash else int(first))
    if bounds[1] < bounds[0]:
        raise DlqError(f"{text!r}: the range ends before it starts")
    return int(partition), bounds[0], bounds[1]


def parse_since(text: str) -> int:
    """An ISO 8601 time (UTC when it has no offset) -> epoch milliseconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise DlqError(f"--since {text!r} is not an ISO 8601 time (e.g. 2026-12-02T10:00:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def format_age(seconds: float) -> str:
    """A short human age: 42s, 12m03s, 5h12m, 3d04h."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86_400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86_400}d{whole % 86_400 // 3600:02d}h"


# -- the audit of redrives ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Redrive:
    """One audit record: a dead letter republished, where to, by whom and why."""

    dlq_topic: str
    dlq_partition: int
    dlq_offset: int
    source_topic: str
    source_partition: int
    source_offset: int
    target_topic: str
    target_partition: int
    target_offset: int
    who: str
    when: str  # ISO 8601 UTC
    reason: str

    @property
    def key(self) -> bytes:
        return audit_key(self.dlq_topic, self.dlq_partition, self.dlq_offset)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Redrive:
        fields = json.loads(data)
        return cls(**{name: fields[name] for name in cls.__dataclass_fields__})


def audit_key(dlq_topic: str, partition: int, offset: int) -> bytes:
    return f"{dlq_topic}/{partition}/{offset}".encode()


@dataclass(frozen=True)
class Audit:
    """What the audit topic says was redriven from one DLQ, by DLQ position and by source position."""

    by_position: dict[tuple[int, int], Redrive] = field(default_factory=dict)
    by_source: dict[tuple[str, int, int], Redrive] = field(default_factory=dict)

    @classmethod
    def of(cls, redrives: Iterable[Redrive], dlq_topic: str) -> Audit:
        audit = cls()
        for redrive in redrives:
            if redrive.dlq_topic != dlq_topic:
                continue
            # The first redrive of a position wins: the audit is written once per key, so a second one would
            # be a bug; keeping the first keeps the true history.
            audit.by_position.setdefault((redrive.dlq_partition, redrive.dlq_offset), redrive)
            audit.by_source.setdefault((redrive.source_topic, redrive.source_partition, redrive.source_offset),
                                       redrive)
        return audit

    def of_letter(self, letter: Letter) -> Redrive | None:
        return self.by_position.get((letter.partition, letter.offset))


@dataclass(frozen=True)
class Skip:
    letter: Letter
    why: str


@dataclass(frozen=True)
class Plan:
    redrive: list[Letter]
    skipped: list[Skip]


def plan_redrive(letters: Iterable[Letter], selection: Selection, audit: Audit, topics_known: frozenset[str], *,
                 records_max: int = REDRIVE_RECORDS_MAX) -> Plan:
    """Which selected dead letters to redrive, and why each other selected one is skipped.

    A dead letter is redriven at most once; and since two services reading one topic can each dead-letter the
    same source record, a source record is redriven at most once too (every reader of the topic gets it again).
    """
    chosen: list[Letter] = []
    skipped: list[Skip] = []
    sources: dict[tuple[str, int, int], str] = {}
    for letter in sorted(letters, key=lambda item: (item.partition, item.offset)):
        if not selection.matches(letter):
            continue
        done = audit.of_letter(letter)
        if done is not None:
            skipped.append(Skip(letter, f"already redriven by {done.who} at {done.when} to {done.target_topic} "
                                        f"{done.target_partition}:{done.target_offset} ({done.reason!r})"))
            continue
        if letter.dead is None or letter.source is None:
            skipped.append(Skip(letter, "not a dead letter of ours: no readable dlq_* headers"))
            continue
        topic, partition, offset = letter.source
        incomplete = letter.incomplete()
        if incomplete:
            skipped.append(Skip(letter, f"the DLQ copy is not the whole record: {incomplete}; fetch the original "
                                        f"from {topic} {partition}:{offset} while its retention allows"))
            continue
        if topic not in topics_known:
            skipped.append(Skip(letter, f"source topic {topic} is not a topic of this deployment's topology"))
            continue
        earlier = audit.by_source.get(letter.source)
        if earlier is not None:
            skipped.append(Skip(letter, f"its source record {topic} {partition}:{offset} was already redriven "
                                        f"from dlq {earlier.dlq_partition}:{earlier.dlq_offset} by {earlier.who}"))
            continue
        if letter.source in sources:
            skipped.append(Skip(letter, f"its source record {topic} {partition}:{offset} is redriven from "
                                        f"dlq {sources[letter.source]} in this run"))
            continue
        if len(chosen) == records_max:
            skipped.append(Skip(letter, f"over the limit of {records_max} redrives per run: run again"))
            continue
        sources[letter.source] = letter.position
        chosen.append(letter)
    return Plan(chosen, skipped)


@dataclass(frozen=True)
class Group:
    error_class: str
    reason_code: str
    count: int
    redriven: int
    oldest_ms: int
    newest_ms: int


def group_letters(letters: Iterable[Letter], audit: Audit) -> list[Group]:
    """Counts per (error class, reason code), most frequent first, with the oldest and newest record time."""
    found: dict[tuple[str, str], list[Letter]] = {}
    for letter in letters:
        found.setdefault((letter.error_class, letter.reason_code), []).append(letter)
    groups = [Group(error_class, reason_code, len(members), sum(audit.of_letter(m) is not None for m in members),
                    min(m.timestamp_ms for m in members), max(m.timestamp_ms for m in members))
              for (error_class, reason_code), members in found.items()]
    return sorted(groups, key=lambda group: (-group.count, group.error_class, group.reason_code))


def operator() -> str:
    """Who runs this command, as the audit names them: user@host."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name in the environment nor in the password database (a container)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"

