"""Helpers shared by integration and end-to-end tests: real clients, deadlines, service processes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from confluent_kafka import Producer

from ops.registry import topology
from ops.supervisor import ServiceProcess, free_port
from payments.contracts.codec import Serde, SingleObjectSerde
from payments.contracts.envelope import build_headers
from payments.contracts.errors import ContractError
from payments.contracts.messages import InitiatePayment, Message
from payments.money import Money
from payments.runtime.reader import committed_records, partitions_of
from payments.runtime.records import headers_of
from payments.runtime.topics import Topics, ensure_topics

T = TypeVar("T")
PARTITIONS = 6  # the default of PAYMENTS_PARTITIONS, which the services under test use
# What an upstream command passes through before it is a payment: the intake's two hops, then the saga.
COMMAND_PATH = ["intake", "gate", "idempotency", "orchestrator"]


def wait_for(condition: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.2) -> T:
    """Poll until `condition()` is truthy and return it; fail with `what` after the deadline."""
    deadline = time.monotonic() + timeout_s
    last: T = condition()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")
        time.sleep(interval_s)
        last = condition()
    return last


def serde() -> Serde:
    return SingleObjectSerde()


def make_initiate(amount_minor: int = 1250, currency: str = "EUR", **overrides: object) -> InitiatePayment:
    payment_id = str(uuid.uuid4())
    fields: dict[str, object] = {
        "command_id": str(uuid.uuid4()), "idempotency_key": f"idem-{payment_id}", "payment_id": payment_id,
        "payer_account": "acc-payer-1", "payee_account": "acc-payee-1",
        "amount": Money(amount_minor=amount_minor, currency=currency), "partner": "simbank",
        "reference": "invoice 42", "requested_at": datetime.now(UTC).replace(microsecond=0),
    }
    fields.update(overrides)
    return InitiatePayment.model_validate(fields)


def setup_topics(bootstrap: str, topics: Topics) -> None:
    ensure_topics(bootstrap, topology(topics, PARTITIONS))


def produce(bootstrap: str, topic: str, messages: Iterable[Message], key_of: Callable[[Message], str],
            codec: Serde | None = None, source: str = "tests") -> None:
    codec = codec or serde()
    producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random", "enable.idempotence": True})
    for message in messages:
        producer.produce(topic, key=key_of(message).encode(), value=codec.encode(message),
                         headers=build_headers(message, source=source, traceparent=None))
    assert producer.flush(30) == 0, "records left undelivered"


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    partition: int
    offset: int
    timestamp_ms: int = 0


def read_all(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[Record]:
    """Every committed record of `topic`, read_committed, from the beginning to the current end."""
    records = committed_records(bootstrap, partitions_of(bootstrap, [topic]), timeout_s=timeout_s)
    return [Record(r.key(), r.value(), headers_of(r), r.partition() or 0, r.offset() or 0, r.timestamp()[1])
            for r in records]


def wait_for_records(bootstrap: str, topic: str, count: int, timeout_s: float = 60.0) -> list[Record]:
    """Wait until `topic` holds at least `count` committed records; return them all."""
    found: list[Record] = []

    def enough() -> bool:
        nonlocal found
        found = read_all(bootstrap, topic)
        return len(found) >= count

    wait_for(enough, timeout_s, f"{count} records on {topic}")
    return found


def decode_all(records: list[Record], codec: Serde | None = None, *, skip_undecodable: bool = False) -> list[Message]:
    """The records' messages; with `skip_undecodable`, records that are not ours (a test's garbage) are left out."""
    codec = codec or serde()
    messages = []
    for record in records:
        if record.value is None:
            continue
        try:
            messages.append(codec.decode(record.value))
        except ContractError:
            if not skip_undecodable:
                raise
    return messages


def partner_env(log_dir: Path) -> dict[str, str]:
    """A simulated partner of the test's own: its port and data directory (start `partner-sim` with it)."""
    return {"PAYMENTS_PARTNER_SIM_PORT": str(free_port()), "PAYMENTS_PARTNER_DATA_DIR": str(log_dir / "partner")}


def service(args: list[str], *, bootstrap: str, database_url: str, topics: Topics, log_dir: Path,
            instance_id: str = "0", extra_env: dict[str, str] | None = None, health_port: int = 0) -> ServiceProcess:
    """A service process wired to the test's broker, database and topic prefix (not started); with a
    `health_port`, it serves /healthz, /readyz and /metrics there."""
    env = {"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "DATABASE_URL": database_url, "PAYMENTS_TOPIC_PREFIX": topics.prefix,
           "PAYMENTS_STATE_DIR": str(log_dir / "state"), **(extra_env or {})}
    return ServiceProcess(args, log_dir=log_dir, env=env, instance_id=instance_id, health_port=health_port)
