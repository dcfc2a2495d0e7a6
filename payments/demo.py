"""`payments demo`: the main job on the embedded default, start to finish.

1. bring the local stack up (Kafka + PostgreSQL) unless KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL say otherwise;
2. start every service as its own process, on topics under a fresh prefix so runs never mix;
3. publish a batch of sample payments (several currencies, 0/2/3 decimal places);
4. wait, with a deadline, until the read model has an outcome for each, and print it;
5. stop the services (SIGTERM, clean group leave) and the stack it started.
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from confluent_kafka import Producer

from payments.config import Settings
from payments.contracts.codec import serde_from_env
from payments.contracts.envelope import build_headers
from payments.contracts.messages import InitiatePayment
from payments.money import Money
from payments.runtime.topics import Topics, ensure_topics
from payments.runtime.topology import all_topics
from payments.stack import LocalStack, stack_home
from payments.supervisor import ServiceProcess
from projections.migrate import migrate

SERVICES: list[list[str]] = [["orchestrator"], ["projection", "payment_status"]]
WAIT_TIMEOUT_S = 120
SAMPLES = [
    ("acc-alice", "acc-bob", "12.50", "EUR"),
    ("acc-alice", "acc-carol", "1999.99", "EUR"),
    ("acc-dave", "acc-erin", "4300", "JPY"),
    ("acc-frank", "acc-grace", "12.345", "BHD"),
    ("acc-heidi", "acc-ivan", "250.00", "USD"),
    ("acc-judy", "acc-mallory", "75.10", "GBP"),
    ("acc-bob", "acc-alice", "0.99", "EUR"),
    ("acc-carol", "acc-dave", "100000", "KRW"),
]


def sample_commands() -> list[InitiatePayment]:
    now = datetime.now(UTC)
    commands = []
    for payer, payee, amount, currency in SAMPLES:
        payment_id = str(uuid.uuid4())
        commands.append(InitiatePayment(
            command_id=str(uuid.uuid4()), idempotency_key=f"demo-{payment_id}", payment_id=payment_id,
            payer_account=payer, payee_account=payee, amount=Money.parse(amount, currency), partner="simbank",
            reference="demo", requested_at=now))
    return commands


def publish(settings: Settings, topics: Topics, commands: list[InitiatePayment]) -> None:
    serde = serde_from_env()
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "partitioner": "murmur2_random",
                         "enable.idempotence": True})
    for command in commands:
        producer.produce(topics.commands, key=command.payment_id.encode(), value=serde.encode(command),
                         headers=list(build_headers(command, source="demo", traceparent=None)))
    left = producer.flush(30)
    if left:
        raise RuntimeError(f"{left} demo commands were not delivered")


def outcomes(database_url: str, payment_ids: list[str]) -> dict[str, tuple[str, str | None]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT payment_id, status, reason_code FROM payment_status WHERE payment_id = ANY(%s)",
                            (payment_ids,)).fetchall()
    return {str(pid): (str(status), reason) for pid, status, reason in rows}


def main() -> int:
    stack = LocalStack(stack_home())
    was_running = stack.kafka.is_running() and stack.postgres.is_running()
    print("starting the local stack (Kafka KRaft + PostgreSQL)...", flush=True)
    stack.up()
    settings = Settings.from_env()
    topics = Topics(prefix=f"demo-{datetime.now(UTC):%Y%m%d%H%M%S}.")
    ensure_topics(settings.bootstrap_servers, all_topics(topics))
    migrate(settings.database_url)
    log_dir = Path(tempfile.mkdtemp(prefix="payments-demo-"))
    env = {"KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "DATABASE_URL": settings.database_url,
           "PAYMENTS_TOPIC_PREFIX": topics.prefix}
    services = [ServiceProcess(args, log_dir=log_dir, env=env).start() for args in SERVICES]
    code = 1
    try:
        commands = sample_commands()
        started = time.monotonic()
        publish(settings, topics, commands)
        print(f"published {len(commands)} payments to {topics.commands}; waiting for outcomes...", flush=True)
        ids = [c.payment_id for c in commands]
        seen: dict[str, tuple[str, str | None]] = {}
        while time.monotonic() - started < WAIT_TIMEOUT_S and len(seen) < len(ids):
            time.sleep(0.5)
            seen = outcomes(settings.database_url, ids)
            dead = [s.args for s in services if not s.alive()]
            if dead:
                print(f"services exited early: {dead}; logs in {log_dir}", file=sys.stderr)
                break
        elapsed = time.monotonic() - started
        print(f"\n{'payment':38} {'amount':>16}  {'payer -> payee':24} status")
        for command in commands:
            status, reason = seen.get(command.payment_id, ("NO OUTCOME YET", None))
            route = f"{command.payer_account} -> {command.payee_account}"
            print(f"{command.payment_id:38} {command.amount.format():>16}  {route:24} {status}"
                  + (f" ({reason})" if reason else ""))
        print(f"\n{len(seen)}/{len(ids)} payments have an outcome after {elapsed:.1f}s; service logs: {log_dir}")
        code = 0 if len(seen) == len(ids) else 1
    finally:
        for service in services:
            service.stop()
        if not was_running:
            print("stopping the local stack...", flush=True)
            stack.down()
    return code
