"""Session-scoped real Kafka and PostgreSQL for integration and end-to-end tests.

Each is chosen in order: the environment (KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL) -> testcontainers
when a Docker engine answers -> the project's native launcher on free ports in a temporary directory.
Tests isolate themselves with a random topic prefix and a fresh database each; nothing is mocked.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ops.supervisor import free_port
from payments.runtime.topics import Topics


def _docker_answers() -> bool:
    if os.environ.get("PAYMENTS_TESTS_NO_DOCKER"):
        return False
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:  # no client library, no socket, no engine: all mean "no Docker here"
        return False
    return True


@pytest.fixture(scope="session")
def stack_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: pytest deletes all but its three newest base directories, and a
    # concurrent pytest run on the same machine would delete a running server's data directory.
    path = Path(tempfile.mkdtemp(prefix="payments-test-stack-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def kafka_bootstrap(stack_dir: Path) -> Iterator[str]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    elif _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server()
    else:
        from ops.stack import KafkaNode

        node = KafkaNode(stack_dir / "kafka", port=free_port(), controller_port=free_port())
        node.start()
        try:
            yield node.bootstrap_servers
        finally:
            node.stop()


@pytest.fixture(scope="session")
def postgres_server_url(stack_dir: Path) -> Iterator[str]:
    """A URL of a maintenance database on a real server; tests get their own database from it."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
    elif _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:17", driver=None) as container:
            yield container.get_connection_url()
    else:
        from ops.stack import PostgresNode

        node = PostgresNode(stack_dir / "postgres", port=free_port())
        node.start()
        try:
            yield node.url
        finally:
            node.purge()  # as root the server's files may live outside stack_dir (ops.stack.postgres)


@pytest.fixture
def topics() -> Topics:
    return Topics(prefix=f"t{uuid.uuid4().hex[:10]}.")


@pytest.fixture
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh, migrated database for one test, dropped afterwards."""
    from projections.migrate import migrate

    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = postgres_server_url.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)
    yield url
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def risk_training_sample() -> tuple[list[Any], dict[str, str]]:
    """Training examples of seeded synthetic traffic (400 customers, 20 days, 8 % fraud) and their labels."""
    from consumers.risk.synthetic import generate
    from consumers.risk.training import examples_of

    traffic = generate(seed=5, customers=400, days=20, start=datetime(2026, 1, 1, tzinfo=UTC), fraud_share=0.08)
    return examples_of(traffic.attempts, traffic.labels, traffic.failures), dict(traffic.labels)


@pytest.fixture(scope="session")
def risk_model(risk_training_sample: tuple[list[Any], dict[str, str]],
               tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A small gradient-boosted model trained once per session on `risk_training_sample`: its models directory
    and version (LightGBM in process, a few seconds). Tests that change its files copy them first."""
    from consumers.risk.training import train

    out = tmp_path_factory.mktemp("risk-models")
    return out, train(risk_training_sample[0], out, seed=5).version
