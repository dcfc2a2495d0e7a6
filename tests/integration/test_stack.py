"""The native launcher: `up` is idempotent, `up` after a crash recovers the data, `down` stops both."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest

from ops.stack import LocalStack
from ops.stack.process import ProcessHandle

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("java") is None or shutil.which("mvn") is None,
                       reason="the native launcher needs Java and Maven (use testcontainers otherwise)"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    home = Path(tempfile.mkdtemp(prefix="payments-stack-test-"))
    local = LocalStack(home, kafka_port=_free_port(), postgres_port=_free_port())
    yield local
    local.down()
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
