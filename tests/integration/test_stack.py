"""The native launcher: `up` is idempotent, `up` after a crash recovers the data, `down` stops both.

Where and as whom PostgreSQL starts, and that it changes no mode it did not create, is in
test_stack_permissions.py: those tests need no Java."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from ops.stack import LocalStack
from ops.stack.process import ProcessHandle
from ops.supervisor import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("java") is None or shutil.which("mvn") is None,
                       reason="the native launcher needs Java and Maven (use testcontainers otherwise)"),
]


@pytest.fixture
def stack() -> Iterator[LocalStack]:
    home = Path(tempfile.mkdtemp(prefix="payments-stack-test-"))
    local = LocalStack(home, kafka_port=free_port(), postgres_port=free_port())
    yield local
    local.purge()
    shutil.rmtree(home, ignore_errors=True)


def _postgres_pid(stack: LocalStack) -> int:
    return int((stack.postgres.data_dir / "postmaster.pid").read_text().splitlines()[0])


def test_up_is_idempotent_recovers_after_a_crash_and_down_stops_everything(stack: LocalStack) -> None:
    stack.up()
    kafka_pid = ProcessHandle(stack.kafka.home / "kafka.pid", "kafka.Kafka").alive()
    assert kafka_pid is not None
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE survivor (id int)")
        conn.execute("INSERT INTO survivor VALUES (42)")

    stack.up()  # idempotent: the same processes keep running
    assert ProcessHandle(stack.kafka.home / "kafka.pid", "kafka.Kafka").alive() == kafka_pid
    status = stack.status()  # what `payments stack status` prints: state, address, process id
    assert status["kafka"] == f"running {stack.bootstrap_servers} pid {kafka_pid.pid}"
    assert status["postgres"].startswith(f"running {stack.database_url} pid {_postgres_pid(stack)}")

    kafka_pid.kill()  # a crash of both servers
    psutil.Process(_postgres_pid(stack)).kill()
    kafka_pid.wait(10)
    stack.up()
    assert stack.kafka.is_running() and stack.postgres.is_running()
    with psycopg.connect(stack.database_url) as conn:
        assert conn.execute("SELECT id FROM survivor").fetchall() == [(42,)]

    stack.down()
    assert not stack.kafka.is_running()
    assert not stack.postgres.is_running()
