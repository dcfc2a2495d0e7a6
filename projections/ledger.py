"""Double-entry ledger read model: one journal entry per money-moving saga event.

Chart of accounts (every account is per currency):
  customer:<account>:available  a customer's spendable funds (a liability of the platform)
  customer:<account>:held       funds reserved for an in-flight payment (a liability)
  partner:<partner>:clearing    funds committed to a partner and not yet settled to the payee

Posting rules (amounts signed: credit positive, debit negative; X is the event's amount):
  FundsReserved     payer available -X, payer held +X
  FundsReleased     payer held -X, payer available +X
  FundsCommitted    payer held -X, partner clearing +X
  PaymentSettled    partner clearing -X, payee available +X
  PaymentRefunded   payee available -X, payer available +X
Every other event posts nothing. `postings_for` is pure; `LedgerProjection` writes its result in
the runner's transaction, and the database refuses, at commit, an entry that does not sum to zero
per currency (deferred constraint trigger, migration 0002).
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import psycopg

from payments.contracts.messages import (
    FundsCommitted,
    FundsReleased,
    FundsReserved,
    Message,
    PaymentInitiated,
    PaymentRefunded,
    PaymentSettled,
)
from payments.contracts.topics import EVENTS
from projections.errors import ProjectionError
from projections.runner import RecordMeta

# Entry ids are derived from the source event id so that a rebuild writes byte-identical rows.
_ENTRY_NAMESPACE: Final = uuid.UUID("5b0c4c2e-0d6f-4f55-9b0e-6c6564676572")

POSTING_EVENTS: Final = (FundsReserved, FundsReleased, FundsCommitted, PaymentSettled, PaymentRefunded)


class LedgerError(ProjectionError):
    """Root of ledger projection errors."""


class MissingPartiesError(LedgerError):
    """An event needs the payment's accounts, but its PaymentInitiated was never seen."""


@dataclass(frozen=True)
class Parties:
    payer_account: str
    payee_account: str
    partner: str
    currency: str

    @classmethod
    def of(cls, event: PaymentInitiated) -> Parties:
        return cls(event.payer_account, event.payee_account, event.partner, event.amount.currency)


@dataclass(frozen=True)
class Posting:
    account: str
    currency: str
    amount_minor: int  # credit positive, debit negative, never zero


@dataclass(frozen=True)
class JournalEntry:
    entry_id: uuid.UUID
    source_event_id: str
    payment_id: str
    kind: str
    occurred_at: datetime
    postings: tuple[Posting, ...]


def available(account: str) -> str:
    return f"customer:{account}:available"


def held(account: str) -> str:
    return f"customer:{account}:held"


def clearing(partner: str) -> str:
    return f"partner:{partner}:clearing"


def account_kind(account: str) -> str:
    if account.startswith("partner:") and account.endswith(":clearing"):
        return "partner_clearing"
    if account.startswith("customer:") and account.endswith(":held"):
        return "customer_held"
    assert account.startswith("customer:") and account.endswith(":available"), account
    return "customer_available"


def entry_id_of(source_event_id: str) -> uuid.UUID:
    return uuid.uuid5(_ENTRY_NAMESPACE, source_event_id)


def needs_parties(event: Message) -> bool:
    return isinstance(event, (FundsReserved, FundsReleased, FundsCommitted, PaymentRefunded))


def postings_for(event: Message, parties: Parties | None) -> list[Posting]:
    """The postings one saga event makes; [] for events that move no money.

    `parties` comes from the payment's PaymentInitiated; it is required by every posting event
    except PaymentSettled, which names its own accounts. Raises MissingPartiesError without it.
    """
    if isinstance(event, PaymentSettled):
        moves = [(clearing(event.partner), available(event.payee_account))]
    elif not needs_parties(event):
        return []
    elif parties is None:
        raise MissingPartiesError(f"{type(event).__name__} for unknown payment {event.payment_id}")
    elif isinstance(event, FundsReserved):
        moves = [(available(parties.payer_account), held(parties.payer_account))]
    elif isinstance(event, FundsReleased):
        moves = [(held(parties.payer_account), available(parties.payer_account))]
    elif isinstance(event, FundsCommitted):
        moves = [(held(parties.payer_account), clearing(parties.partner))]
    else:
        assert isinstance(event, PaymentRefunded)
        moves = [(available(parties.payee_account), available(parties.payer_account))]
    amount = getattr(event, "amount")  # noqa: B009 — every posting event carries Money `amount`
    assert amount.amount_minor > 0, f"non-positive amount on {type(event).__name__}"
    postings: list[Posting] = []
    for debit, credit in moves:
        postings.append(Posting(debit, amount.currency, -amount.amount_minor))
        postings.append(Posting(credit, amount.currency, amount.amount_minor))
    assert_balanced(postings)
    return postings


