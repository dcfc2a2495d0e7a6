"""`payments inspect <payment_id> [--json]`: one payment's story, from the log and from the read models.

What it reads, in order (read only; it writes nothing anywhere):

  1. Kafka, `read_committed`, from the beginning of each partition to its end offset captured at the
     start, and only the ONE partition the payment's key maps to (murmur2 of the key, like every
     producer of the project, `payments.runtime.topics`): `intake.commands`, `intake.claim-results`,
     `payments.admitted`, `payments.events`, `risk.replies`, `funds.replies`, `partner.commands`,
     `partner.replies`, `payments.settlements` and `payments.dlq` (dead letters keep their original key,
     and their reason is shown), all keyed by payment id; then the topics keyed by an account
     (docs/participants.md), on the partition of the account its `PaymentInitiated` names: `risk.commands`
     (the payee), `risk.scoring`, `risk.outcomes` and `funds.commands` (the payer). Only records whose key
     is the payment id (or that account) are decoded. `payments.commands` is not read: upstream may put a
     command on any partition, so only a scan of the whole topic could find it; `intake.commands` holds the
     same commands repartitioned.
  2. PostgreSQL (`DATABASE_URL`): the `payment_status` row, how many `payment_timeline` rows it has,
     its journal entries with their postings (and any `ledger_unposted` event), and for each of its
     settlement events whether `settlement_report` counted it and that report row. A database that
     cannot be reached, or tables that are missing, are said in one line; the Kafka part still shows.

The pure part, `inspect_records`, turns the decoded records into a timeline ordered by record time
and folds the saga state with `orchestrator.state.apply` (the orchestrator's own fold), so what it
says the saga waits for is what the orchestrator's state holds.
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, Literal, TextIO, TypeVar

import psycopg
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE
from confluent_kafka import Message as KafkaRecord
from confluent_kafka.admin import AdminClient

from ops.errors import OpsError
from ops.settings import Settings
from orchestrator.config import SagaConfig
from orchestrator.policy import Step
from orchestrator.saga import OrchestratorLogic
from orchestrator.state import ALERT, RETIRABLE, SagaState, SagaStateError, apply, forget_at
from orchestrator.timers import next_deadline
from payments.contracts import topics as base
from payments.contracts.base import Command, ParticipantCommand, ParticipantReply, SagaEvent
from payments.contracts.codec import Serde
from payments.contracts.errors import ContractError
from payments.contracts.events import FeatureContribution, ShadowScore
from payments.contracts.messages import (
    FundsCommitResult,
    FundsReleaseResult,
    FundsReservationResult,
    Message,
    PartnerQueryResult,
    PartnerSubmissionResult,
    PaymentInitiated,
    RiskAssessmentCompleted,
    SettlementEvent,
)
from payments.contracts.validation import UUID_PATTERN
from payments.money import Money, is_known_currency
from payments.runtime.connection import Kafka, client_config
from payments.runtime.reader import Partition, committed_records, end_offsets
from payments.runtime.records import headers_of
from payments.runtime.retry import retry_kafka
from projections.report import report_key
from projections.status import STATUS_COLUMNS, StatusRow

# Topics keyed by payment id, in the order records of the same millisecond are shown: what the saga reads,
# then what it decides from it (events, then the commands they imply), then what follows from the events.
PAYMENT_KEYED: Final = (base.INTAKE_COMMANDS, base.INTAKE_CLAIM_RESULTS, base.ADMITTED, base.RISK_REPLIES,
                        base.FUNDS_REPLIES, base.PARTNER_REPLIES, base.EVENTS,
                        base.PARTNER_COMMANDS, base.SETTLEMENTS, base.DLQ)
# Topics keyed by one of the payment's accounts: which one.
ACCOUNT_KEYED: Final[dict[str, Literal["payer", "payee"]]] = {
    base.RISK_COMMANDS: "payee", base.RISK_SCORING: "payer", base.RISK_OUTCOMES: "payer", base.FUNDS_COMMANDS: "payer"}
SAME_TIME_ORDER: Final = (*PAYMENT_KEYED[:-3], *ACCOUNT_KEYED, *PAYMENT_KEYED[-3:])
READ_TIMEOUT_S: Final = 120.0  # per read of the partitions; a longer log needs --timeout-s
DB_CONNECT_TIMEOUT_S: Final = 5
SUMMARY_FIELDS: Final = ("amount", "decision", "score_bp", "reasons", "model_version", "contributions", "shadow",
                         "outcome", "status", "verdict", "stage", "reason_code", "reason", "step", "attempt",
                         "partner_reference", "refund_id", "refunded_total", "kind", "detail")
DETAIL_CHARS_MAX: Final = 120
# The step the saga waits on -> the participant that answers it and the reply it waits for.
AWAITED: Final[dict[Step, tuple[str, type[ParticipantReply]]]] = {
    "RISK": ("risk", RiskAssessmentCompleted),
    "FUNDS_RESERVE": ("funds", FundsReservationResult),
    "FUNDS_COMMIT": ("funds", FundsCommitResult),
    "FUNDS_RELEASE": ("funds", FundsReleaseResult),
    "PARTNER_SUBMIT": ("partner", PartnerSubmissionResult),
    "PARTNER_QUERY": ("partner", PartnerQueryResult),
}


class InspectError(OpsError):
    """`payments inspect` cannot answer: a malformed id, or nothing about the payment in the log."""


class MalformedPaymentIdError(InspectError):
    """The id is not shaped like a payment id (a UUID, docs/contracts.md)."""


class PaymentNotFoundError(InspectError):
    """The payment's partition of payments.events holds no event of it."""


