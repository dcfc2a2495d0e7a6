"""Against a broker of its own that serves SASL_SSL only (mutual TLS and SCRAM-SHA-512, the standard
authorizer, no ACL means no access), with the ACLs of ops.acls applied by the admin:

- every service runs as its own process, user and client certificate, and a payment settles;
- a client without SASL, one without a client certificate, and one with a wrong password are refused;
- a service's user reaching for another's topic is denied, while on its own topic it succeeds;
- a service's user may not create topics, and says so.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer as KafkaConsumer
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from ops.acls import acl_bindings, apply, principal
from ops.dlq.kafka import read_letters
from ops.inspect import read_payment
from ops.registry import PROJECTIONS, SERVICES, topology
from ops.risk_models import record_change
from ops.settings import Settings
from ops.stack.kafka import KafkaNode, SecureListener
from ops.stack.tls import ClientCertificate, LocalAuthority
from ops.status import system_status
from ops.supervisor import ServiceProcess, free_port, start_all
from payments.contracts import topics as base
from payments.contracts.envelope import build_headers
from payments.contracts.events import PaymentSettled
from payments.runtime.connection import KafkaConnection, KafkaSecurity, client_config
from payments.runtime.errors import KafkaCallError, KafkaCredentialsError
from payments.runtime.reader import committed_records, end_offsets, partitions_of
from payments.runtime.retry import refused_authorization
from payments.runtime.topics import Topics, TopicSpec, ensure_topics, wait_for_kafka
from tests.e2e.pipeline import FAST_ENV
from tests.support import PARTITIONS, make_initiate, partner_env, serde, wait_for

pytestmark = pytest.mark.integration
USERS = [*SERVICES, *(f"projection-{name}" for name in PROJECTIONS), "http-intake", "operator"]
PROCESSES = [["partner-sim"], *([name] for name in SERVICES), ["projection", "payment_status"]]
REFUSED_WITHIN_S = 4.0  # a refusal comes at the first connection: well within this


@dataclass(frozen=True)
class SecureBroker:
    node: KafkaNode
    listener: SecureListener
    authority: LocalAuthority
    passwords: dict[str, str]  # SCRAM user -> password
    certificates: dict[str, ClientCertificate]  # SCRAM user -> its client certificate

    @property
    def admin(self) -> KafkaConnection:
        return self.node.admin_connection

    def user(self, name: str, *, password: str | None = None, certificate: bool = True) -> KafkaConnection:
        """A client connection as `payments-<name>` (by default with its own password and certificate)."""
        user = principal(name).removeprefix("User:")
        return self.listener.connection(self.node.bootstrap_servers, user, password or self.passwords[user],
                                        self.certificates[user] if certificate else None)

    def env(self, name: str) -> dict[str, str]:
        """The environment of a process running as `payments-<name>` (ops.settings)."""
        user = principal(name).removeprefix("User:")
        return {"KAFKA_BOOTSTRAP_SERVERS": self.node.bootstrap_servers, "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KAFKA_SASL_USERNAME": user,
                "KAFKA_SASL_PASSWORD": self.passwords[user], "KAFKA_SSL_CA_LOCATION": str(self.authority.ca),
                "KAFKA_SSL_CERTIFICATE_LOCATION": str(self.certificates[user].certificate),
                "KAFKA_SSL_KEY_LOCATION": str(self.certificates[user].key)}


@pytest.fixture(scope="module")
def broker() -> Iterator[SecureBroker]:
    home = Path(tempfile.mkdtemp(prefix="payments-secure-kafka-"))
    authority = LocalAuthority.create(home / "tls")
    users = [principal(name).removeprefix("User:") for name in USERS]
    passwords = {user: secrets.token_urlsafe(12) for user in ["admin", *users]}
    certificates = {user: authority.client(user) for user in ["admin", *users]}
    listener = SecureListener(keystore=authority.broker(), ca=authority.ca, admin_password=passwords["admin"],
                              admin_certificate=certificates["admin"],
                              users=tuple((user, passwords[user]) for user in users))
    node = KafkaNode(home / "kafka", port=free_port(), controller_port=free_port(), secure=listener)
    node.start()
    try:
        yield SecureBroker(node, listener, authority, passwords, certificates)
    finally:
        node.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def secured_topics(broker: SecureBroker) -> Topics:
    """The topology under a prefix of the module's, made by the admin, and the ACLs for it applied."""
    topics = Topics(prefix=f"s{uuid.uuid4().hex[:8]}.")
    ensure_topics(broker.admin, topology(topics, PARTITIONS))
    admin_settings = Settings.load({**broker.env("operator"), "KAFKA_SASL_USERNAME": "admin",
                                    "KAFKA_SASL_PASSWORD": broker.passwords["admin"],
                                    "KAFKA_SSL_CERTIFICATE_LOCATION": str(broker.certificates["admin"].certificate),
                                    "KAFKA_SSL_KEY_LOCATION": str(broker.certificates["admin"].key),
                                    "PAYMENTS_TOPIC_PREFIX": topics.prefix})
    apply(admin_settings, acl_bindings(topics))
    # The controller has committed them; the broker's authorizer applies them from the metadata log a moment later.
    for user, topic in (("risk", topics.name(base.RISK_COMMANDS)), ("operator", topics.events)):
        sees = AdminClient(client_config(broker.user(user))).list_topics
        wait_for(lambda topic=topic, sees=sees: topic in sees(timeout=5).topics, 15, f"{user} to see {topic}")
    return topics


