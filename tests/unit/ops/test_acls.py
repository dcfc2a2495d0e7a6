"""The ACLs are derived from the registry: each service may read its inputs and write its outputs,
changelog and the dead-letter topic, in its own group and transactional ids, and nothing else; the
checked-in deploy/kafka/acls.json is exactly the derivation; and the settings secure every client."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops import acls
from ops.acls import Binding, acl_bindings, load, principal, render
from ops.errors import ConfigError
from ops.registry import PROJECTIONS, SERVICES, process_topology
from ops.settings import Settings
from payments.contracts import topics as base
from payments.runtime.topics import Topics

ROOT = Path(__file__).resolve().parents[3]


def granted(bindings: list[Binding], user: str, operation: str, resource_type: str = "TOPIC") -> set[str]:
    return {b.name for b in bindings if b.principal == principal(user) and b.operation == operation
            and b.resource_type == resource_type}


def test_the_checked_in_acl_file_is_the_derivation_from_the_registry() -> None:
    derived = render(Topics(), acl_bindings(Topics()))
    assert (ROOT / acls.DEFAULT_FILE).read_text() == derived, (
        "deploy/kafka/acls.json is stale: regenerate it with `payments acls render > deploy/kafka/acls.json`")


def test_every_service_and_projection_has_a_principal_and_only_those_and_the_two_others_do() -> None:
    principals = {b.principal for b in acl_bindings(Topics())}
    assert principals == {principal(n) for n in SERVICES} | {principal(f"projection-{n}") for n in PROJECTIONS} | {
        principal("http-intake"), principal("operator")}


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_a_service_reads_its_inputs_and_writes_its_outputs_changelog_and_dead_letters_only(name: str) -> None:
    topics = Topics(prefix="t1.")
    bindings = acl_bindings(topics)
    logic = SERVICES[name].logic
    changelog = topics.changelog(name)
    reads = {topics.name(t) for t in SERVICES[name].reads}
    assert granted(bindings, name, "READ") == {topics.name(t) for t in logic.input_topics} | {changelog} | reads
    assert granted(bindings, name, "WRITE") == {topics.name(t) for t in logic.output_topics} | {topics.dlq, changelog}
    assert granted(bindings, name, "DESCRIBE") == granted(bindings, name, "READ") | granted(bindings, name, "WRITE")
    assert granted(bindings, name, "READ", "GROUP") == {f"t1.{name}", "reader-"}
    assert granted(bindings, name, "WRITE", "TRANSACTIONAL_ID") == {f"t1.{name}-"}
    assert {b.pattern_type for b in bindings if b.principal == principal(name) and b.resource_type == "TOPIC"} == {
        "LITERAL"}
    assert not granted(bindings, name, "CREATE") and not granted(bindings, name, "ALTER")


def test_risk_may_not_touch_the_commands_or_the_events_of_payments_nor_change_its_own_models() -> None:
    bindings = acl_bindings(Topics())
    assert base.RISK_COMMANDS in granted(bindings, "risk", "READ")
    assert base.RISK_MODELS in granted(bindings, "risk", "READ") and base.RISK_MODELS not in granted(
        bindings, "risk", "WRITE")
    assert base.RISK_MODELS in granted(bindings, "operator", "WRITE")
    reachable = granted(bindings, "risk", "READ") | granted(bindings, "risk", "WRITE")
    assert base.COMMANDS not in reachable and base.EVENTS not in reachable


def test_a_projection_only_reads() -> None:
    bindings = acl_bindings(Topics())
    for name, spec in PROJECTIONS.items():
        user = f"projection-{name}"
        assert granted(bindings, user, "READ") == set(spec.projection().topics)
        assert not granted(bindings, user, "WRITE") and not granted(bindings, user, "WRITE", "TRANSACTIONAL_ID")
        assert granted(bindings, user, "READ", "GROUP") == {f"projection-{name}"}


def test_the_http_intake_only_produces_commands() -> None:
    bindings = [b for b in acl_bindings(Topics()) if b.principal == principal("http-intake")]
    assert {(b.resource_type, b.name, b.operation) for b in bindings} == {
        ("TOPIC", base.COMMANDS, "WRITE"), ("TOPIC", base.COMMANDS, "DESCRIBE")}


def test_a_file_rendered_for_another_topic_prefix_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "acls.json"
    path.write_text(render(Topics(), acl_bindings(Topics())))
    assert load(path, Topics()) == acl_bindings(Topics())
    with pytest.raises(acls.AclError, match="prefix"):
        load(path, Topics(prefix="staging."))


def test_the_settings_make_a_secured_connection_whose_text_has_no_secret() -> None:
    settings = Settings.load({
        "KAFKA_BOOTSTRAP_SERVERS": "k1:9093", "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_USERNAME": "payments-risk", "KAFKA_SASL_PASSWORD": "s3cret",
        "KAFKA_SSL_CA_LOCATION": "/tls/ca.pem", "KAFKA_SSL_CERTIFICATE_LOCATION": "/tls/risk.pem",
        "KAFKA_SSL_KEY_LOCATION": "/tls/risk.key"})
    kafka = settings.kafka
    assert kafka.security.properties()["sasl.username"] == "payments-risk"
    assert kafka.security.properties()["ssl.certificate.location"] == "/tls/risk.pem"
    assert str(kafka) == "k1:9093" and "s3cret" not in repr(kafka)


def test_sasl_settings_without_a_password_are_a_configuration_error() -> None:
    settings = Settings.load({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "payments-risk"})
    with pytest.raises(ConfigError, match="SASL username and password"):
        _ = settings.kafka


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_a_service_makes_at_start_exactly_the_topics_its_acls_let_it_describe(name: str) -> None:
    topics = Topics(prefix="t1.")
    own = {spec.name for spec in process_topology(name, topics, 6)}
    assert own == granted(acl_bindings(topics), name, "DESCRIBE")


def test_a_projection_makes_at_start_only_its_inputs() -> None:
    topics = Topics(prefix="t1.")
    for name, spec in PROJECTIONS.items():
        assert {s.name for s in process_topology(f"projection-{name}", topics, 6)} == {
            topics.name(t) for t in spec.projection().topics}