# -- murmur2: where a key's records are ------------------------------------------------------------


def murmur2(data: bytes) -> int:
    """Kafka's `Utils.murmur2` (the Java client's default partitioner hash, librdkafka's `murmur2_random`
    for a keyed record), as an unsigned 32-bit int. The kernel never needs it (its producers let
    librdkafka choose); tests/e2e/partitioning.py holds the same function for the tests."""
    m, r = 0x5BD1E995, 24
    h = (0x9747B28C ^ len(data)) & 0xFFFFFFFF
    whole = len(data) // 4 * 4
    for i in range(0, whole, 4):
        k = (int.from_bytes(data[i:i + 4], "little") * m) & 0xFFFFFFFF
        k = ((k ^ (k >> r)) * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    tail = data[whole:]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h = ((h ^ tail[0]) * m) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


def partition_of(key: str, partitions: int) -> int:
    assert partitions > 0, partitions
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def check_payment_id(payment_id: str) -> str:
    if not UUID_PATTERN.match(payment_id):
        raise MalformedPaymentIdError(f"{payment_id[:80]!r} is not a payment id: payment ids are UUIDs "
                                      "(8-4-4-4-12 hex digits)")
    return payment_id


# -- the pure part: records -> timeline and saga state ------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One decoded record of the payment, where it was and when (the record's timestamp)."""

    topic: str  # the base name (payments.contracts.topics), without the deployment's prefix
    partition: int
    offset: int
    at: datetime
    message: Message | None  # None: a record with the payment's key that could not be decoded
    problem: str | None = None


@dataclass(frozen=True)
class Entry:
    at: datetime
    topic: str
    partition: int
    offset: int
    kind: str  # command | event | participant_command | reply | settlement | intake | dead_letter | undecodable
    type: str
    id: str | None
    seq: int | None
    summary: str


@dataclass(frozen=True)
class Waiting:
    step: str
    attempt: int
    participant: str
    reply_type: str
    command_id: str
    since: datetime
    timeout_at: datetime | None
    command_seen: bool  # the awaited command is on the participant's command topic
    reply_seen: bool  # a reply to it is on the participant's reply topic (the saga has not read it yet)


@dataclass(frozen=True)
class SagaView:
    status: str
    terminal: bool
    alert: bool
    last_event_type: str
    last_seq: int
    last_event_at: datetime
    generations: int  # > 1: the id was used again after the orchestrator forgot it (docs/saga.md, Retention)
    waiting: Waiting | None
    kept_until: datetime | None  # when the orchestrator forgets the finished state
    fold_error: str | None
    description: str


@dataclass(frozen=True)
class Inspection:
    payment_id: str
    timeline: list[Entry]
    saga: SagaView | None
    payer_account: str | None = None
    payee_account: str | None = None
    amount: Money | None = None
    partner: str | None = None


def show_money(money: Money) -> str:
    return money.format() if is_known_currency(money.currency) else f"{money.amount_minor} {money.currency} (minor)"


def _kind(topic: str, message: Message | None) -> str:
    if topic == base.DLQ:
        return "dead_letter"
    if message is None:
        return "undecodable"
    for cls, kind in ((SagaEvent, "event"), (Command, "command"), (ParticipantCommand, "participant_command"),
                      (ParticipantReply, "reply"), (SettlementEvent, "settlement")):
        if isinstance(message, cls):
            return kind
    return "intake"  # the intake's own messages: claim results, duplicate notices


def summarize(message: Message) -> str:
    """The fields an operator looks at first, as `name=value`; money as "12.50 EUR"."""
    parts = []
    for name in SUMMARY_FIELDS:
        value = getattr(message, name, None)
        if value is None or value in ("", []):
            continue
        if isinstance(value, Money):
            value = show_money(value)
        elif isinstance(value, ShadowScore):  # a candidate model's score, in shadow
            value = f"{value.model_version}:{value.score_bp}bp:{value.decision}"
        elif isinstance(value, list):  # reasons; a model decline's top features and the bp each added
            value = ",".join(f"{v.feature}+{v.bp}bp" if isinstance(v, FeatureContribution) else str(v) for v in value)
        text = str(value)
        parts.append(f"{name}={text if len(text) <= DETAIL_CHARS_MAX else text[:DETAIL_CHARS_MAX] + '...'}")
    return " ".join(parts)


def timeline_of(seen: Sequence[Seen]) -> list[Entry]:
    """Every record in time order; records of one topic keep their log order (a merge, not a sort)."""
    by_topic: dict[str, list[Seen]] = {}
    for item in seen:
        by_topic.setdefault(item.topic, []).append(item)
    rank = {topic: i for i, topic in enumerate(SAME_TIME_ORDER)}
    streams = [sorted(items, key=lambda s: (s.partition, s.offset)) for items in by_topic.values()]
    merged = heapq.merge(*streams, key=lambda s: (s.at, rank.get(s.topic, len(rank))))
    entries = []
    for item in merged:
        message = item.message
        summary = " ".join(filter(None, (item.problem, summarize(message) if message is not None else None)))
        entries.append(Entry(
            at=item.at, topic=item.topic, partition=item.partition, offset=item.offset,
            kind=_kind(item.topic, message), type=type(message).__name__ if message is not None else "?",
            id=message.message_id if message is not None else None,
            seq=message.seq if isinstance(message, SagaEvent) and item.topic == base.EVENTS else None,
            summary=summary))
    return entries


def fold_saga(events: Iterable[SagaEvent], config: SagaConfig) -> tuple[SagaState | None, int, str | None]:
    """The saga state the events imply (the state, its generation count, why folding stopped if it did).

    A seq 1 after a state whose retention had passed starts a new generation, as in
    `payments replay orchestrator`."""
    logic = OrchestratorLogic(config)
    state: SagaState | None = None
    generations = 0
    for event in events:
        if state is not None and event.seq == 1 and state.status in RETIRABLE:
            forget = logic.next_deadline(state)
            if forget is not None and forget <= event.occurred_at:
                state = None
        if state is None:
            generations += 1
        try:
            state = apply(state, event)
        except SagaStateError as error:
            return state, generations, f"{type(event).__name__}#{event.seq} cannot follow: {error}"
    return state, generations, None


def _clock(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ago(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    return f"{seconds:.1f}s" if abs(seconds) < 120 else f"{seconds / 60:.1f} min"


def _waiting(state: SagaState, seen: Sequence[Seen], config: SagaConfig) -> Waiting | None:
    awaiting = state.awaiting
    if awaiting is None or state.is_terminal:
        return None
    participant, reply = AWAITED[awaiting.step]
    messages = [s.message for s in seen if s.message is not None]
    return Waiting(
        step=awaiting.step, attempt=awaiting.attempt, participant=participant, reply_type=reply.__name__,
        command_id=awaiting.command_id, since=awaiting.since, timeout_at=next_deadline(state, config.time_scale),
        command_seen=any(isinstance(m, ParticipantCommand) and m.command_id == awaiting.command_id for m in messages),
        reply_seen=any(isinstance(m, ParticipantReply) and m.command_id == awaiting.command_id for m in messages))


def describe_waiting(waiting: Waiting, now: datetime) -> str:
    text = (f"waiting for {waiting.reply_type} from {waiting.participant} ({waiting.step} attempt {waiting.attempt}, "
            f"command {waiting.command_id}) since {_clock(waiting.since)} ({_ago(now - waiting.since)} ago)")
    if waiting.timeout_at is not None:
        left = waiting.timeout_at - now
        text += (f"; timeout at {_clock(waiting.timeout_at)} (in {_ago(left)})" if left >= timedelta(0) else
                 f"; timeout at {_clock(waiting.timeout_at)}, overdue by {_ago(-left)}: is the orchestrator running?")
    else:
        text += "; no timer: an alert state waits for a late reply or an operator"
    if waiting.reply_seen:
        text += f"; a reply is on {waiting.participant}.replies, not yet read by the orchestrator"
    elif not waiting.command_seen:
        text += f"; the command is not on {waiting.participant}.commands"
    return text


def _describe(state: SagaState, waiting: Waiting | None, kept_until: datetime | None, now: datetime) -> str:
    if state.status in ALERT:
        prefix = f"ALERT {state.status}: an operator must act (docs/operations.md runbooks)"
        return f"{prefix}; {describe_waiting(waiting, now)}" if waiting is not None else prefix
    if waiting is not None:
        return describe_waiting(waiting, now)
    if state.is_terminal:
        until = f"; the orchestrator keeps its state until {_clock(kept_until)}" if kept_until is not None else ""
        return f"finished: {state.status}{until}"
    if state.status == "UNKNOWN":
        return "not initiated: only rejected commands for this id so far"
    return f"{state.status}, waiting for nothing the log shows"


def _inspection(payment_id: str, timeline: list[Entry], view: SagaView | None,
                initiated: PaymentInitiated | None) -> Inspection:
    if initiated is None:
        return Inspection(payment_id, timeline, view)
    return Inspection(payment_id, timeline, view, payer_account=initiated.payer_account,
                      payee_account=initiated.payee_account, amount=initiated.amount, partner=initiated.partner)


def inspect_records(payment_id: str, seen: Sequence[Seen], config: SagaConfig, now: datetime) -> Inspection:
    """Pure: the payment's timeline and, from its events, its saga state and what it waits for.

    `seen` are the payment's records (any topic, any order); `now` is the inspector's clock."""
    timeline = timeline_of(seen)
    ordered = sorted((s for s in seen if s.topic == base.EVENTS), key=lambda s: (s.partition, s.offset))
    events = [s.message for s in ordered if isinstance(s.message, SagaEvent)]
    initiated = next((e for e in events if isinstance(e, PaymentInitiated)), None)
    if not events:
        return _inspection(payment_id, timeline, None, initiated)
    state, generations, error = fold_saga(events, config)
    last = events[-1]
    if state is None:  # the very first event could not start a payment
        view = SagaView(status="?", terminal=False, alert=False, last_event_type=type(last).__name__,
                        last_seq=last.seq, last_event_at=last.occurred_at, generations=generations, waiting=None,
                        kept_until=None, fold_error=error, description=f"cannot fold the events: {error}")
        return _inspection(payment_id, timeline, view, initiated)
    waiting = _waiting(state, seen, config)
    kept_until = forget_at(state, config.retention, config.refund_window, config.clock_skew)
    description = _describe(state, waiting, kept_until, now)
    if error is not None:
        description = f"cannot fold every event ({error}); as of #{state.seq}: {description}"
    view = SagaView(status=state.status, terminal=state.is_terminal, alert=state.status in ALERT,
                    last_event_type=type(last).__name__, last_seq=last.seq, last_event_at=last.occurred_at,
                    generations=generations, waiting=waiting, kept_until=kept_until, fold_error=error,
                    description=description)
    return _inspection(payment_id, timeline, view, initiated)


# -- Kafka: the payment's partitions -------------------------------------------------------------


@dataclass(frozen=True)
class PartitionRead:
    topic: str  # the full name, with the deployment's prefix
    partition: int
    end_offset: int  # read_committed end (last stable offset) captured before reading
    records: int  # records of the payment found there
    key: str  # the key read: the payment id, or for funds.commands the payer's account


def _partition_counts(bootstrap: Kafka, names: Iterable[str]) -> dict[str, int]:
    admin = AdminClient(client_config(bootstrap))
    metadata = retry_kafka(lambda: admin.list_topics(timeout=10).topics, "list_topics")
    return {name: len(metadata[name].partitions) for name in names if name in metadata}


def _record_time(record: KafkaRecord, message: Message | None) -> datetime:
    kind, millis = record.timestamp()
    if kind != TIMESTAMP_NOT_AVAILABLE:
        return datetime.fromtimestamp(millis / 1000, UTC)
    return (message.message_time if message is not None else None) or datetime.fromtimestamp(0, UTC)


def _dead_letter(record: KafkaRecord) -> str:
    """Why a record was dead-lettered, from the headers the loop adds (docs/contracts.md §8)."""
    headers = {name: value.decode(errors="replace") for name, value in headers_of(record)}
    return (f"dead letter from {headers.get('dlq_source_topic', '?')}: {headers.get('dlq_reason_code', '?')}: "
            f"{headers.get('dlq_detail', '')[:DETAIL_CHARS_MAX]}").rstrip(": ")


def _read(bootstrap: Kafka, serde: Serde, wanted: dict[Partition, str], *, key: str, payment_id: str,
          timeout_s: float) -> tuple[list[Seen], list[PartitionRead]]:
    """The payment's records on the `wanted` partitions ((full name, partition) -> base name): those keyed
    `key`, decoded, whose payment id is `payment_id`. Undecodable ones are kept only when `key` is the id."""
    ends = end_offsets(bootstrap, list(wanted))
    seen: list[Seen] = []
    key_bytes = key.encode()
    for record in committed_records(bootstrap, list(wanted), ends=ends, timeout_s=timeout_s):
        topic, partition, offset, value = record.topic(), record.partition(), record.offset(), record.value()
        assert topic is not None and partition is not None and offset is not None
        if record.key() != key_bytes or value is None:
            continue
        name = wanted[(topic, partition)]
        try:
            message: Message | None = serde.decode(value)
        except ContractError as error:
            if key == payment_id:
                problem = _dead_letter(record) if name == base.DLQ else f"undecodable: {error}"
                seen.append(Seen(name, partition, offset, _record_time(record, None), None, problem=problem))
            continue
        assert message is not None
        if message.payment_id == payment_id:
            why = _dead_letter(record) if name == base.DLQ else None
            seen.append(Seen(name, partition, offset, _record_time(record, message), message, problem=why))
    reads = [PartitionRead(topic, partition, ends[(topic, partition)],
                           sum(1 for s in seen if (s.topic, s.partition) == (wanted[(topic, partition)], partition)),
                           key)
             for topic, partition in wanted]
    return seen, reads


def read_payment(settings: Settings, payment_id: str, timeout_s: float) -> tuple[list[Seen], list[PartitionRead]]:
    """Steps 1 of the module docstring. PaymentNotFoundError when payments.events has no event of it."""
    bootstrap, topics, serde = settings.kafka, settings.topics, settings.serde()
    counts = _partition_counts(bootstrap, [topics.name(t) for t in (*PAYMENT_KEYED, *ACCOUNT_KEYED)])
    if topics.events not in counts:
        raise InspectError(f"topic {topics.events} does not exist (is PAYMENTS_TOPIC_PREFIX right?)")
    wanted = {(topics.name(t), partition_of(payment_id, counts[topics.name(t)])): t
              for t in PAYMENT_KEYED if topics.name(t) in counts}
    seen, reads = _read(bootstrap, serde, wanted, key=payment_id, payment_id=payment_id, timeout_s=timeout_s)
    if not any(s.topic == base.EVENTS and isinstance(s.message, SagaEvent) for s in seen):
        elsewhere = sorted({s.topic for s in seen})
        hint = f" ({len(seen)} record(s) of it on {', '.join(elsewhere)}: the saga has not decided on it)" \
            if seen else ""
        raise PaymentNotFoundError(f"no events for payment {payment_id} in {topics.events}{hint}")
    initiated = [s.message for s in seen if isinstance(s.message, PaymentInitiated)]
    for topic, role in ACCOUNT_KEYED.items():
        name = topics.name(topic)
        accounts = sorted({m.payer_account if role == "payer" else m.payee_account for m in initiated})
        for account in accounts if name in counts else []:
            more, more_reads = _read(bootstrap, serde, {(name, partition_of(account, counts[name])): topic},
                                     key=account, payment_id=payment_id, timeout_s=timeout_s)
            seen += more
            reads += more_reads
    return seen, reads


# -- PostgreSQL: the read models ------------------------------------------------------------------


@dataclass(frozen=True)
class Posting:
    account: str
    currency: str
    amount_minor: int  # signed: credit positive, debit negative (migration 0002)


@dataclass(frozen=True)
class LedgerEntry:
    entry_id: str
    kind: str
    occurred_at: datetime
    source_event_id: str
    postings: list[Posting]


@dataclass(frozen=True)
class ReportRow:
    settlement_event_id: str
    kind: str  # SETTLEMENT | REFUND
    amount: Money
    day: date
    currency: str
    partner: str
    counted: bool  # in settlement_report_applied: the report's totals include it
    totals: dict[str, int] | None  # the report row of (day, currency, partner), None if there is none


@dataclass
class DatabaseView:
    problems: list[str] = field(default_factory=list)  # each one line: unreachable, a missing table, ...
    payment_status: dict[str, Any] | None = None
    timeline_rows: int | None = None  # None: could not be read
    ledger: list[LedgerEntry] | None = None
    unposted: list[dict[str, str]] | None = None
    settlement_report: list[ReportRow] | None = None


Connection = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _payment_status(conn: Connection, payment_id: str) -> dict[str, Any] | None:
    row = conn.execute(f"SELECT {STATUS_COLUMNS} FROM payment_status WHERE payment_id = %s", (payment_id,)).fetchone()
    return None if row is None else StatusRow(*row)._asdict()


def _timeline_rows(conn: Connection, payment_id: str) -> int:
    row = conn.execute("SELECT count(*) FROM payment_timeline WHERE payment_id = %s", (payment_id,)).fetchone()
    assert row is not None
    return int(row[0])


def _ledger(conn: Connection, payment_id: str) -> list[LedgerEntry]:
    rows = conn.execute(
        """SELECT e.entry_id, e.kind, e.occurred_at, e.source_event_id, p.account, p.currency, p.amount_minor
           FROM journal_entries e JOIN postings p ON p.entry_id = e.entry_id
           WHERE e.payment_id = %s ORDER BY e.occurred_at, e.entry_id, p.line""", (payment_id,)).fetchall()
    entries: dict[str, LedgerEntry] = {}
    for entry_id, kind, occurred_at, source, account, currency, amount in rows:
        entry = entries.setdefault(str(entry_id), LedgerEntry(str(entry_id), kind, occurred_at, source, []))
        entry.postings.append(Posting(account, currency.strip(), int(amount)))
    return list(entries.values())


def _unposted(conn: Connection, payment_id: str) -> list[dict[str, str]]:
    rows = conn.execute("SELECT source_event_id, event_type, reason FROM ledger_unposted WHERE payment_id = %s "
                        "ORDER BY source_event_id", (payment_id,)).fetchall()
    return [{"source_event_id": s, "event_type": t, "reason": r} for s, t, r in rows]


def _report(conn: Connection, settlements: Sequence[SettlementEvent]) -> list[ReportRow]:
    rows = []
    for event in settlements:
        day, currency, partner = report_key(event)
        counted = conn.execute("SELECT 1 FROM settlement_report_applied WHERE event_id = %s",
                               (event.event_id,)).fetchone() is not None
        found = conn.execute("""SELECT settled_count, settled_minor, refunded_count, refunded_minor
                                FROM settlement_report WHERE day = %s AND currency = %s AND partner = %s""",
                             (day, currency, partner)).fetchone()
        totals = None if found is None else dict(zip(("settled_count", "settled_minor", "refunded_count",
                                                      "refunded_minor"), (int(v) for v in found), strict=True))
        rows.append(ReportRow(event.event_id, event.kind, event.amount, day, currency, partner, counted, totals))
    return rows


def read_database(url: str, payment_id: str, settlements: Sequence[SettlementEvent],
                  event_seqs: Mapping[str, int]) -> DatabaseView:
    """Step 2 of the module docstring; every failure becomes one line in `problems`, never an exception.

    Journal entries come in the order of their source events' seq (`event_seqs`: event id -> seq), as
    entries made by one decision share their time."""
    view = DatabaseView()
    try:
        conn = psycopg.connect(url, connect_timeout=DB_CONNECT_TIMEOUT_S, autocommit=True)
    except psycopg.Error as error:
        view.problems.append(f"database unreachable: {_first_line(error)}")
        return view

    missing: list[str] = []

    def query(what: str, read: Callable[[], T]) -> T | None:
        try:
            return read()
        except psycopg.errors.UndefinedTable:
            missing.append(what)
        except psycopg.Error as error:
            view.problems.append(f"{what}: {type(error).__name__}: {_first_line(error)}")
        return None

    with conn:  # autocommit: one failed query does not spoil the next
        view.payment_status = query("payment_status", lambda: _payment_status(conn, payment_id))
        view.timeline_rows = query("payment_timeline", lambda: _timeline_rows(conn, payment_id))
        ledger = query("ledger", lambda: _ledger(conn, payment_id))
        view.ledger = None if ledger is None else sorted(
            ledger, key=lambda e: (event_seqs.get(e.source_event_id, sys.maxsize), e.occurred_at))
        view.unposted = query("ledger_unposted", lambda: _unposted(conn, payment_id))
        view.settlement_report = query("settlement_report", lambda: _report(conn, settlements))
    if missing:  # one line for all: the database is not migrated (or is another database)
        view.problems.insert(0, f"projection tables missing ({', '.join(missing)}): run `payments db migrate`?")
    return view


# -- output ---------------------------------------------------------------------------------------


def _json_default(value: object) -> object:
    if isinstance(value, Money):
        return {"amount_minor": value.amount_minor, "currency": value.currency}
    if isinstance(value, datetime):
        return _clock(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def to_json(inspection: Inspection, reads: Sequence[PartitionRead], database: DatabaseView) -> str:
    """One JSON document; its keys are stable (scripts read them)."""
    document = {
        "payment_id": inspection.payment_id,
        "terms": None if inspection.amount is None else {
            "payer_account": inspection.payer_account, "payee_account": inspection.payee_account,
            "amount": inspection.amount, "partner": inspection.partner},
        "saga": None if inspection.saga is None else asdict(inspection.saga),
        "timeline": [asdict(entry) for entry in inspection.timeline],
        "kafka_read": [asdict(read) for read in reads],
        "database": asdict(database),
    }
    return json.dumps(document, default=_json_default, indent=2, sort_keys=False)


def _signed(amount_minor: int, currency: str) -> str:
    text = show_money(Money.of(amount_minor, currency))
    return text if amount_minor < 0 else f"+{text}"


def _render_database(database: DatabaseView, events: int, out: TextIO) -> None:
    for problem in database.problems:
        out.write(f"database  {problem}\n")
    status = database.payment_status
    if status is not None:
        amount = "" if status["amount_minor"] is None else \
            f", {show_money(Money.of(status['amount_minor'], status['currency'].strip()))}"
        reason = f", reason {status['reason_code']}" if status["reason_code"] else ""
        out.write(f"status    payment_status {status['status']} (last {status['last_event_type']} "
                  f"#{status['last_seq']} at {_clock(status['updated_at'])}){amount}{reason}\n")
    elif not any(p.startswith("database unreachable") or "payment_status" in p for p in database.problems):
        out.write("status    payment_status has no row for it (the projection is behind or not running)\n")
    if database.timeline_rows is not None:
        lag = "" if database.timeline_rows == events else "  <- the projection is behind the log"
        out.write(f"          payment_timeline {database.timeline_rows} row(s); {events} event(s) on Kafka{lag}\n")
    if database.ledger is not None:
        out.write(f"ledger    {len(database.ledger)} journal entr{'y' if len(database.ledger) == 1 else 'ies'}\n")
        for entry in database.ledger:
            postings = ", ".join(f"{p.account} {_signed(p.amount_minor, p.currency)}" for p in entry.postings)
            out.write(f"  {_clock(entry.occurred_at)}  {entry.kind:18} {postings}\n")
    for item in database.unposted or []:
        out.write(f"  unposted {item['event_type']} {item['source_event_id']}: {item['reason']}\n")
    for row in database.settlement_report or []:
        counted = "counted" if row.counted else "NOT counted yet"
        totals = "no report row" if row.totals is None else (
            f"settled {row.totals['settled_count']} "
            f"({show_money(Money.of(row.totals['settled_minor'], row.currency))}), "
            f"refunded {row.totals['refunded_count']} "
            f"({show_money(Money.of(row.totals['refunded_minor'], row.currency))})")
        out.write(f"report    {row.kind} {show_money(row.amount)} {counted} in {row.day} {row.currency} {row.partner}: "
                  f"{totals}\n")


def _described_reads(payment_id: str, reads: Sequence[PartitionRead]) -> str:
    by_id = [r for r in reads if r.key == payment_id]
    partitions = sorted({r.partition for r in by_id})
    parts = ([f"partition {partitions[0]} of the {len(by_id)} topics keyed by payment id"] if len(partitions) == 1
             else [f"{r.topic}[{r.partition}]" for r in by_id])
    parts += [f"partition {r.partition} of {r.topic} (key {r.key})" for r in reads if r.key != payment_id]
    return ", ".join(parts)


def render(inspection: Inspection, reads: Sequence[PartitionRead], database: DatabaseView, out: TextIO) -> None:
    out.write(f"payment   {inspection.payment_id}\n")
    if inspection.amount is not None:
        out.write(f"terms     {inspection.payer_account} -> {inspection.payee_account}, "
                  f"{show_money(inspection.amount)}, partner {inspection.partner}\n")
    saga = inspection.saga
    if saga is not None:
        ending = "terminal" if saga.terminal else "ALERT" if saga.alert else "in progress"
        again = f", {saga.generations} generations of this id" if saga.generations > 1 else ""
        out.write(f"saga      {saga.status} ({ending}) after {saga.last_event_type} #{saga.last_seq} "
                  f"at {_clock(saga.last_event_at)}{again}\n")
        out.write(f"now       {saga.description}\n")
    read = _described_reads(inspection.payment_id, reads)
    out.write(f"timeline  {len(inspection.timeline)} record(s); read {read}\n")
    for entry in inspection.timeline:
        seq = f"#{entry.seq}" if entry.seq is not None else ""
        line = f"  {_clock(entry.at)}  {entry.topic:20} {entry.type:26} {seq:>4}  {entry.summary}"
        out.write(line.rstrip() + "\n")
    events = sum(1 for e in inspection.timeline if e.kind == "event")
    _render_database(database, events, out)


# -- the command ----------------------------------------------------------------------------------


def _inspect(args: argparse.Namespace, settings: Settings) -> int:
    payment_id = check_payment_id(args.payment_id.strip())
    if args.timeout_s <= 0:
        raise InspectError(f"--timeout-s must be positive, got {args.timeout_s}")
    seen, reads = read_payment(settings, payment_id, args.timeout_s)
    inspection = inspect_records(payment_id, seen, settings.saga(), datetime.now(UTC))
    settlements = [s.message for s in seen if isinstance(s.message, SettlementEvent)]
    seqs = {s.message.event_id: s.message.seq for s in seen if isinstance(s.message, SagaEvent)}
    database = read_database(settings.database, payment_id, settlements, seqs)
    if args.json:
        sys.stdout.write(to_json(inspection, reads, database) + "\n")
    else:
        render(inspection, reads, database, sys.stdout)
    return 0


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `payments inspect` to the CLI's subcommands (ops.cli.OPERATOR_COMMANDS)."""
    parser = commands.add_parser(
        "inspect", help="one payment: its commands, events, replies and timers from Kafka, and its read-model rows",
        description="Reads the payment's partition of each payment-keyed topic (read_committed, start to end) and "
                    "its rows in PostgreSQL; writes nothing. Exit 0 when found, 1 when not.")
    parser.add_argument("payment_id", help="the payment id (a UUID)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.add_argument("--timeout-s", type=float, default=READ_TIMEOUT_S,
                        help=f"give up reading Kafka after this many seconds (default {READ_TIMEOUT_S:.0f})")
    parser.set_defaults(handler=_inspect)
