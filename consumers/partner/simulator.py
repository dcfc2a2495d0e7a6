"""The simulated partner's book: what it decides for each submission, reproducible from a seed, and durable.

No network here: `consumers.partner.sim_server` serves this book over HTTP (`payments run partner-sim`),
and the gateway reaches it only through that API, as it would a bank's.

Behaviour per submission id (the first submission decides, at receipt; the draw is seeded by (seed,
submission id, attempt), so a run is reproducible regardless of arrival order or restarts):
  * DECLINED (decline_rate): recorded; the reason code is INSUFFICIENT_FUNDS_AT_PARTNER.
  * ERROR (error_rate): a partner-side failure before anything happened (HTTP 500); NOT recorded, a later
    submission of the same id is a fresh attempt, a query says NOT_FOUND.
  * lost answer (timeout_rate): the partner ACCEPTED and recorded it, but the connection drops before
    the answer is sent. A query (or a resubmission) then returns ACCEPTED with the same reference.
  * ACCEPTED otherwise.
Resubmitting a recorded id returns the recorded outcome and never creates a second transfer (a
*replay*); the same id with another amount or other parties is refused (IDEMPOTENCY_KEY_REUSED).

Like a bank's, the book records a submission when it arrives, before the partner's processing time
(the server's latency) has passed: from then on a query finds it, *pending* (`query` says PENDING)
until the server has `finish`ed the request, then with its outcome. So a query about a submission in
progress never says NOT_FOUND, and nobody is led to send it again.

Throttling (throttle_rate): a request to the transfer endpoints may be answered 429 before anything is
processed; the draw is seeded by (seed, kind of request, submission id, how many such requests came
before), and nothing is recorded.

Durability: every decision is a journal entry (`<data_dir>/submissions.jsonl`), written and fsynced
when the submission is received, before its processing time and its answer (the server commits them
in groups), and read back at start. A submission still pending when the simulator stopped is complete
after the restart, with the outcome recorded at its receipt: deterministic, and what a query then
says.

Each day's settlement report (CSV) is written to `<data_dir>/reports/settlement-YYYY-MM-DD.csv` when
the first submission of a later day arrives, and served on demand; a transfer is in it from receipt.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final, Literal

from consumers.partner.client import PartnerError

DEFAULT_DATA_DIR: Final = ".stack/partner"
DEFAULT_LATENCY_P99_FACTOR: Final = 5.0  # p99 = 5 x median when only the median is given
LOG_FILE: Final = "submissions.jsonl"
REPORT_COLUMNS: Final = ("date", "submission_id", "partner_reference", "amount_minor", "currency", "status")
DECLINE_CODE: Final = "INSUFFICIENT_FUNDS_AT_PARTNER"
ERROR_CODE: Final = "PARTNER_INTERNAL_ERROR"
PENDING: Final = "PENDING"  # what `query` says about a submission received and not yet answered
THROTTLE_RETRY_AFTER_S: Final = 1  # the Retry-After of a throttle_rate 429: the shortest a header can say
Z_99: Final = 2.3263478740408408  # standard normal quantile at 0.99
LATENCY_MS_MAX: Final = 30_000.0  # a bound on any one simulated call


class SimulatorConfigError(PartnerError, ValueError):
    """A simulator setting (PAYMENTS_PARTNER_*) is malformed or out of range."""


@dataclass(frozen=True)
class SimulatorConfig:
    decline_rate: float = 0.1
    error_rate: float = 0.0
    timeout_rate: float = 0.05
    throttle_rate: float = 0.0  # share of transfer requests answered 429 (THROTTLE_RETRY_AFTER_S), drawn apart
    latency_median_ms: float = 20.0
    latency_p99_ms: float = 100.0
    seed: int = 7
    data_dir: Path = Path(DEFAULT_DATA_DIR)

    def __post_init__(self) -> None:
        rates = (self.decline_rate, self.error_rate, self.timeout_rate)
        if any(not 0.0 <= rate <= 1.0 for rate in rates) or sum(rates) > 1.0:
            raise SimulatorConfigError(f"rates must be in [0, 1] and sum to at most 1, got {rates}")
        if not 0.0 <= self.throttle_rate <= 1.0:
            raise SimulatorConfigError(f"the throttle rate must be in [0, 1], got {self.throttle_rate}")
        if not 0.0 <= self.latency_median_ms <= self.latency_p99_ms <= LATENCY_MS_MAX:
            raise SimulatorConfigError("latency must satisfy 0 <= median <= p99 <= "
                                       f"{LATENCY_MS_MAX}, got {self.latency_median_ms}/{self.latency_p99_ms}")


def parse_latency(text: str) -> tuple[float, float]:
    """(median, p99) in ms from "median" or "median,p99" (p99 defaults to 5 x median)."""
    median_text, _, p99_text = text.partition(",")
    try:
        median = float(median_text)
        p99 = float(p99_text) if p99_text.strip() else median * DEFAULT_LATENCY_P99_FACTOR
    except ValueError:
        raise SimulatorConfigError(f"latency must be 'median' or 'median,p99' in ms, got {text!r}") from None
    return median, p99


@dataclass(frozen=True)
class Transfer:
    """A submission the partner recorded: it moved (ACCEPTED) or refused (DECLINED) the money."""

    submission_id: str
    status: Literal["ACCEPTED", "DECLINED"]
    partner_reference: str | None
    reason_code: str | None
    amount_minor: int
    currency: str
    day: str  # ISO date of the partner's booking day (UTC)
    payer: str = ""
    payee: str = ""


@dataclass(frozen=True)
class TransferRequest:
    submission_id: str
    amount_minor: int
    currency: str
    payer: str
    payee: str


@dataclass(frozen=True)
class SubmitDecision:
    """What the partner did with one POST."""

    kind: Literal["recorded", "replayed", "error", "conflict"]
    transfer: Transfer | None = None
    lost_answer: bool = False  # recorded, but the answer never leaves the partner (the connection drops)
    journal: tuple[dict[str, Any], ...] = ()  # entries to make durable before answering


SCENARIO_PREFIXES: Final = {"acc-sim-decline": "decline", "acc-sim-timeout": "timeout"}


def scenario_of(payee: str) -> str | None:
    """A forced outcome for demo and test payees: `acc-sim-decline*` is always declined,
    `acc-sim-timeout*` is accepted but its answer is lost (a later query says ACCEPTED)."""
    for prefix, scenario in SCENARIO_PREFIXES.items():
        if payee.startswith(prefix):
            return scenario
    return None


def utc_now() -> datetime:
    return datetime.now(UTC)


class PartnerBook:
    """The partner's state: transfers by submission id, and what was asked how often. Thread-safe.

    `submit` decides at receipt and returns the journal entries to persist; the transfer is pending
    until `finish`. `apply` replays the entries at start (nothing is pending then).
    """

    def __init__(self, config: SimulatorConfig | None = None, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.config = config or SimulatorConfig()
        self._clock = clock
        self._lock = threading.Lock()
        self._transfers: dict[str, Transfer] = {}
        self._errors: dict[str, int] = {}  # ERROR attempts per id: the next attempt draws afresh
        self._pending: set[str] = set()  # recorded, and the POST that recorded it not answered yet
        self._requests: Counter[str] = Counter()  # throttle draws per "kind:id" (not durable: since start)
        self.throttled: Counter[str] = Counter()  # 429s answered per submission id (not durable: since start)
        self.posts: Counter[str] = Counter()  # POSTs that reached the book, per submission id
        self.replays: Counter[str] = Counter()  # of which answered from an earlier record
        self.queries: Counter[str] = Counter()  # GETs per submission id (not durable: since start)
        self._sigma = (math.log(self.config.latency_p99_ms / self.config.latency_median_ms) / Z_99
                       if self.config.latency_median_ms > 0 else 0.0)
        self._query_rng = random.Random(f"{self.config.seed}:queries")
        self._last_day: str | None = None

    # -- the partner's decisions ----------------------------------------------------------------

    def latency_s(self, submission_id: str | None = None) -> float:
        """How long this call takes at the partner: seeded per submission attempt for a POST."""
        if self.config.latency_median_ms <= 0:
            return 0.0
        if submission_id is None:
            rng = self._query_rng
        else:
            rng = random.Random(f"{self.config.seed}:{submission_id}:{self._errors.get(submission_id, 0)}:latency")
        sample = self.config.latency_median_ms * math.exp(self._sigma * rng.gauss(0.0, 1.0))
        return min(sample, LATENCY_MS_MAX) / 1000

    def throttle(self, kind: Literal["submit", "query"], submission_id: str) -> bool:
        """Whether this request is answered 429 (throttle_rate). Each request of a kind for an id draws
        afresh, seeded by how many came before it; a throttled one was not processed: nothing recorded."""
        rate = self.config.throttle_rate
        if rate <= 0:
            return False
        with self._lock:
            key = f"{kind}:{submission_id}"
            draw = random.Random(f"{self.config.seed}:{key}:{self._requests[key]}:throttle").random()
            self._requests[key] += 1
            if draw >= rate:
                return False
            self.throttled[submission_id] += 1
            return True

    def submit(self, request: TransferRequest) -> SubmitDecision:
        """Decide one POST, at its receipt. A transfer it records is pending until `finish`."""
        with self._lock:
            sid = request.submission_id
            recorded = self._transfers.get(sid)
            if recorded is not None and (recorded.amount_minor, recorded.currency, recorded.payer,
                                         recorded.payee) != (request.amount_minor, request.currency,
                                                             request.payer, request.payee):
                return SubmitDecision("conflict", recorded)
            self.posts[sid] += 1
            if recorded is not None:
                self.replays[sid] += 1
                return SubmitDecision("replayed", recorded, journal=({"kind": "replay", "submission_id": sid},))
            attempt = self._errors.get(sid, 0)
            draw = random.Random(f"{self.config.seed}:{sid}:{attempt}").random()
            scenario = scenario_of(request.payee)
            rates = self.config
            declined = scenario == "decline" or (scenario is None and draw < rates.decline_rate)
            errored = scenario is None and not declined and draw < rates.decline_rate + rates.error_rate
            lost = scenario == "timeout" or (
                scenario is None and not declined and not errored
                and draw < rates.decline_rate + rates.error_rate + rates.timeout_rate)
            if errored:
                self._errors[sid] = attempt + 1
                return SubmitDecision("error", journal=({"kind": "error", "submission_id": sid, "attempt": attempt},))
            today = self._clock().astimezone(UTC).date().isoformat()
            self._roll_reports(today)
            transfer = Transfer(
                submission_id=sid, status="DECLINED" if declined else "ACCEPTED",
                partner_reference=None if declined else self._reference(sid),
                reason_code=DECLINE_CODE if declined else None, amount_minor=request.amount_minor,
                currency=request.currency, day=today, payer=request.payer, payee=request.payee)
            self._transfers[sid] = transfer
            self._pending.add(sid)
            return SubmitDecision("recorded", transfer, lost_answer=lost,
                                  journal=({"kind": "recorded", **asdict(transfer)},))

    def finish(self, submission_id: str) -> None:
        """The POST that recorded the submission has been processed (answered, or its answer lost): a
        query now gets the outcome. A replay never makes a transfer pending again."""
        with self._lock:
            self._pending.discard(submission_id)

    def query(self, submission_id: str) -> Transfer | Literal["PENDING"] | None:
        """The transfer; PENDING while a POST of it is being processed; None if the partner has none."""
        with self._lock:
            self.queries[submission_id] += 1
            if submission_id in self._pending:
                return PENDING
            return self._transfers.get(submission_id)

    # -- durability -----------------------------------------------------------------------------

    def apply(self, entry: dict[str, Any]) -> None:
        """Replay one journal entry (at start)."""
        sid = entry["submission_id"]
        if entry["kind"] == "error":
            self._errors[sid] = entry["attempt"] + 1
            self.posts[sid] += 1
        elif entry["kind"] == "replay":
            self.posts[sid] += 1
            self.replays[sid] += 1
        else:
            fields = {key: entry[key] for key in Transfer.__dataclass_fields__ if key in entry}
            self._transfers[sid] = Transfer(**fields)
            self.posts[sid] += 1
            self._last_day = max(self._last_day or "", self._transfers[sid].day)

    # -- reconciliation and inspection ------------------------------------------------------------

    def report_csv(self, day: date) -> tuple[str, int]:
        """`day`'s settlement report (every recorded submission, ACCEPTED and DECLINED) and its row count."""
        with self._lock:
            rows = self._rows_of(day)
        return _csv_of(rows), len(rows)

    def write_settlement_report(self, day: date, path: Path) -> int:
        """Write `day`'s report to `path` (a temporary file renamed: a reader never sees half); the row count."""
        text, count = self.report_csv(day)
        _write_atomically(path, text)
        return count

    def report_path(self, day: date) -> Path:
        return self.config.data_dir / "reports" / f"settlement-{day.isoformat()}.csv"

    def transfers(self) -> list[Transfer]:
        with self._lock:
            return list(self._transfers.values())

    def submissions(self) -> dict[str, dict[str, Any]]:
        """Per submission id: its status (if recorded), POSTs, replays and queries seen."""
        with self._lock:
            ids = set(self.posts) | set(self._transfers) | set(self.queries)
            return {sid: {"status": (PENDING if sid in self._pending else t.status)
                          if (t := self._transfers.get(sid)) else None,
                          "posts": self.posts[sid], "replays": self.replays[sid], "queries": self.queries[sid]}
                    for sid in sorted(ids)}

    # -- internals -----------------------------------------------------------------------------

    def _rows_of(self, day: date) -> list[Transfer]:
        return [t for t in self._transfers.values() if t.day == day.isoformat()]

    def _reference(self, submission_id: str) -> str:
        digest = hashlib.sha256(f"{self.config.seed}:{submission_id}".encode()).hexdigest()
        return f"SIM-{digest[:16].upper()}"

    def _roll_reports(self, today: str) -> None:
        """On the first submission of a new day, write the previous day's final report (caller holds the lock)."""
        if self._last_day is not None and self._last_day < today:
            previous = date.fromisoformat(self._last_day)
            _write_atomically(self.report_path(previous), _csv_of(self._rows_of(previous)))
        self._last_day = today


class Journal:
    """The book's durable log: JSON lines, appended and fsynced in groups. Not thread-safe: one writer."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / LOG_FILE
        self._file: io.TextIOWrapper | None = None

    def load_into(self, book: PartnerBook) -> int:
        """Replay every complete entry into `book`; returns how many. A torn last line (a crash
        mid-append) is skipped: the answer it belonged to was never sent."""
        if not self.path.exists():
            return 0
        count = 0
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                book.apply(entry)
                count += 1
        return count

    def append(self, entries: Iterable[dict[str, Any]]) -> None:
        """Write the entries and fsync once: when this returns they survive a crash."""
        if self._file is None:
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write("".join(json.dumps(entry, sort_keys=True) + "\n" for entry in entries))
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _csv_of(rows: list[Transfer]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(REPORT_COLUMNS)
    for t in rows:
        writer.writerow((t.day, t.submission_id, t.partner_reference or "", t.amount_minor, t.currency, t.status))
    return out.getvalue()


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
