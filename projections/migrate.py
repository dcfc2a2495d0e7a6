"""Versioned SQL migrations, applied in order, each once, each in its own transaction.

Files are `projections/migrations/NNNN_name.sql`. A migration is never edited after it is released:
a change is a new file. Concurrent migrators serialise on an advisory lock.

Every wait is bounded, so a projection started beside a broken database never hangs in its migration:
  - the server bounds what it can: each statement runs under `statement_timeout` and each lock wait
    (the advisory lock, a table lock) under `lock_timeout`; past them it cancels the statement
    (`QueryCanceled`, `LockNotAvailable`), the migration's transaction rolls back, and the error is a
    `DatabaseUnavailableError`, which `migrate_when_available` waits out like a server that is down;
  - connecting is bounded by libpq's `connect_timeout`;
  - a server that does not answer at all (stopped with SIGSTOP, a network black hole) cannot enforce
    anything, so each call is also declared to the process's watchdog when one is given: a call that
    outlives `call_deadline_s` ends the process with exit code 4, and the restarted process waits for
    the database (docs/operations.md, "Faults").
A migration whose statements need longer than `statement_timeout_s` must be split into files.
psycopg's errors are translated here: `DatabaseUnavailableError` (asking again may work) or
`MigrationError` (a file is misnamed or refused, a bad connection string: a retry will not help).
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from importlib import resources
from typing import Final

import psycopg
import structlog

from payments.runtime.watchdog import Watchdog
from projections.errors import DatabaseUnavailableError, MigrationError, ProjectionError, translate

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_ID = 0x7061796D  # "paym": an arbitrary constant shared by every migrator
CONNECT_TIMEOUT_S: Final = 5
STATEMENT_TIMEOUT_S: Final = 30.0  # one statement of a migration file (each statement on its own)
LOCK_TIMEOUT_S: Final = 10.0  # the advisory lock held by a concurrent migrator, or a table lock
# Above both server-side bounds, so a live server always answers first; only a silent one meets it.
CALL_DEADLINE_S: Final = 60.0
log = structlog.get_logger(__name__)


def available() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) for every migration shipped with the package, in order."""
    found = []
    for entry in resources.files("projections.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    found.sort()
    versions = [version for version, _, _ in found]
    if len(versions) != len(set(versions)):
        raise MigrationError(f"duplicate migration versions: {versions}")
    return found


def migrate(database_url: str, up_to: int | None = None, *, watchdog: Watchdog | None = None,
            statement_timeout_s: float = STATEMENT_TIMEOUT_S, lock_timeout_s: float = LOCK_TIMEOUT_S,
            call_deadline_s: float = CALL_DEADLINE_S) -> list[str]:
    """Apply every pending migration (with `up_to`, only versions <= up_to); return the names applied.

    Raises DatabaseUnavailableError when the server is down, restarting, or gave up on a statement or
    lock within the session's timeouts (nothing of the failed migration stays), MigrationError when a
    migration is refused or the connection string is unusable. With a `watchdog`, every call is
    declared to it with `call_deadline_s` (the module docstring says why).
    """
    def call(what: str) -> contextlib.AbstractContextManager[None]:
        return watchdog.guard(what, call_deadline_s) if watchdog is not None else contextlib.nullcontext()

    applied_now: list[str] = []
    with _translated("connecting"), call("migrate_connect"):
        conn = psycopg.connect(database_url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    with conn:
        with _translated("setting the session's timeouts"), call("migrate_session"):
            # Session settings: each migration's transaction and the advisory lock wait inherit them.
            conn.execute(f"SET statement_timeout = {int(statement_timeout_s * 1000)}")
            conn.execute(f"SET lock_timeout = {int(lock_timeout_s * 1000)}")
        with _translated("taking the migration lock"), call("migrate_lock"):
            conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            with _translated("reading schema_migrations"), call("migrate_bookkeeping"):
                conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
                                    version integer PRIMARY KEY, name text NOT NULL,
                                    applied_at timestamptz NOT NULL DEFAULT now())""")
                done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, name, sql in available():
                if version in done or (up_to is not None and version > up_to):
                    continue
                with _translated(f"migration {name}"), call(f"migrate {name}"), conn.transaction():
                    conn.execute(sql.encode())
                    conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
                applied_now.append(name)
        finally:
            # Closing the connection releases the lock too: a broken one needs nothing, and a failing
            # unlock must not hide the error that brought us here.
            if not conn.broken:
                with contextlib.suppress(psycopg.Error), call("migrate_unlock"):
                    conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied_now


def migrate_when_available(database_url: str, stop: threading.Event, *, watchdog: Watchdog | None = None,
                           pause_max_s: float = 5.0, statement_timeout_s: float = STATEMENT_TIMEOUT_S,
                           lock_timeout_s: float = LOCK_TIMEOUT_S,
                           call_deadline_s: float = CALL_DEADLINE_S) -> list[str] | None:
    """`migrate`, waiting for a database that is down, restarting, or too slow for the session's timeouts
    (a `waiting_for_database` line per attempt, pauses doubling up to `pause_max_s`); None if `stop`
    came first. A MigrationError is raised: no wait fixes it. With a `watchdog`, a call that never
    returns ends the process (exit code 4) instead of blocking it forever."""
    attempt = 0
    while not stop.is_set():
        attempt += 1
        try:
            applied = migrate(database_url, watchdog=watchdog, statement_timeout_s=statement_timeout_s,
                              lock_timeout_s=lock_timeout_s, call_deadline_s=call_deadline_s)
        except DatabaseUnavailableError as error:
            log.warning("waiting_for_database", attempt=attempt, error=str(error))
            stop.wait(min(pause_max_s, 0.2 * 2 ** min(attempt, 10)))
            continue
        if attempt > 1:
            log.info("database_available", attempts=attempt)
        return applied
    return None


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """psycopg errors inside as DatabaseUnavailableError (transient) or MigrationError (anything else)."""
    try:
        yield
    except psycopg.Error as error:
        failure: ProjectionError = translate(error, what)
        if not isinstance(failure, DatabaseUnavailableError):
            failure = MigrationError(str(failure))
        raise failure from error
