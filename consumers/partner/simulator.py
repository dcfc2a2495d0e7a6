"""A simulated payment partner: latency, declines, errors and lost answers, reproducible from a seed.

Behaviour per submission id (first submission decides; the draw is seeded by (seed, submission id,
attempt), so a run is reproducible regardless of arrival order or restarts):
  * DECLINED (decline_rate): recorded; the reason code is INSUFFICIENT_FUNDS_AT_PARTNER.
  * ERROR (error_rate): a partner-side failure before anything happened; NOT recorded as a payment,
    a later submission of the same id is a fresh attempt, a query returns NOT_FOUND.
  * timeout (timeout_rate): the partner ACCEPTED and recorded it, but the answer is lost: the caller
    gets ERROR/TIMEOUT. A query (or a resubmission) then returns ACCEPTED with the same reference.
  * ACCEPTED otherwise.
Resubmitting a recorded id returns the partner's recorded outcome and never creates a second payment.

Durability: every recorded decision is appended to `<data_dir>/submissions.jsonl` and fsynced before
`submit` returns, and the file is read back at start. Each day's settlement report (CSV) is written to
`<data_dir>/reports/settlement-YYYY-MM-DD.csv` when the first submission of a later day arrives, and
on demand with `write_settlement_report`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Final, Literal

from consumers.partner.client import TIMEOUT, PartnerError, QueryOutcome, SubmissionOutcome
from payments.money import Money

DEFAULT_DATA_DIR: Final = ".stack/partner"
DEFAULT_LATENCY_P99_FACTOR: Final = 5.0  # p99 = 5 x median when only the median is given
LOG_FILE: Final = "submissions.jsonl"
REPORT_COLUMNS: Final = ("date", "submission_id", "partner_reference", "amount_minor", "currency", "status")
DECLINE_CODE: Final = "INSUFFICIENT_FUNDS_AT_PARTNER"
ERROR_CODE: Final = "PARTNER_INTERNAL_ERROR"
Z_99: Final = 2.3263478740408408  # standard normal quantile at 0.99
LATENCY_MS_MAX: Final = 30_000.0  # a bound on any one simulated call


class SimulatorConfigError(PartnerError, ValueError):
    """A simulator setting (PAYMENTS_PARTNER_*) is malformed or out of range."""


@dataclass(frozen=True)
class SimulatorConfig:
    decline_rate: float = 0.1
    error_rate: float = 0.0
    timeout_rate: float = 0.05
    latency_median_ms: float = 20.0
    latency_p99_ms: float = 100.0
    seed: int = 7
    data_dir: Path = Path(DEFAULT_DATA_DIR)

    def __post_init__(self) -> None:
        rates = (self.decline_rate, self.error_rate, self.timeout_rate)
        if any(not 0.0 <= rate <= 1.0 for rate in rates) or sum(rates) > 1.0:
            raise SimulatorConfigError(f"rates must be in [0, 1] and sum to at most 1, got {rates}")
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
class _Recorded:
    submission_id: str
    status: Literal["ACCEPTED", "DECLINED"]
    partner_reference: str | None
    reason_code: str | None
    amount_minor: int
    currency: str
    day: str  # ISO date of the partner's booking day (UTC)


SCENARIO_PREFIXES: Final = {"acc-sim-decline": "decline", "acc-sim-timeout": "timeout"}


def scenario_of(payee: str) -> str | None:
    """A forced outcome for demo and test payees: `acc-sim-decline*` is always declined,
    `acc-sim-timeout*` is accepted but the gateway hears a timeout (a later query says ACCEPTED)."""
    for prefix, scenario in SCENARIO_PREFIXES.items():
        if payee.startswith(prefix):
            return scenario
    return None


def utc_now() -> datetime:
    return datetime.now(UTC)


class SimulatedPartner:
    """A `PartnerClient` that simulates a partner; thread-safe, durable in a JSON-lines file."""

    def __init__(self, config: SimulatorConfig | None = None, *, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.config = config or SimulatorConfig()
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.Lock()
        self._records: dict[str, _Recorded] = {}
        self._errors: dict[str, int] = {}  # ERROR attempts per id: the next attempt draws afresh
        self._sigma = (math.log(self.config.latency_p99_ms / self.config.latency_median_ms) / Z_99
                       if self.config.latency_median_ms > 0 else 0.0)
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self._log_path = self.config.data_dir / LOG_FILE
        self._load()
        self._last_day = max((record.day for record in self._records.values()), default=None)

    # -- PartnerClient -------------------------------------------------------------------------

    def submit(self, submission_id: str, amount: Money, payer: str, payee: str) -> SubmissionOutcome:
        attempt = self._errors.get(submission_id, 0)
        rng = random.Random(f"{self.config.seed}:{submission_id}:{attempt}")
        self._sleep(self._latency_ms(rng) / 1000)
        with self._lock:
            recorded = self._records.get(submission_id)
            if recorded is not None:
                return SubmissionOutcome(recorded.status, recorded.partner_reference, recorded.reason_code)
            draw = rng.random()
            scenario = scenario_of(payee)
            declined = scenario == "decline" or (scenario is None and draw < self.config.decline_rate)
            errored = scenario is None and not declined and draw < self.config.decline_rate + self.config.error_rate
            timed_out = scenario == "timeout" or (
                scenario is None and not declined and not errored
                and draw < self.config.decline_rate + self.config.error_rate + self.config.timeout_rate)
            if errored:
                self._errors[submission_id] = attempt + 1
                self._append({"kind": "error", "submission_id": submission_id, "attempt": attempt})
                return SubmissionOutcome("ERROR", reason_code=ERROR_CODE)
            today = self._clock().astimezone(UTC).date().isoformat()
            self._roll_reports(today)
            recorded = _Recorded(
                submission_id=submission_id, status="DECLINED" if declined else "ACCEPTED",
                partner_reference=None if declined else self._reference(submission_id),
                reason_code=DECLINE_CODE if declined else None, amount_minor=amount.amount_minor,
                currency=amount.currency, day=today)
            self._append({"kind": "recorded", **recorded.__dict__, "payer": payer, "payee": payee})
            self._records[submission_id] = recorded
            if timed_out:
                return SubmissionOutcome("ERROR", reason_code=TIMEOUT)
            return SubmissionOutcome(recorded.status, recorded.partner_reference, recorded.reason_code)

    def query(self, submission_id: str) -> QueryOutcome:
        with self._lock:
            recorded = self._records.get(submission_id)
        if recorded is None:
            return QueryOutcome("NOT_FOUND")
        return QueryOutcome(recorded.status, recorded.partner_reference)

    # -- reconciliation ------------------------------------------------------------------------

    def write_settlement_report(self, day: date, path: Path) -> int:
        """Write the CSV of `day`'s recorded submissions (ACCEPTED and DECLINED); returns the row count.

        Written to a temporary file and renamed, so a reader never sees half a report.
        """
        with self._lock:
            rows = self._rows_of(day)
        return self._write_rows(rows, path)

    def report_path(self, day: date) -> Path:
        return self.config.data_dir / "reports" / f"settlement-{day.isoformat()}.csv"

    # -- internals -----------------------------------------------------------------------------

    def _rows_of(self, day: date) -> list[_Recorded]:
        return [record for record in self._records.values() if record.day == day.isoformat()]

    @staticmethod
    def _write_rows(rows: list[_Recorded], path: Path) -> int:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(path.suffix + ".tmp")
        with temporary.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(REPORT_COLUMNS)
            for record in rows:
                writer.writerow((record.day, record.submission_id, record.partner_reference or "",
                                 record.amount_minor, record.currency, record.status))
        temporary.replace(path)
        return len(rows)

    def _latency_ms(self, rng: random.Random) -> float:
        if self.config.latency_median_ms <= 0:
            return 0.0
        sample = self.config.latency_median_ms * math.exp(self._sigma * rng.gauss(0.0, 1.0))
        return min(sample, LATENCY_MS_MAX)

    def _reference(self, submission_id: str) -> str:
        digest = hashlib.sha256(f"{self.config.seed}:{submission_id}".encode()).hexdigest()
        return f"SIM-{digest[:16].upper()}"

    def _roll_reports(self, today: str) -> None:
        """On the first submission of a new day, write the previous day's final report."""
        if self._last_day is not None and self._last_day < today:
            previous = date.fromisoformat(self._last_day)
            self._write_rows(self._rows_of(previous), self.report_path(previous))  # caller holds the lock
        self._last_day = today

    def _append(self, entry: dict[str, object]) -> None:
        with self._log_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _load(self) -> None:
        if not self._log_path.exists():
            return
        with self._log_path.open(encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line from a crash mid-append: that submit never returned
                if entry["kind"] == "error":
                    self._errors[entry["submission_id"]] = entry["attempt"] + 1
                else:
                    self._records[entry["submission_id"]] = _Recorded(**{
                        key: entry[key] for key in _Recorded.__dataclass_fields__})
