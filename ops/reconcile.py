"""`payments reconcile --date D`: our settlements of one UTC day against each partner's settlement report.

Sources (docs/operations.md, "Reconciling with the partner"):
  ours      the ledger projection: every `PaymentSettled` journal entry (amount, currency, and the partner
            whose clearing account it debits) and every `PaymentRefunded` one, by the UTC day of the event;
            the settlement_report projection's totals for the day are checked against the ledger.
  partner   `GET /v1/settlement-reports/{day}` of every configured partner endpoint (CSV: every transfer
            the partner booked that day, ACCEPTED and DECLINED), keyed by submission id, which is
            derived from the payment id (orchestrator.state.submission_id).
  not read  the funds service's balances: they live in its Kafka changelog and per-instance RocksDB
            copies, not in a queryable store, and the ledger is built from the same saga events.

A payment is reconciled on the day we settled it. The partner books a transfer when it receives it,
before we settle, so the booking may fall on the day before (a submission just before midnight);
reports of D-1, D and D+1 and the ledger of D-1..D+1 are read so that a cut-off is never reported as
a discrepancy, and a payment is counted on exactly one day. `compare` is pure; the rest is I/O.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_DOWN, Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, Final, Literal

import aiohttp
import psycopg

from consumers.partner.simulator import REPORT_COLUMNS  # the API's report format; the simulator serves it
from ops.errors import OpsError
from ops.settings import Settings
from orchestrator.state import submission_id

Kind = Literal["missing_at_partner", "missing_in_ledger", "amount_mismatch", "currency_mismatch",
               "declined_at_partner", "duplicate_in_ledger", "duplicate_at_partner", "report_total_mismatch"]
CSV_COLUMNS: Final = ("kind", "partner", "payment_id", "submission_id", "our_amount_minor", "our_currency",
                      "partner_amount_minor", "partner_currency", "detail")
EXIT_CLEAN: Final = 0
EXIT_DISCREPANCIES: Final = 1
REPORT_BYTES_MAX: Final = 256 * 1024 * 1024  # a day's report; far above any real day, below a runaway answer
DB_CONNECT_TIMEOUT_S: Final = 5
DB_STATEMENT_TIMEOUT_MS: Final = 60_000
NEIGHBOUR_DAYS: Final = (-1, 0, 1)


class ReconcileError(OpsError):
    """Reconciliation could not read one of its sources; nothing was compared."""


class PartnerUnreachableError(ReconcileError):
    """A partner's settlement report could not be fetched."""


class PartnerReportError(ReconcileError):
    """A partner's settlement report is not in the documented format."""


class LedgerUnreachableError(ReconcileError):
    """The read-model database could not be queried."""


# -- the values compared ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OurSettlement:
    """A `PaymentSettled` journal entry: what our ledger says moved through a partner."""

    payment_id: str
    partner: str
    amount_minor: int
    currency: str
    day: date  # UTC day of the event
    source_event_id: str

    @property
    def submission_id(self) -> str:
        return submission_id(self.payment_id)


@dataclass(frozen=True)
class PartnerRow:
    """One row of a partner's settlement report."""

    submission_id: str
    partner_reference: str
    amount_minor: int
    currency: str
    status: Literal["ACCEPTED", "DECLINED"]
    day: date  # the partner's booking day


@dataclass(frozen=True)
class Totals:
    settled_count: int = 0
    settled_minor: int = 0
    refunded_count: int = 0
    refunded_minor: int = 0


TotalsKey = tuple[str, str]  # (currency, partner)


@dataclass(frozen=True)
class Discrepancy:
    kind: Kind
    partner: str
    payment_id: str
    submission_id: str
    our_amount_minor: int | None
    our_currency: str | None
    partner_amount_minor: int | None
    partner_currency: str | None
    detail: str

    def csv_row(self) -> tuple[str, ...]:
        return tuple("" if value is None else str(value) for value in asdict(self).values())


