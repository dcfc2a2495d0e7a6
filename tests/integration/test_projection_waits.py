"""A projection waits for its database instead of failing: started while PostgreSQL is not running, it
logs each wait and stays up, then migrates and applies once a server comes; and its start-up migration
gives up a lock wait within `lock_timeout` instead of blocking forever (docs/operations.md, "Faults")."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import psycopg
import pytest

from ops.stack import PostgresNode
from ops.supervisor import free_port
from payments.runtime.topics import Topics
from projections import migrate as migrate_module
from projections.errors import DatabaseUnavailableError
from projections.migrate import available, migrate
from tests.support import produce, service, setup_topics, wait_for
from tests.unit.projections.events import initiated, reserved, settled

pytestmark = pytest.mark.integration

WAITING = '"event": "waiting_for_database"'


def count(database_url: str, query: str) -> int:
    try:
        with psycopg.connect(database_url, connect_timeout=5) as conn:
            row = conn.execute(query).fetchone()
    except psycopg.Error:  # not migrated yet
        return 0
    assert row is not None
    return int(row[0])


def test_a_projection_started_before_its_database_waits_then_migrates_and_applies(
        kafka_bootstrap: str, topics: Topics, stack_dir: Path, tmp_path: Path) -> None:
    setup_topics(kafka_bootstrap, topics)
    payments = [str(uuid.uuid4()) for _ in range(20)]
    events = [event for p in payments for event in (initiated(p), reserved(p), settled(p, seq=3))]
    produce(kafka_bootstrap, topics.events, events, key_of=lambda message: message.payment_id)
    # A server of this test's own, on a port nobody listens on yet: "PostgreSQL is down".
    node = PostgresNode(stack_dir / f"late-postgres-{uuid.uuid4().hex[:8]}", port=free_port())
    projection = service(["projection", "payment_status"], bootstrap=kafka_bootstrap, database_url=node.url,
                         topics=topics, log_dir=tmp_path).start()
    try:
        wait_for(lambda: projection.log_tail(1_000_000).count(WAITING) >= 3 or not projection.alive(), 60,
                 "three waits for the database")
        assert projection.alive(), projection.log_tail()
        waited = projection.log_tail(1_000_000).count(WAITING)

        node.start()
        wait_for(lambda: count(node.url, "SELECT count(*) FROM payment_status WHERE status = 'SETTLED'")
                 == len(payments) or not projection.alive(), 120, f"{len(payments)} settled payments in payment_status")
        assert projection.alive(), projection.log_tail()
        assert count(node.url, "SELECT count(*) FROM schema_migrations") == len(available())
        assert count(node.url, "SELECT count(*) FROM payment_status") == len(payments)
        log = projection.log_tail(1_000_000)
        assert log.count(WAITING) >= waited and '"event": "database_available"' in log
    finally:
        exit_code = projection.stop()
        node.purge()
    assert exit_code == 0, projection.log_tail()


def test_a_migration_behind_another_migrators_lock_gives_up_within_its_lock_timeout(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (migrate_module._LOCK_ID,))  # a migrator that never ends
        started = time.monotonic()
        with pytest.raises(DatabaseUnavailableError, match="LockNotAvailable"):
            migrate(database_url, lock_timeout_s=0.5)
        assert time.monotonic() - started < 10
        holder.execute("SELECT pg_advisory_unlock(%s)", (migrate_module._LOCK_ID,))
    assert migrate(database_url, lock_timeout_s=0.5) == []  # up to date, and the lock is free again
