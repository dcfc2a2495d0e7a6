"""A pipeline of service processes on its own topics (and database), and how tests talk to it."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from ops.supervisor import ServiceProcess, free_port, start_all
from payments.contracts.messages import Message
from payments.runtime.topics import Topics
from projections.migrate import migrate
from tests.support import decode_all, partner_env, produce, read_all, service, setup_topics, wait_for

FAST_ENV = {
    "PAYMENTS_SAGA_TIME_SCALE": "0.05",
    "PAYMENTS_PARTNER_DECLINE_RATE": "0", "PAYMENTS_PARTNER_ERROR_RATE": "0", "PAYMENTS_PARTNER_TIMEOUT_RATE": "0",
    "PAYMENTS_PARTNER_LATENCY_MS": "1",
    "PAYMENTS_BATCH_MAX": "50",
}


@dataclass
class Pipeline:
    bootstrap: str
    topics: Topics
    services: list[ServiceProcess]
    database_url: str

    def send(self, *messages: Message) -> None:
        produce(self.bootstrap, self.topics.commands, messages, key_of=lambda m: m.payment_id)

    def events(self, payment_id: str) -> list[Message]:
        return [m for m in decode_all(read_all(self.bootstrap, self.topics.events), skip_undecodable=True)
                if m.payment_id == payment_id]

    def wait_events(self, payment_id: str, until: type[Message] | tuple[type[Message], ...],
                    timeout_s: float = 60) -> list[Message]:
        found: list[Message] = []

        def reached() -> bool:
            nonlocal found
            found = self.events(payment_id)
            return any(isinstance(e, until) for e in found)

        try:
            wait_for(reached, timeout_s, f"{until} for {payment_id}")
        except AssertionError:
            raise AssertionError(f"events so far: {[type(e).__name__ for e in found]}\n{self.logs()}") from None
        return found

    def topic(self, base: str) -> list[Message]:
        return decode_all(read_all(self.bootstrap, self.topics.name(base)), skip_undecodable=True)

    def logs(self, chars: int = 1500) -> str:
        return "\n".join(f"--- {s.args}\n{s.log_tail(chars)}" for s in self.services)


def start_pipeline(kafka_bootstrap: str, database_url: str, processes: list[list[str]],
                   **overrides: str) -> Iterator[Pipeline]:
    """Start `processes` (`payments run` arguments) on fresh topics; stop them cleanly afterwards."""
    topics = Topics(prefix=f"t{uuid.uuid4().hex[:10]}.")
    setup_topics(kafka_bootstrap, topics)
    log_dir = Path(tempfile.mkdtemp(prefix="pipeline-"))
    env = {**FAST_ENV, **partner_env(log_dir), "PAYMENTS_STATE_DIR": str(log_dir / "state"), **overrides}
    # Each with a health port: /metrics of every process for the observability tests.
    services = start_all([service(args, bootstrap=kafka_bootstrap, database_url=database_url, topics=topics,
                                  log_dir=log_dir, extra_env=env, health_port=free_port()) for args in processes])
    yield Pipeline(kafka_bootstrap, topics, services, database_url)
    for process in services:
        assert process.stop() == 0, process.log_tail()


def fresh_database(server_url: str, prefix: str) -> Iterator[str]:
    """A new, migrated database on the server, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = server_url.rsplit("/", 1)[0] + f"/{name}"
    migrate(url)
    yield url
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