@dataclass(frozen=True)
class Reconciliation:
    day: date
    matched: int
    total: int  # distinct payments reconciled on this day
    discrepancies: tuple[Discrepancy, ...]
    settlements: int = 0  # ours on the day
    refunds: int = 0  # ours on the day: not in the partner's report, checked against settlement_report only
    partner_rows: int = 0  # the partner's rows booked on the day
    sources: dict[str, str] = field(default_factory=dict)  # partner -> endpoint

    @property
    def accuracy(self) -> Fraction | None:
        return Fraction(self.matched, self.total) if self.total else None

    @property
    def percent(self) -> str | None:
        """Matched share to two decimals, rounded down: a day with one miss never shows 100.00."""
        if not self.total:
            return None
        return str((Decimal(self.matched * 100) / Decimal(self.total)).quantize(Decimal("0.01"), ROUND_DOWN))

    @property
    def clean(self) -> bool:
        return not self.discrepancies

    def accuracy_text(self) -> str:
        if not self.total:
            return "0/0 (nothing settled or booked on this day)"
        return f"{self.matched}/{self.total} = {self.percent}%"


# -- the comparison (pure) -------------------------------------------------------------------------


def compare(day: date, ours: Sequence[OurSettlement], theirs: Sequence[PartnerRow], *,
            partner_label: str, known: Mapping[str, str] | None = None) -> Reconciliation:
    """Reconcile `day` for one partner endpoint.

    `ours`: our settlements for the endpoint's partners on days D-1..D+1; `theirs`: its report rows
    booked on D-1..D+1; `known`: for a submission id we have no settlement of, what we know of it
    (for the operator). A payment belongs to the day we settled it; one we never settled, to the
    partner's booking day. Each payment yields its discrepancies, and counts as matched without any.
    """
    assert all(abs((s.day - day).days) <= 1 for s in ours), "ours beyond D-1..D+1"
    assert all(abs((r.day - day).days) <= 1 for r in theirs), "partner rows beyond D-1..D+1"
    our_by_sid: dict[str, list[OurSettlement]] = defaultdict(list)
    for settlement in ours:
        our_by_sid[settlement.submission_id].append(settlement)
    their_by_sid: dict[str, list[PartnerRow]] = defaultdict(list)
    for row in theirs:
        their_by_sid[row.submission_id].append(row)

    mine = {sid for sid, rows in our_by_sid.items() if any(s.day == day for s in rows)}
    # Booked on D and settled by us on no day around it: ours to report. (DECLINED and never settled agree.)
    unsettled = {sid for sid, rows in their_by_sid.items() if sid not in our_by_sid
                 and any(r.day == day and r.status == "ACCEPTED" for r in rows)}
    discrepancies: list[Discrepancy] = []
    matched = 0
    for sid in sorted(mine | unsettled):
        found = _check(day, our_by_sid.get(sid, []), their_by_sid.get(sid, []), partner_label,
                       (known or {}).get(sid, ""))
        discrepancies += found
        matched += not found
    return Reconciliation(day, matched, len(mine | unsettled), tuple(discrepancies),
                          settlements=sum(s.day == day for s in ours),
                          partner_rows=sum(r.day == day for r in theirs))


def _check(day: date, ours: list[OurSettlement], theirs: list[PartnerRow], partner_label: str,
           known: str) -> list[Discrepancy]:
    """The discrepancies of one payment (none: matched): `ours` and `theirs` are all its records of D-1..D+1,
    so a payment settled twice across midnight is a duplicate on both days, never matched twice."""
    our = next((s for s in ours if s.day == day), None)
    their = next((r for r in theirs if r.day == day), theirs[0] if theirs else None)
    sid = our.submission_id if our else theirs[0].submission_id

    def found(kind: Kind, detail: str) -> Discrepancy:
        return Discrepancy(kind, our.partner if our else partner_label, our.payment_id if our else "", sid,
                           our.amount_minor if our else None, our.currency if our else None,
                           their.amount_minor if their else None, their.currency if their else None, detail)

    out: list[Discrepancy] = []
    if len(ours) > 1:
        total = sum(s.amount_minor for s in ours)
        out.append(found("duplicate_in_ledger", f"settled {len(ours)} times in our ledger (events "
                                                f"{', '.join(sorted(s.source_event_id for s in ours))}), "
                                                f"{total} minor units in all"))
    if len(theirs) > 1:
        out.append(found("duplicate_at_partner", f"{len(theirs)} rows for this submission in the partner's "
                                                 "reports (references "
                                                 f"{', '.join(sorted(r.partner_reference or '-' for r in theirs))})"))
    if their is None:
        assert our is not None
        out.append(found("missing_at_partner", "settled in our ledger; no transfer in the partner's reports "
                                               f"of {our.day - timedelta(days=1)}..{our.day + timedelta(days=1)}"))
    elif our is None:
        out.append(found("missing_in_ledger", f"the partner booked it {their.status} on {their.day} "
                                              f"(reference {their.partner_reference or '-'}); no settlement in "
                                              f"our ledger{'; ' + known if known else ''}"))
    elif their.status != "ACCEPTED":
        out.append(found("declined_at_partner", f"settled in our ledger; the partner booked it {their.status} "
                                                f"on {their.day}"))
    elif their.currency != our.currency:
        out.append(found("currency_mismatch", f"ours {our.amount_minor} {our.currency}, the partner's "
                                              f"{their.amount_minor} {their.currency} (reference "
                                              f"{their.partner_reference})"))
    elif their.amount_minor != our.amount_minor:
        out.append(found("amount_mismatch", f"ours {our.amount_minor}, the partner's {their.amount_minor} "
                                            f"{our.currency}: difference {their.amount_minor - our.amount_minor} "
                                            f"(reference {their.partner_reference})"))
    return out