def first_error(connection: KafkaConnection, timeout_s: float = REFUSED_WITHIN_S) -> KafkaError:
    """The first error a client of `connection` reports while asking for metadata (it must get one)."""
    errors: list[KafkaError] = []
    admin = AdminClient(client_config(connection, {"error_cb": errors.append, "log_level": 0}))
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=timeout_s)

    def reported() -> bool:
        admin.poll(0.2)  # serves error_cb
        return bool(errors)

    wait_for(reported, timeout_s, "the client to report an error")
    return errors[0]


def delivery_error(connection: KafkaConnection, topic: str) -> KafkaError | None:
    """Produce one record to `topic` as `connection`: its delivery error (None: delivered)."""
    outcome: list[KafkaError | None] = []
    producer = Producer(client_config(connection, {"message.timeout.ms": 10_000, "log_level": 0}))
    producer.produce(topic, key=b"k", value=b"v", on_delivery=lambda error, message: outcome.append(error))
    wait_for(lambda: producer.poll(0.2) or outcome, 15, f"the delivery report of a record to {topic}")
    return outcome[0]


def read_error(connection: KafkaConnection, topic: str) -> KafkaError | None:
    """Subscribe to `topic` as `connection` in a `reader-` group and poll: the first error reported, None if
    the read reaches the end of a partition without one."""
    consumer = KafkaConsumer(client_config(connection, {"group.id": f"reader-{uuid.uuid4().hex}",
                                                        "enable.auto.commit": False, "log_level": 0,
                                                        "auto.offset.reset": "earliest",
                                                        "enable.partition.eof": True}))
    try:
        consumer.subscribe([topic])
        seen: list[KafkaError] = []

        def answered() -> bool:
            record = consumer.poll(0.2)
            if record is not None and record.error() is not None:
                seen.append(record.error())
            return bool(seen)

        wait_for(answered, 20, f"an answer reading {topic}")
        return None if seen[0].code() == KafkaError._PARTITION_EOF else seen[0]
    finally:
        consumer.close()


def test_each_service_with_its_own_user_and_certificate_settles_a_payment(
        broker: SecureBroker, secured_topics: Topics, database_url: str, risk_model: tuple[Path, str]) -> None:
    log_dir = Path(tempfile.mkdtemp(prefix="secure-pipeline-"))
    common = {**FAST_ENV, **partner_env(log_dir), "PAYMENTS_STATE_DIR": str(log_dir / "state"),
              "PAYMENTS_TOPIC_PREFIX": secured_topics.prefix, "DATABASE_URL": database_url,
              "PAYMENTS_RISK_MODELS_DIR": str(risk_model[0])}
    def env(args: list[str]) -> dict[str, str]:  # each process its own user and certificate
        if args == ["partner-sim"]:  # no Kafka client
            return common
        return {**common, **broker.env(f"projection-{args[1]}" if args[0] == "projection" else args[0])}

    processes = [ServiceProcess(args, log_dir=log_dir, health_port=free_port(), env=env(args)) for args in PROCESSES]
    try:
        start_all(processes)
        command = make_initiate()
        codec = serde()
        producer = Producer(client_config(broker.user("http-intake"), {"partitioner": "murmur2_random",
                                                                        "enable.idempotence": True}))
        producer.produce(secured_topics.commands, key=command.payment_id.encode(), value=codec.encode(command),
                         headers=build_headers(command, source="tests", traceparent=None))
        assert producer.flush(30) == 0, "the command was not delivered"

        operator = broker.user("operator")

        def settled() -> bool:
            records = committed_records(operator, partitions_of(operator, [secured_topics.events]), timeout_s=30)
            events = [codec.decode(r.value()) for r in records if r.value() is not None]
            return any(isinstance(e, PaymentSettled) and e.payment_id == command.payment_id for e in events)

        def status() -> str | None:
            with psycopg.connect(database_url) as conn:
                row = conn.execute("SELECT status FROM payment_status WHERE payment_id = %s",
                                   (command.payment_id,)).fetchone()
            return None if row is None else str(row[0])

        try:
            wait_for(settled, 60, f"PaymentSettled for {command.payment_id} on {secured_topics.events}", 0.5)
            wait_for(lambda: status() == "SETTLED", 20, "the payment_status row to say SETTLED")
        except AssertionError as error:
            ends = end_offsets(broker.admin, partitions_of(broker.admin, [t.name for t in topology(secured_topics,
                                                                                                   PARTITIONS)]))
            filled = sorted({topic for (topic, _), end in ends.items() if end})
            raise AssertionError(f"{error}\ntopics with records: {filled}\n" + "\n".join(
                f"--- {p.args}\n{p.log_tail(1500)}" for p in processes)) from None
        # The operator's reading commands work within its grants: inspect, status, the dead letters.
        operator_settings = Settings.load({**broker.env("operator"), "PAYMENTS_TOPIC_PREFIX": secured_topics.prefix,
                                           "DATABASE_URL": database_url})
        seen, _ = read_payment(operator_settings, command.payment_id, 30)
        assert any(isinstance(s.message, PaymentSettled) for s in seen)
        assert system_status(operator_settings).topic_problems == []
        assert read_letters(operator_settings) == []
        # The operator records a risk model change and the risk service, under its own user, follows it; risk
        # may read risk.models but not write it.
        models_dir, version = risk_model
        operator_settings = operator_settings.model_copy(update={"risk_models_dir": models_dir})
        assert record_change(operator_settings, "shadow", version, reason="secured").change.candidate == version
        risk = next(p for p in processes if p.args == ["risk"])
        wait_for(lambda: '"event": "risk_models_changed"' in risk.run_log(), 30, "the risk service to follow")
        assert read_error(broker.user("risk"), secured_topics.name(base.RISK_MODELS)) is None
        denied = delivery_error(broker.user("risk"), secured_topics.name(base.RISK_MODELS))
        assert denied is not None and denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, denied
    finally:
        for process in processes:
            assert process.stop() == 0, process.log_tail()


