"""The HTTP intake's PostgreSQL: one async pool, and the translation of an outage into `StoreUnavailable`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout


class StoreUnavailable(Exception):
    """PostgreSQL did not answer in time, or is down: nothing was decided; ask again later."""


def make_pool(database_url: str, *, size_max: int, timeout_s: float) -> AsyncConnectionPool:
    """Not opened: the application's lifespan opens it without waiting, so the service starts (and answers
    503) while the database is down. Autocommit: every statement of the intake stands on its own."""
    statement_timeout_ms = int(timeout_s * 1000)
    return AsyncConnectionPool(database_url, min_size=1, max_size=size_max, timeout=timeout_s, open=False,
                               kwargs={"autocommit": True, "connect_timeout": max(1, int(timeout_s)),
                                       "options": f"-c statement_timeout={statement_timeout_ms}"})


@contextlib.asynccontextmanager
async def connection(pool: AsyncConnectionPool) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A pooled connection. The database down, restarting or too slow is StoreUnavailable; any other
    psycopg error is a bug here (a statement the schema refuses) and propagates as one."""
    try:
        async with pool.connection() as conn:
            yield conn
    except (PoolTimeout, psycopg.OperationalError, psycopg.InterfaceError) as error:
        raise StoreUnavailable(str(error) or type(error).__name__) from error