def ledger_totals(settlements: Iterable[OurSettlement], refunds: Iterable[tuple[str, str, int]],
                  day: date) -> dict[TotalsKey, Totals]:
    """The day's totals per (currency, partner) as the settlement_report projection should hold them.
    `refunds` are (currency, partner, amount_minor) of the day's PaymentRefunded entries."""
    counts: dict[TotalsKey, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for s in settlements:
        if s.day == day:
            counts[(s.currency, s.partner)][0] += 1
            counts[(s.currency, s.partner)][1] += s.amount_minor
    for currency, partner, amount_minor in refunds:
        counts[(currency, partner)][2] += 1
        counts[(currency, partner)][3] += amount_minor
    return {key: Totals(*values) for key, values in counts.items()}


def compare_totals(ledger: Mapping[TotalsKey, Totals], report: Mapping[TotalsKey, Totals]) -> list[Discrepancy]:
    """Where the settlement_report projection and the ledger disagree about the day's totals."""
    out = []
    for currency, partner in sorted(set(ledger) | set(report)):
        ours, theirs = ledger.get((currency, partner), Totals()), report.get((currency, partner), Totals())
        if ours != theirs:
            out.append(Discrepancy(
                "report_total_mismatch", partner, "", "", ours.settled_minor, currency, None, None,
                f"ledger: {ours.settled_count} settled ({ours.settled_minor}), {ours.refunded_count} refunded "
                f"({ours.refunded_minor}); settlement_report: {theirs.settled_count} settled "
                f"({theirs.settled_minor}), {theirs.refunded_count} refunded ({theirs.refunded_minor})"))
    return out


def combine(day: date, parts: Sequence[Reconciliation], totals: Sequence[Discrepancy], refunds: int,
            sources: Mapping[str, str]) -> Reconciliation:
    """One day's result over every partner endpoint, with the projections' cross-check."""
    return Reconciliation(day, sum(p.matched for p in parts), sum(p.total for p in parts),
                          tuple(d for p in parts for d in p.discrepancies) + tuple(totals),
                          settlements=sum(p.settlements for p in parts),
                          refunds=refunds, partner_rows=sum(p.partner_rows for p in parts), sources=dict(sources))


# -- the partner's report --------------------------------------------------------------------------


def parse_report(text: str, day: date, source: str) -> list[PartnerRow]:
    """The rows of one day's report; PartnerReportError naming the line if it is not the documented CSV."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(header) != REPORT_COLUMNS:
        raise PartnerReportError(f"{source}: the report for {day} does not start with the header "
                                 f"{','.join(REPORT_COLUMNS)} (got {','.join(header or [])!r})")
    rows = []
    for line, values in enumerate(reader, start=2):
        if not values:
            continue
        rows.append(_parse_row(values, day, f"{source}: report {day}, line {line}"))
    return rows


def _parse_row(values: list[str], day: date, where: str) -> PartnerRow:
    if len(values) != len(REPORT_COLUMNS):
        raise PartnerReportError(f"{where}: {len(values)} fields, expected {len(REPORT_COLUMNS)}")
    booked, sid, reference, amount, currency, status = values
    if booked != day.isoformat():
        raise PartnerReportError(f"{where}: booked on {booked!r}, not {day}")
    if not amount.isascii() or not amount.isdigit() or int(amount) <= 0:
        raise PartnerReportError(f"{where}: amount_minor {amount!r} is not a positive integer of minor units")
    if not (len(currency) == 3 and currency.isascii() and currency.isalpha() and currency.isupper()):
        raise PartnerReportError(f"{where}: currency {currency!r} is not an ISO 4217 code")
    if status not in ("ACCEPTED", "DECLINED"):
        raise PartnerReportError(f"{where}: status {status!r} is neither ACCEPTED nor DECLINED")
    if not sid:
        raise PartnerReportError(f"{where}: no submission_id")
    return PartnerRow(sid, reference, int(amount), currency, "ACCEPTED" if status == "ACCEPTED" else "DECLINED", day)


async def _fetch_reports(endpoints: Mapping[str, str], days: Sequence[date], timeout_s: float,
                         connect_timeout_s: float) -> dict[str, list[PartnerRow]]:
    """Every endpoint's reports for `days`, over one pooled session; endpoint -> rows."""
    timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_timeout_s)
    connector = aiohttp.TCPConnector(limit=8)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        async def one(label: str, url: str, day: date) -> list[PartnerRow]:
            where = f"partner {label} at {url}"
            try:
                async with session.get(f"{url.rstrip('/')}/v1/settlement-reports/{day.isoformat()}") as response:
                    if response.status != 200:
                        raise PartnerUnreachableError(f"{where}: the report for {day} answered HTTP {response.status}")
                    if (response.content_length or 0) > REPORT_BYTES_MAX:
                        raise PartnerReportError(f"{where}: the report for {day} is over {REPORT_BYTES_MAX} bytes")
                    raw = bytearray()
                    async for chunk in response.content.iter_chunked(64 * 1024):
                        raw += chunk
                        if len(raw) > REPORT_BYTES_MAX:
                            break
            except (aiohttp.ClientError, TimeoutError) as error:
                reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
                raise PartnerUnreachableError(f"{where}: cannot fetch the report for {day}: "
                                              f"{_one_line(reason)}") from None
            if len(raw) > REPORT_BYTES_MAX:
                raise PartnerReportError(f"{where}: the report for {day} is over {REPORT_BYTES_MAX} bytes")
            try:
                text = bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                raise PartnerReportError(f"{where}: the report for {day} is not UTF-8") from None
            return parse_report(text, day, where)

        keys = [(label, url, day) for label, url in endpoints.items() for day in days]
        # Every fetch finishes before the session closes; the first failure, in endpoint and day order, is raised.
        answers = await asyncio.gather(*(one(*key) for key in keys), return_exceptions=True)
    rows: dict[str, list[PartnerRow]] = defaultdict(list)
    for (label, _, _), found in zip(keys, answers, strict=True):
        if isinstance(found, BaseException):
            raise found
        rows[label] += found
    return dict(rows)


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- the ledger ------------------------------------------------------------------------------------


