"""Versioned SQL migrations, applied in order, each once, each in its own transaction.

Files are `projections/migrations/NNNN_name.sql`. A migration is never edited after it is released:
a change is a new file. Concurrent migrators serialise on an advisory lock.
"""

from __future__ import annotations

import re
import threading
from importlib import resources

import psycopg
import structlog

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_ID = 0x7061796D  # "paym": an arbitrary constant shared by every migrator
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
    assert len(versions) == len(set(versions)), f"duplicate migration versions: {versions}"
    return found


def migrate(database_url: str, up_to: int | None = None) -> list[str]:
    """Apply every pending migration (with `up_to`, only versions <= up_to); return the names applied."""
    applied_now: list[str] = []
    with psycopg.connect(database_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_ID,))
        try:
            conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
                                version integer PRIMARY KEY, name text NOT NULL,
                                applied_at timestamptz NOT NULL DEFAULT now())""")
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, name, sql in available():
                if version in done or (up_to is not None and version > up_to):
                    continue
                with conn.transaction():
                    conn.execute(sql.encode())
                    conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
                applied_now.append(name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_ID,))
    return applied_now


def migrate_when_available(database_url: str, stop: threading.Event, *, pause_max_s: float = 5.0) -> list[str] | None:
    """`migrate`, waiting for a database that is down or restarting (logged); None if `stop` came first."""
    attempt = 0
    while not stop.is_set():
        attempt += 1
        try:
            applied = migrate(database_url)
        except (psycopg.OperationalError, psycopg.InterfaceError) as error:
            log.warning("waiting_for_database", attempt=attempt, error=f"{type(error).__name__}: {error}".strip())
            stop.wait(min(pause_max_s, 0.2 * 2 ** min(attempt, 10)))
            continue
        if attempt > 1:
            log.info("database_available", attempts=attempt)
        return applied
    return None