def assert_balanced(postings: Sequence[Posting]) -> None:
    """The invariant the database also enforces: >= 2 postings, sum zero per currency."""
    assert len(postings) >= 2, postings
    totals: dict[str, int] = defaultdict(int)
    for posting in postings:
        assert posting.amount_minor != 0, posting
        totals[posting.currency] += posting.amount_minor
    assert all(total == 0 for total in totals.values()), totals


def entry_for(event: Message, parties: Parties | None) -> JournalEntry | None:
    """The journal entry of one event, or None when the event moves no money."""
    postings = postings_for(event, parties)
    if not postings:
        return None
    event_id: str = getattr(event, "event_id")  # noqa: B009 — posting events are SagaEvents
    occurred_at: datetime = getattr(event, "occurred_at")  # noqa: B009
    return JournalEntry(entry_id_of(event_id), event_id, event.payment_id, type(event).__name__, occurred_at,
                        tuple(postings))


# -- in-memory fold (replay verification compares the tables against it) -------------------------


class LedgerFold:
    """The ledger tables as a pure fold of the events, in the rows the projection writes."""

    def __init__(self) -> None:
        self.payments: dict[str, Parties] = {}
        self.entries: dict[str, JournalEntry] = {}
        self.unposted: dict[str, tuple[str, str, str, str]] = {}

    def apply(self, message: Message, meta: RecordMeta) -> None:
        if isinstance(message, PaymentInitiated):
            self.payments.setdefault(message.payment_id, Parties.of(message))
            return
        if not isinstance(message, POSTING_EVENTS) or message.event_id in self.entries:
            return
        try:
            entry = entry_for(message, self.payments.get(message.payment_id))
        except MissingPartiesError as error:
            self.unposted.setdefault(message.event_id, (message.event_id, message.payment_id,
                                                        type(message).__name__, str(error)))
            return
        if entry is not None:
            self.entries[entry.source_event_id] = entry

    def rows(self) -> dict[str, list[tuple[object, ...]]]:
        balances: dict[tuple[str, str], int] = defaultdict(int)
        for entry in self.entries.values():
            for posting in entry.postings:
                balances[(posting.account, posting.currency)] += posting.amount_minor
        return {
            "ledger_payments": [(pid, p.payer_account, p.payee_account, p.partner, p.currency)
                                for pid, p in self.payments.items()],
            "ledger_accounts": [(account, currency, account_kind(account)) for account, currency in balances],
            "journal_entries": [(e.entry_id, e.source_event_id, e.payment_id, e.kind, e.occurred_at)
                                for e in self.entries.values()],
            "postings": [(e.entry_id, line, p.account, p.currency, p.amount_minor)
                         for e in self.entries.values() for line, p in enumerate(e.postings, start=1)],
            "account_balances": [(account, currency, total) for (account, currency), total in balances.items()],
            "ledger_unposted": list(self.unposted.values()),
        }


# -- the projection -------------------------------------------------------------------------------

Cursor = psycopg.Cursor[tuple[object, ...]]