_LEDGER_SQL: Final = """
    SELECT e.payment_id, e.source_event_id, e.kind, e.occurred_at, p.account, p.currency, -p.amount_minor,
           lp.partner
    FROM journal_entries e
    JOIN postings p ON p.entry_id = e.entry_id AND p.amount_minor < 0
    LEFT JOIN ledger_payments lp ON lp.payment_id = e.payment_id
    WHERE e.kind IN ('PaymentSettled', 'PaymentRefunded') AND e.occurred_at >= %s AND e.occurred_at < %s
    ORDER BY e.occurred_at, e.source_event_id"""
_REPORT_SQL: Final = """SELECT currency, partner, settled_count, settled_minor, refunded_count, refunded_minor
                        FROM settlement_report WHERE day = %s"""
_KNOWN_SQL: Final = """
    SELECT t.detail->>'submission_id', t.payment_id, s.status
    FROM payment_timeline t LEFT JOIN payment_status s ON s.payment_id = t.payment_id
    WHERE t.event_type = 'SubmittedToPartner' AND t.detail->>'submission_id' = ANY(%s)"""


@dataclass(frozen=True)
class LedgerDay:
    settlements: list[OurSettlement]  # D-1..D+1
    refunds: list[tuple[str, str, int]]  # D only: (currency, partner, amount_minor)
    report: dict[TotalsKey, Totals]  # the settlement_report projection's rows for D


