"""Topic names under the deployment's prefix, their declared shape, and their creation.

Topics are created by the project, never by accident (the broker's auto-create is off). Every
payment-keyed topic has the same partition count and all our producers use the murmur2
partitioner (the Java client's default), so one payment id maps to the same partition number on
every topic: one instance owns all of a payment's traffic (co-partitioning).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from payments.contracts import topics as base
from payments.runtime.config import TOPIC_MESSAGE_BYTES_MAX
from payments.runtime.connection import Kafka, client_config
from payments.runtime.errors import KafkaCredentialsError, TopologyError
from payments.runtime.retry import is_transient, retry_kafka

CREATE_TIMEOUT_S = 30
# A changelog is compacted so a restore reads about one record per live key (docs/architecture.md §3):
# segments roll hourly or at 64 MiB (only closed segments are cleaned; Kafka's 1 GiB / 7 day defaults
# would leave a young changelog uncompacted), cleaning starts at 10% dirty, and a tombstone stays a day,
# so a reader that is behind by less than that still sees the deletion.
COMPACTED_CONFIG = {
    "cleanup.policy": "compact",
    "segment.ms": str(3_600_000),
    "segment.bytes": str(64 * 1024 * 1024),
    "min.cleanable.dirty.ratio": "0.1",
    "delete.retention.ms": str(86_400_000),
}
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Topics:
    """Topic and consumer group names, optionally under a prefix (tests and the demo isolate runs with one)."""

    prefix: str = ""

    def name(self, base_name: str) -> str:
        return f"{self.prefix}{base_name}"

    def base(self, name: str) -> str:
        """The base name of a topic named by `name` (the prefix taken off): a bounded metric label."""
        return name[len(self.prefix):] if self.prefix and name.startswith(self.prefix) else name

    @property
    def commands(self) -> str:
        return self.name(base.COMMANDS)

    @property
    def events(self) -> str:
        return self.name(base.EVENTS)

    @property
    def settlements(self) -> str:
        return self.name(base.SETTLEMENTS)

    @property
    def dlq(self) -> str:
        return self.name(base.DLQ)

    def changelog(self, service: str) -> str:
        return self.name(base.changelog(service))

    def group(self, service: str) -> str:
        return f"{self.prefix}{service}"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False

    def new_topic(self) -> NewTopic:
        config = dict(COMPACTED_CONFIG) if self.compacted else {"retention.ms": "-1"}
        config["max.message.bytes"] = str(TOPIC_MESSAGE_BYTES_MAX)
        return NewTopic(self.name, num_partitions=self.partitions, replication_factor=-1, config=config)


def ensure_topics(kafka: Kafka, specs: list[TopicSpec]) -> None:
    """Create missing topics; fail loudly if an existing one has another partition count.

    When every topic exists, no CreateTopics request is sent: a principal without CREATE (ACLs,
    docs/security.md) starts on topics an admin made. A topic the principal may not DESCRIBE is not
    in its metadata, so it looks missing; creating it is then refused for authorization.

    A partition count mismatch would silently break co-partitioning, so it is an error (TopologyError),
    not a warning. Listing and creating are asked again through transient errors, with a bound
    (payments.runtime.retry); past it, or when Kafka refuses a topic, KafkaCallError.
    """
    admin = AdminClient(client_config(kafka))
    existing = retry_kafka(lambda: admin.list_topics(timeout=CREATE_TIMEOUT_S).topics, "list_topics")
    missing = [spec for spec in specs if spec.name not in existing]
    for spec in specs:
        if spec.name in existing and len(existing[spec.name].partitions) != spec.partitions:
            raise TopologyError(f"topic {spec.name} has {len(existing[spec.name].partitions)} partitions, "
                               f"expected {spec.partitions}: co-partitioning requires equal counts")
    if not missing:
        return
    pending = {spec.name: spec for spec in missing}

    def create_pending() -> None:
        """One round: create every topic still pending; those made (or found made) leave `pending`."""
        futures = admin.create_topics([spec.new_topic() for spec in pending.values()],
                                      operation_timeout=CREATE_TIMEOUT_S)
        failed: list[KafkaException] = []
        for name, future in futures.items():
            try:
                future.result(timeout=CREATE_TIMEOUT_S)
            except TimeoutError:  # no answer: the topic may or may not exist; the next round finds out
                failed.append(KafkaException(KafkaError(KafkaError._TIMED_OUT, f"no answer creating {name}")))
                continue
            except KafkaException as error:
                if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # else a concurrent instance won
                    failed.append(error)
                    continue
            del pending[name]
        if failed:
            # A refusal (authorization, a policy, a replication factor) first: it must not be retried.
            raise next((e for e in failed if not is_transient(e.args[0])), failed[0])

    # Transient errors (a controller moving, a request timing out) are asked again with a bound;
    # past it, or for a refusal, KafkaCallError (gave_up_transient tells which).
    retry_kafka(create_pending, f"create_topics {', '.join(sorted(pending))}")


CREDENTIAL_ERRORS = (KafkaError._AUTHENTICATION, KafkaError._SSL)


def wait_for_kafka(kafka: Kafka, stop: threading.Event, *, attempt_timeout_s: float = 5.0,
                   pause_s: float = 2.0, refusals_max: int = 3) -> bool:
    """Block until the cluster answers a metadata request, logging each wait; False if `stop` came first.

    A service started while Kafka is down (or restarting) waits for it instead of exiting. One whose
    credentials the brokers refuse (SASL authentication, the TLS handshake) `refusals_max` attempts in a
    row raises KafkaCredentialsError instead: a wrong password or certificate is not mended by waiting.
    """
    reported: list[KafkaError] = []
    admin = AdminClient(client_config(kafka, {"error_cb": reported.append}))
    waited = refused = 0
    while not stop.is_set():
        try:
            admin.list_topics(timeout=attempt_timeout_s)
            if waited:
                log.info("kafka_available", bootstrap_servers=str(kafka), attempts=waited)
            return True
        except KafkaException as error:
            waited += 1
            reported.clear()
            admin.poll(0)  # serves error_cb: why the connections failed
            credentials = [e for e in reported if e.code() in CREDENTIAL_ERRORS]
            refused = refused + 1 if credentials else 0
            if refused >= refusals_max:
                raise KafkaCredentialsError(
                    f"the brokers at {kafka} refuse this client's credentials ({credentials[-1].str()}): check "
                    "KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD and the client certificate (docs/security.md)") from None
            log.warning("waiting_for_kafka", bootstrap_servers=str(kafka), attempt=waited,
                        error=(credentials[-1] if credentials else error.args[0]).name())
            stop.wait(pause_s)
    return False