class LedgerProjection:
    """Writes journal entries, postings and balances; a batch at a time, idempotent per event id."""

    name: str = "ledger"
    topics: tuple[str, ...] = (EVENTS,)

    def apply(self, cur: Cursor, message: Message, meta: RecordMeta) -> None:
        self.apply_batch(cur, [(message, meta)])

    def apply_batch(self, cur: Cursor, items: Sequence[tuple[Message, RecordMeta]]) -> None:
        """Apply decoded records in order, in the caller's transaction, with a bounded number of statements.

        1. store the parties of every PaymentInitiated (first one wins);
        2. load the parties of every other payment the batch touches;
        3. drop events already journalled (a replayed record) and duplicates within the batch;
        4. compute the entries purely, then insert accounts, entries and postings (executemany,
           which psycopg pipelines) and add the batch's net change to each account balance.
        """
        messages = [message for message, _ in items]
        initiated = [m for m in messages if isinstance(m, PaymentInitiated)]
        if initiated:
            cur.executemany(
                """INSERT INTO ledger_payments (payment_id, payer_account, payee_account, partner, currency)
                   VALUES (%s, %s, %s, %s, %s) ON CONFLICT (payment_id) DO NOTHING""",
                [(m.payment_id, m.payer_account, m.payee_account, m.partner, m.amount.currency) for m in initiated])
        posting = [m for m in messages if isinstance(m, POSTING_EVENTS)]
        if not posting:
            return
        parties = self._parties(cur, {m.payment_id for m in posting if needs_parties(m)})
        done = self._already_applied(cur, [m.event_id for m in posting])
        entries: list[JournalEntry] = []
        unposted: list[tuple[str, str, str, str]] = []
        for message in posting:
            if message.event_id in done:
                continue
            done.add(message.event_id)
            try:
                entry = entry_for(message, parties.get(message.payment_id))
            except MissingPartiesError as error:
                unposted.append((message.event_id, message.payment_id, type(message).__name__, str(error)))
                continue
            if entry is not None:
                entries.append(entry)
        self._write(cur, entries, unposted)

    @staticmethod
    def _parties(cur: Cursor, payment_ids: set[str]) -> dict[str, Parties]:
        if not payment_ids:
            return {}
        cur.execute("""SELECT payment_id, payer_account, payee_account, partner, currency
                       FROM ledger_payments WHERE payment_id = ANY(%s)""", (list(payment_ids),))
        return {str(pid): Parties(str(payer), str(payee), str(partner), str(currency))
                for pid, payer, payee, partner, currency in cur.fetchall()}

    @staticmethod
    def _already_applied(cur: Cursor, event_ids: list[str]) -> set[str]:
        cur.execute("""SELECT source_event_id FROM journal_entries WHERE source_event_id = ANY(%s)
                       UNION ALL SELECT source_event_id FROM ledger_unposted WHERE source_event_id = ANY(%s)""",
                    (event_ids, event_ids))
        return {str(row[0]) for row in cur.fetchall()}

    @staticmethod
    def _write(cur: Cursor, entries: list[JournalEntry], unposted: list[tuple[str, str, str, str]]) -> None:
        if unposted:
            cur.executemany("""INSERT INTO ledger_unposted (source_event_id, payment_id, event_type, reason)
                               VALUES (%s, %s, %s, %s)""", unposted)
        if not entries:
            return
        deltas: dict[tuple[str, str], int] = defaultdict(int)
        for entry in entries:
            for p in entry.postings:
                deltas[(p.account, p.currency)] += p.amount_minor
        accounts = sorted(deltas)  # a fixed lock order
        cur.executemany("""INSERT INTO ledger_accounts (account, currency, kind) VALUES (%s, %s, %s)
                           ON CONFLICT (account, currency) DO NOTHING""",
                        [(account, currency, account_kind(account)) for account, currency in accounts])
        # A plain INSERT: the step above filtered applied events, so a unique violation here is a bug.
        cur.executemany("""INSERT INTO journal_entries (entry_id, source_event_id, payment_id, kind, occurred_at)
                           VALUES (%s, %s, %s, %s, %s)""",
                        [(e.entry_id, e.source_event_id, e.payment_id, e.kind, e.occurred_at) for e in entries])
        cur.executemany("""INSERT INTO postings (entry_id, line, account, currency, amount_minor)
                           VALUES (%s, %s, %s, %s, %s)""",
                        list(_posting_rows(entries)))
        cur.executemany("""INSERT INTO account_balances (account, currency, balance_minor) VALUES (%s, %s, %s)
                           ON CONFLICT (account, currency)
                           DO UPDATE SET balance_minor = account_balances.balance_minor + EXCLUDED.balance_minor""",
                        [(account, currency, deltas[(account, currency)]) for account, currency in accounts])


def _posting_rows(entries: Iterable[JournalEntry]) -> Iterable[tuple[object, ...]]:
    for entry in entries:
        for line, posting in enumerate(entry.postings, start=1):
            yield (entry.entry_id, line, posting.account, posting.currency, posting.amount_minor)