def _utc_midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def read_ledger(database_url: str, day: date) -> LedgerDay:
    """Our side, in one read-only snapshot (REPEATABLE READ): the ledger and the report agree in time."""
    settlements: list[OurSettlement] = []
    refunds: list[tuple[str, str, int]] = []
    with _connect(database_url) as conn:  # one transaction: both reads see one snapshot
        rows = conn.execute(_LEDGER_SQL, (_utc_midnight(day - timedelta(days=1)),
                                          _utc_midnight(day + timedelta(days=2)))).fetchall()
        report = {(str(r[0]), str(r[1])): Totals(int(r[2]), int(r[3]), int(r[4]), int(r[5]))
                  for r in conn.execute(_REPORT_SQL, (day,)).fetchall()}
    for payment_id, event_id, kind, occurred_at, account, currency, amount, partner in rows:
        assert isinstance(occurred_at, datetime) and isinstance(amount, int) and amount > 0
        on = occurred_at.astimezone(UTC).date()
        if kind == "PaymentSettled":
            # The settlement debits partner:<name>:clearing (projections.ledger): the partner is in the account.
            name = str(account).removeprefix("partner:").removesuffix(":clearing")
            assert str(account) == f"partner:{name}:clearing", account
            settlements.append(OurSettlement(str(payment_id), name, amount, str(currency).strip(), on, str(event_id)))
        elif on == day:
            refunds.append((str(currency).strip(), str(partner or "?"), amount))
    return LedgerDay(settlements, refunds, report)


def read_known(database_url: str, submission_ids: Sequence[str]) -> dict[str, str]:
    """What the payment_status projection knows of submissions we have no settlement of."""
    if not submission_ids:
        return {}
    with _connect(database_url) as conn:
        rows = conn.execute(_KNOWN_SQL, (list(submission_ids),)).fetchall()
    return {str(sid): f"we submitted it as payment {pid}, now {status or 'unknown status'}"
            for sid, pid, status in rows}


def _connect(database_url: str) -> psycopg.Connection[tuple[Any, ...]]:
    try:
        conn = psycopg.connect(database_url, connect_timeout=DB_CONNECT_TIMEOUT_S,
                               options=f"-c statement_timeout={DB_STATEMENT_TIMEOUT_MS}")
    except psycopg.Error as error:
        raise LedgerUnreachableError(f"database: {_one_line(str(error))}") from None
    conn.read_only = True  # reconciliation never writes
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    return conn


# -- the command -----------------------------------------------------------------------------------


def reconcile(settings: Settings, day: date) -> Reconciliation:
    """1. read our side (ledger and settlement_report, one snapshot); 2. fetch every endpoint's reports
    of D-1..D+1; 3. compare per endpoint, asking payment_status about submissions we never settled;
    4. cross-check the projections' totals. Raises ReconcileError if a source cannot be read."""
    caller = settings.caller()
    groups: dict[str, list[str]] = defaultdict(list)  # one report per endpoint, whatever partners share it
    for name, url in sorted(caller.endpoints.items()):
        groups[url].append(name)
    labels = {"+".join(names): url for url, names in groups.items()}
    days = [day + timedelta(days=offset) for offset in NEIGHBOUR_DAYS]
    try:
        ledger = read_ledger(settings.database, day)
        reports = asyncio.run(_fetch_reports(labels, days, caller.timeout_s, caller.connect_timeout_s))
        parts = [_compare_endpoint(settings.database, day, label, names=groups[url], settlements=ledger.settlements,
                                   theirs=reports.get(label, [])) for label, url in labels.items()]
    except psycopg.Error as error:
        raise LedgerUnreachableError(f"database: {_one_line(str(error))}") from None
    endpoints = caller.endpoints
    strays = [s for s in ledger.settlements if s.day == day and s.partner not in endpoints]
    parts += [_unconfigured(day, strays)] if strays else []
    totals = compare_totals(ledger_totals(ledger.settlements, ledger.refunds, day), ledger.report)
    return combine(day, parts, totals, len(ledger.refunds), endpoints)


