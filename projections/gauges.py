"""Gauges read from the read models (payments.runtime.metrics): what only the database knows.

- payments in flight and stuck, per open status (payment_status): by the status index, since open
  payments are few and finished ones are years of rows;
- the ledger's net balance per currency (must be 0: double entry) and the events it could not post.

Each is asked at most every `every_s` on a connection of its own, so a scrape never waits on the
projection's connection and a database away costs one failed ask per interval, not one per scrape.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final, Generic, TypeVar

import psycopg

Cursor = psycopg.Cursor[tuple[object, ...]]
T = TypeVar("T")
Series = list[tuple[float, dict[str, str]]]

# Statuses a payment leaves again: any other is where a payment ends (REFUNDED: settled, then refunded).
# COMPENSATION_FAILED waits for an operator, so it counts as open (and soon as stuck).
OPEN_STATUSES: Final = ("INITIATED", "RISK_ASSESSED", "FUNDS_RESERVED", "SUBMITTED", "PARTNER_ACCEPTED",
                        "PARTNER_DECLINED", "COMPENSATION_FAILED")


def open_payments(cur: Cursor, stuck_after_s: int) -> dict[str, tuple[int, int]]:
    """Per open status: how many payments are in it, and how many of those have not changed for
    `stuck_after_s`. Every open status is in the answer (0 when none)."""
    cur.execute("""SELECT status, count(*), count(*) FILTER (WHERE updated_at < now() - make_interval(secs => %s))
                   FROM payment_status WHERE status = ANY(%s) GROUP BY status""",
                (stuck_after_s, list(OPEN_STATUSES)))
    found = {str(row[0]): (int(row[1]), int(row[2])) for row in cur.fetchall()}  # type: ignore[call-overload]
    return {status: found.get(status, (0, 0)) for status in OPEN_STATUSES}


def ledger_state(cur: Cursor) -> tuple[dict[str, int], int]:
    """The sum of every account balance per currency (0 in a balanced ledger) and the count of events
    the ledger could not post (ledger_unposted)."""
    cur.execute("SELECT currency, sum(balance_minor) FROM account_balances GROUP BY currency")
    net = {str(row[0]): int(row[1]) for row in cur.fetchall()}  # type: ignore[call-overload]
    cur.execute("SELECT count(*) FROM ledger_unposted")
    row = cur.fetchone()
    return net, int(row[0]) if row else 0  # type: ignore[call-overload]


class Cached(Generic[T]):
    """`ask(cursor)` against the database at most every `every_s`; the last answer in between (or `empty`)."""

    def __init__(self, database_url: str, ask: Callable[[Cursor], T], empty: T, every_s: float = 15.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._url, self._ask, self._every_s, self._clock = database_url, ask, every_s, clock
        self._asked = float("-inf")
        self._value = empty
        self._lock = threading.Lock()

    def value(self) -> T:
        with self._lock:
            if self._clock() - self._asked >= self._every_s:
                self._asked = self._clock()  # a failed ask waits its turn too: no storm on a database away
                with psycopg.connect(self._url, connect_timeout=3, options="-c statement_timeout=5000") as conn, \
                        conn.cursor() as cur:
                    self._value = self._ask(cur)
            return self._value


class OpenPayments:
    def __init__(self, database_url: str, stuck_after_s: int, every_s: float = 15.0) -> None:
        empty: dict[str, tuple[int, int]] = {}
        self._counts = Cached(database_url, lambda cur: open_payments(cur, stuck_after_s), empty, every_s)

    def in_flight(self) -> Series:
        return [(total, {"status": status}) for status, (total, _) in self._counts.value().items()]

    def stuck(self) -> Series:
        return [(stuck, {"status": status}) for status, (_, stuck) in self._counts.value().items()]


class LedgerState:
    def __init__(self, database_url: str, every_s: float = 15.0) -> None:
        empty: tuple[dict[str, int], int] = ({}, 0)
        self._state = Cached(database_url, ledger_state, empty, every_s)

    def net(self) -> Series:
        return [(float(total), {"currency": currency}) for currency, total in self._state.value()[0].items()]

    def unposted(self) -> Series:
        return [(float(self._state.value()[1]), {})]
