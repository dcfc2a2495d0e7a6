"""The root of every error the projections raise on purpose, and the database errors they map to.

psycopg's errors are translated here, at the adapter edge: a lost or refused connection is
`DatabaseUnavailableError` (transient: the batch and its offsets roll back together, so retrying is
safe); any other database error while applying a batch is a bug or a poison record and becomes
`ProjectionApplyError`, which the runner isolates to the record (dead letter) without stopping.
"""

from __future__ import annotations

import psycopg


class ProjectionError(Exception):
    """Root of the projections' errors."""


class DatabaseUnavailableError(ProjectionError):
    """PostgreSQL cannot be reached or dropped the connection (restart, failover, network)."""


class ProjectionApplyError(ProjectionError):
    """The database refused a batch for a reason a retry cannot fix (a constraint, a bug)."""


class MigrationError(ProjectionError):
    """A migration file is missing, misnamed, or failed to apply."""


def translate(error: psycopg.Error) -> ProjectionError:
    """The projection error a psycopg error stands for."""
    if isinstance(error, psycopg.OperationalError | psycopg.InterfaceError):
        return DatabaseUnavailableError(f"{type(error).__name__}: {error}")
    return ProjectionApplyError(f"{type(error).__name__}: {error}")
