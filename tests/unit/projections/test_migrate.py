"""The start-up migration is bounded: the server cancels a statement or a lock wait past the session's
timeouts (then it is waited out like a database that is down), and a server that stops answering
mid-migration meets the watchdog (exit code 4) instead of blocking the process forever. psycopg's errors
leave as the projections' own."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

from payments.runtime.watchdog import EXIT_STUCK, Watchdog
from projections import migrate as migrate_module
from projections.errors import DatabaseUnavailableError, MigrationError
from projections.migrate import available, migrate, migrate_when_available

NAMES = [name for _, name, _ in available()]


class Connection:
    """A psycopg connection that records what it is asked; `on_execute` may raise or block."""

    def __init__(self, on_execute: Callable[[str], None] = lambda text: None) -> None:
        self.executed: list[str] = []
        self.on_execute = on_execute
        self.broken = False

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def execute(self, query: str | bytes, params: object = None) -> list[tuple[Any, ...]]:
        text = query.decode() if isinstance(query, bytes) else query
        self.executed.append(text)
        self.on_execute(text)
        return []  # schema_migrations is empty


def connecting(monkeypatch: pytest.MonkeyPatch, *connections: Connection | Exception) -> list[dict[str, Any]]:
    """psycopg.connect answers with `connections` in turn (an exception is raised); returns the kwargs seen."""
    queue, seen = list(connections), []

    def connect(url: str, **kwargs: Any) -> Connection:
        seen.append(kwargs)
        answer = queue.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(migrate_module.psycopg, "connect", connect)
    return seen


def test_the_session_bounds_every_statement_and_lock_wait_before_it_takes_the_lock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    conn = Connection()
    seen = connecting(monkeypatch, conn)
    assert migrate("postgresql://db/x", statement_timeout_s=30, lock_timeout_s=10) == NAMES
    assert seen[0]["connect_timeout"] == 5
    assert conn.executed[:3] == ["SET statement_timeout = 30000", "SET lock_timeout = 10000",
                                 "SELECT pg_advisory_lock(%s)"]
    assert conn.executed[-1] == "SELECT pg_advisory_unlock(%s)"


def test_a_database_that_stops_answering_mid_migration_ends_the_process_with_the_watchdog_code(
        monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    exits: list[int] = []

    class Exited(Exception):
        pass

    def exit_process(code: int) -> None:
        exits.append(code)
        raise Exited  # os._exit never returns; unwind the "blocked" call instead

    watchdog = Watchdog("projection-test", clock=lambda: now[0], exit_process=exit_process)

    def stall_in_a_migration(text: str) -> None:
        if "CREATE TABLE" in text and "schema_migrations" not in text and not exits:
            now[0] += 61.0  # the server is stopped: the call has not returned after a minute
            watchdog.check()  # what the watchdog's thread does every second meanwhile

    connecting(monkeypatch, Connection(stall_in_a_migration))
    with capture_logs() as logs, pytest.raises(Exited):
        migrate_when_available("postgresql://db/x", threading.Event(), watchdog=watchdog, call_deadline_s=60.0)
    assert exits == [EXIT_STUCK]
    (stuck,) = [line for line in logs if line["event"] == "watchdog_call_stuck"]
    assert (stuck["call"], stuck["deadline_s"]) == (f"migrate {NAMES[0]}", 60.0)


def test_a_statement_or_lock_the_server_gave_up_on_is_waited_out_then_migrated(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def cancel_migrations(text: str) -> None:
        if "CREATE TABLE" in text and "schema_migrations" not in text:
            raise psycopg.errors.QueryCanceled("canceling statement due to statement timeout")

    def lock_busy(text: str) -> None:
        if "pg_advisory_lock" in text:
            raise psycopg.errors.LockNotAvailable("canceling statement due to lock timeout")

    connecting(monkeypatch, psycopg.OperationalError("connection refused"), Connection(lock_busy),
               Connection(cancel_migrations), Connection())
    with capture_logs() as logs:
        applied = migrate_when_available("postgresql://db/x", threading.Event(), pause_max_s=0.01)
    assert applied == NAMES
    waits = [line["error"] for line in logs if line["event"] == "waiting_for_database"]
    assert len(waits) == 3
    assert "OperationalError" in waits[0] and "LockNotAvailable" in waits[1] and "QueryCanceled" in waits[2]


def test_a_migration_the_database_refuses_is_a_migration_error_naming_the_file_and_no_wait(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse_first_file(text: str) -> None:
        if "CREATE TABLE" in text and "schema_migrations" not in text:
            raise psycopg.errors.SyntaxError('syntax error at or near "CREAT"')

    conn = Connection(refuse_first_file)
    connecting(monkeypatch, conn)
    with pytest.raises(MigrationError, match=f"migration {NAMES[0]}: SyntaxError") as raised:
        migrate_when_available("postgresql://db/x", threading.Event(), pause_max_s=0.01)
    assert isinstance(raised.value.__cause__, psycopg.errors.SyntaxError)
    assert conn.executed[-1] == "SELECT pg_advisory_unlock(%s)"  # the lock is given back


def test_a_database_that_is_down_is_a_database_unavailable_error_not_a_raw_psycopg_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    connecting(monkeypatch, psycopg.OperationalError("connection refused"), psycopg.ProgrammingError("invalid dsn"))
    with pytest.raises(DatabaseUnavailableError, match="connecting: OperationalError"):
        migrate("postgresql://db/x")
    with pytest.raises(MigrationError, match="connecting: ProgrammingError: invalid dsn"):
        migrate("not a url")