def _compare_endpoint(database_url: str, day: date, label: str, *, names: Sequence[str],
                      settlements: Sequence[OurSettlement], theirs: list[PartnerRow]) -> Reconciliation:
    ours = [s for s in settlements if s.partner in names]
    ours_sids = {s.submission_id for s in ours}
    unknown = sorted({r.submission_id for r in theirs if r.day == day and r.submission_id not in ours_sids})
    return compare(day, ours, theirs, partner_label=label, known=read_known(database_url, unknown))


def _unconfigured(day: date, strays: Sequence[OurSettlement]) -> Reconciliation:
    """Settlements through a partner with no endpoint here: they cannot be confirmed."""
    found = tuple(Discrepancy("missing_at_partner", s.partner, s.payment_id, s.submission_id, s.amount_minor,
                              s.currency, None, None, f"partner {s.partner} is not in PAYMENTS_PARTNERS: its "
                                                      "report was not fetched") for s in strays)
    return Reconciliation(day, 0, len({s.submission_id for s in strays}), found, settlements=len(strays))


def write_csv(path: Path, result: Reconciliation) -> None:
    """One row per discrepancy (a header only when clean); written to a temporary file, then renamed."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(d.csv_row() for d in result.discrepancies)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(out.getvalue(), encoding="utf-8")
    temporary.replace(path)


def as_json(result: Reconciliation, csv_path: Path) -> dict[str, Any]:
    accuracy = result.accuracy
    return {"date": result.day.isoformat(), "clean": result.clean, "matched": result.matched,
            "total": result.total, "accuracy": f"{accuracy.numerator}/{accuracy.denominator}" if accuracy else None,
            "accuracy_percent": result.percent, "settlements": result.settlements, "refunds": result.refunds,
            "partner_rows": result.partner_rows, "partners": result.sources, "csv": str(csv_path),
            "discrepancies": [asdict(d) for d in result.discrepancies]}


def print_text(result: Reconciliation, csv_path: Path) -> None:
    partners = ", ".join(f"{name} ({url})" for name, url in sorted(result.sources.items()))
    print(f"reconcile {result.day} (UTC) with {partners}")
    print(f"ours:    {result.settlements} settlements in the ledger, {result.refunds} refunds "
          "(refunds are checked against settlement_report only: partners do not report them)")
    print(f"partner: {result.partner_rows} transfers booked")
    print(f"discrepancies: {len(result.discrepancies)}")
    for d in result.discrepancies:
        ours = f"{d.our_amount_minor} {d.our_currency}" if d.our_amount_minor is not None else "-"
        theirs = f"{d.partner_amount_minor} {d.partner_currency}" if d.partner_amount_minor is not None else "-"
        print(f"  {d.kind:21} {d.partner:10} payment {d.payment_id or '-'}  submission {d.submission_id or '-'}"
              f"  ours {ours}  partner {theirs}\n    {d.detail}")
    print(f"accuracy: {result.accuracy_text()}")
    print(f"csv: {csv_path} ({len(result.discrepancies)} rows)")


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a day (YYYY-MM-DD)") from None


def handler(args: argparse.Namespace, settings: Settings) -> int:
    day: date = args.date
    result = reconcile(settings, day)
    csv_path = Path(args.csv) if args.csv else Path(f"reconcile-{day.isoformat()}.csv")
    write_csv(csv_path, result)
    if args.json:
        json.dump(as_json(result, csv_path), sys.stdout, indent=2)
        print()
    else:
        print_text(result, csv_path)
    return EXIT_CLEAN if result.clean else EXIT_DISCREPANCIES


def add_parser(commands: Any) -> None:  # argparse's subparsers action: its class is private
    """Add `payments reconcile` to the CLI's subcommands (ops.cli.OPERATOR_COMMANDS)."""
    parser = commands.add_parser(
        "reconcile", help="compare one UTC day's settlements in the ledger with each partner's settlement "
                          "report; exit 1 on any discrepancy")
    parser.add_argument("--date", required=True, type=_day, metavar="YYYY-MM-DD", help="the settlement day (UTC)")
    parser.add_argument("--csv", metavar="PATH", help="where to write the discrepancies "
                                                      "(default: reconcile-<date>.csv)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON (for scripts)")
    parser.set_defaults(handler=handler)
