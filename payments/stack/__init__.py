"""The local single-node stack: Apache Kafka (KRaft) and PostgreSQL, run natively on this machine.

`KAFKA_BOOTSTRAP_SERVERS` and `DATABASE_URL` point the services at external servers instead; the
stack then leaves that component alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from payments.stack.kafka import KafkaNode, fetch_kafka
from payments.stack.postgres import PostgresNode
from payments.stack.process import StackError

__all__ = ["KafkaNode", "LocalStack", "PostgresNode", "StackError", "fetch_kafka", "stack_home"]


def stack_home() -> Path:
    """Data directories of the local stack (gitignored `.stack/` in the working directory by default)."""
    return Path(os.environ.get("PAYMENTS_STACK_DIR") or Path.cwd() / ".stack").resolve()


@dataclass(frozen=True)
class LocalStack:
    home: Path
    kafka_port: int = int(os.environ.get("PAYMENTS_KAFKA_PORT", "19092"))
    postgres_port: int = int(os.environ.get("PAYMENTS_POSTGRES_PORT", "15432"))

    @property
    def kafka(self) -> KafkaNode:
        return KafkaNode(self.home / "kafka", port=self.kafka_port, controller_port=self.kafka_port + 1)

    @property
    def postgres(self) -> PostgresNode:
        return PostgresNode(self.home / "postgres", port=self.postgres_port)

    @property
    def external_kafka(self) -> str | None:
        return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None

    @property
    def external_database(self) -> str | None:
        return os.environ.get("DATABASE_URL") or None

    @property
    def bootstrap_servers(self) -> str:
        return self.external_kafka or self.kafka.bootstrap_servers

    @property
    def database_url(self) -> str:
        return self.external_database or self.postgres.url

    def up(self) -> None:
        """Start whatever is not external and not already running. Idempotent."""
        if self.external_kafka is None:
            self.kafka.start()
        if self.external_database is None:
            self.postgres.start()

    def down(self) -> None:
        if self.external_kafka is None:
            self.kafka.stop()
        if self.external_database is None:
            self.postgres.stop()

    def status(self) -> dict[str, str]:
        kafka = "external" if self.external_kafka else ("running" if self.kafka.is_running() else "stopped")
        postgres = "external" if self.external_database else (
            "running" if self.postgres.is_running() else "stopped")
        return {"kafka": f"{kafka} {self.bootstrap_servers}", "postgres": f"{postgres} {self.database_url}"}
