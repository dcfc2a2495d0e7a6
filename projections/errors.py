"""The root of every error the projections raise on purpose, and the database errors they map to.

psycopg's errors are translated here, at the adapter edge: a lost or refused connection, a server
restarting, a statement cancelled by its own timeout or a lock not had in time is
`DatabaseUnavailableError` (transient: the transaction rolled back, so asking again is safe); any
other database error is a bug or a poison record and becomes `ProjectionApplyError`, which the runner
isolates to the record (dead letter) without stopping. A migration that cannot be applied is a
`MigrationError`. No psycopg error leaves the projections' modules untranslated on purpose; the
CLI still catches `psycopg.Error` as a backstop.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import psycopg


class ProjectionError(Exception):
    """Root of the projections' errors."""


class DatabaseUnavailableError(ProjectionError):
    """PostgreSQL cannot be reached, dropped the connection (restart, failover, network), or did not
    finish a statement or get a lock within the session's timeouts: asking again later may work."""


class ProjectionApplyError(ProjectionError):
    """The database refused a statement for a reason a retry cannot fix (a constraint, a bug)."""


class MigrationError(ProjectionError):
    """A migration file is missing, misnamed, or failed to apply."""


def translate(error: psycopg.Error, what: str | None = None) -> ProjectionError:
    """The projection error a psycopg error stands for; `what` (the operation) prefixes its message.

    `OperationalError` covers `QueryCanceled` (statement_timeout) and `LockNotAvailable`
    (lock_timeout) too: the server gave up waiting, nothing was changed, so they are transient.
    """
    detail = f"{type(error).__name__}: {error}".strip()
    if what:
        detail = f"{what}: {detail}"
    if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        return DatabaseUnavailableError(detail)
    return ProjectionApplyError(detail)


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Raise a psycopg error from inside as the projection error it stands for (chained to it)."""
    try:
        yield
    except psycopg.Error as error:
        raise translate(error, what) from error
