"""The local single-node stack: Apache Kafka (KRaft) and PostgreSQL, run natively on this machine.

For development, tests and the demo only: production services never import this package
(`make lint` checks that `ops.launch` does not). `KAFKA_BOOTSTRAP_SERVERS` and `DATABASE_URL`
point everything at external servers instead; the stack then leaves that component alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ops.errors import StackError
from ops.settings import Settings
from ops.stack.kafka import KafkaCluster, KafkaNode, fetch_kafka
from ops.stack.postgres import PostgresNode

__all__ = ["KafkaCluster", "KafkaNode", "LocalStack", "PostgresNode", "StackError", "fetch_kafka"]


@dataclass(frozen=True)
class LocalStack:
    home: Path
    kafka_port: int = 19092
    postgres_port: int = 15432
    jar_cache: Path | None = None
    external_kafka: str | None = None
    external_database: str | None = None

    @classmethod
    def of(cls, settings: Settings) -> LocalStack:
        return cls(settings.stack_home, kafka_port=settings.kafka_port, postgres_port=settings.postgres_port,
                   jar_cache=settings.jar_cache, external_kafka=settings.kafka_bootstrap_servers,
                   external_database=settings.database_url)

    @property
    def kafka(self) -> KafkaNode:
        return KafkaNode(self.home / "kafka", port=self.kafka_port, controller_port=self.kafka_port + 1,
                         jar_cache=self.jar_cache)

    @property
    def postgres(self) -> PostgresNode:
        return PostgresNode(self.home / "postgres", port=self.postgres_port)

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

    def purge(self) -> None:
        """Stop both and delete all local data, including a root-run PostgreSQL's server home."""
        self.down()
        if self.external_database is None:
            self.postgres.purge()

    def status(self) -> dict[str, str]:
        """One line per component: running/stopped/external, its address, and its process id."""
        lines = {}
        for name, external, node, address in (("kafka", self.external_kafka, self.kafka, self.bootstrap_servers),
                                              ("postgres", self.external_database, self.postgres, self.database_url)):
            if external is not None:
                lines[name] = f"external {address}"
                continue
            pid = node.pid()
            lines[name] = f"running {address} pid {pid}" if pid is not None else f"stopped {address}"
        if self.external_database is None and self.postgres.server_home != self.postgres.home:
            lines["postgres"] += f" (data in {self.postgres.server_home})"
        return lines