def test_a_client_without_sasl_is_refused(broker: SecureBroker) -> None:
    plaintext = KafkaConnection(broker.node.bootstrap_servers)
    assert first_error(plaintext).code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN)
    tls_only = KafkaConnection(broker.node.bootstrap_servers, KafkaSecurity(
        protocol="SSL", ssl_ca_location=str(broker.authority.ca),
        ssl_certificate_location=str(broker.certificates["payments-risk"].certificate),
        ssl_key_location=str(broker.certificates["payments-risk"].key)))
    assert first_error(tls_only).code() in (KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN)


def test_a_client_without_a_client_certificate_is_refused_even_with_the_right_password(broker: SecureBroker) -> None:
    assert first_error(broker.user("risk", certificate=False)).code() in (
        KafkaError._SSL, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN)


def test_a_wrong_password_fails_sasl_authentication(broker: SecureBroker) -> None:
    error = first_error(broker.user("risk", password="not-the-password"))
    assert error.code() == KafkaError._AUTHENTICATION, error
    assert "SASL authentication" in error.str() or "Authentication failed" in error.str()


def test_a_service_with_a_wrong_password_stops_waiting_and_says_which_settings_to_check(
        broker: SecureBroker) -> None:
    """What a service does at start (ops.launch): a refused password is a configuration error (exit 2),
    not a Kafka outage to wait out; with the right password the same wait returns at once."""
    stop = threading.Event()
    deadline = threading.Timer(30.0, stop.set)  # a wait that never gives up returns False then, and fails here
    deadline.start()
    with pytest.raises(KafkaCredentialsError, match="KAFKA_SASL_PASSWORD") as refused:
        wait_for_kafka(broker.user("risk", password="not-the-password"), stop, attempt_timeout_s=1.0, pause_s=0.1)
    assert "not-the-password" not in str(refused.value)
    assert wait_for_kafka(broker.user("risk"), stop, attempt_timeout_s=5.0)
    deadline.cancel()


def test_a_service_user_is_denied_another_services_topics_and_allowed_its_own(
        broker: SecureBroker, secured_topics: Topics) -> None:
    risk = broker.user("risk")
    events, commands = secured_topics.events, secured_topics.commands
    assert delivery_error(risk, secured_topics.name(base.RISK_REPLIES)) is None  # its own output: delivered
    denied = delivery_error(risk, events)
    assert denied is not None and denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, denied
    assert read_error(risk, secured_topics.name(base.RISK_COMMANDS)) is None  # its own input: read to the end
    refused = read_error(risk, commands)
    assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused
    # What risk may not describe, it does not see (the topic's existence is not disclosed).
    assert commands not in AdminClient(client_config(risk)).list_topics(timeout=10).topics


def test_a_service_user_may_not_create_topics_and_one_whose_topics_exist_asks_for_none(
        broker: SecureBroker, secured_topics: Topics) -> None:
    risk = broker.user("risk")
    own = [spec for spec in topology(secured_topics, PARTITIONS)
           if spec.name in {secured_topics.name(base.RISK_COMMANDS), secured_topics.name(base.RISK_REPLIES)}]
    ensure_topics(risk, own)  # all exist and are visible to it: no CreateTopics, which it may not send
    with pytest.raises(KafkaCallError) as raised:
        ensure_topics(risk, [TopicSpec(secured_topics.name("risk.extra"), PARTITIONS)])
    assert refused_authorization(raised.value), raised.value
