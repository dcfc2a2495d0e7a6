"""The risk service's models on a real broker: it refuses to start on a model it cannot trust, and it
follows the operator's shadow, promote and rollback, each one command recorded on risk.models.

The risk service runs alone here: AssessRisk records go straight to risk.commands, keyed by the payee as
the saga keys them, and the replies are read from risk.replies."""

from __future__ import annotations

import os
import re
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ops.cli import main
from ops.supervisor import ServiceProcess, free_port
from payments.contracts.participants import AssessRisk, RiskAssessmentCompleted
from payments.money import Money
from payments.runtime.topics import Topics
from tests.support import decode_all, produce, read_all, service, setup_topics, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def cli(kafka_bootstrap: str, topics: Topics, risk_model: tuple[Path, str],
        monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The operator's environment: the same broker, topics and models directory as the service's."""
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_bootstrap)
    monkeypatch.setenv("PAYMENTS_TOPIC_PREFIX", topics.prefix)
    monkeypatch.setenv("PAYMENTS_RISK_MODELS_DIR", str(risk_model[0]))
    monkeypatch.setenv("USER", "alice-operator")
    yield


def _risk(kafka_bootstrap: str, topics: Topics, tmp_path: Path, **env: str) -> ServiceProcess:
    return service(["risk"], bootstrap=kafka_bootstrap, database_url="", topics=topics, log_dir=tmp_path,
                   extra_env=env, health_port=free_port())


def _ask(kafka_bootstrap: str, topics: Topics, payer: str, payee: str, amount: str = "1.00") -> str:
    now = datetime.now(UTC)
    command = AssessRisk(payment_id=str(uuid.uuid4()), command_id=str(uuid.uuid4()), issued_at=now,
                         payer_account=payer, payee_account=payee, amount=Money.parse(amount, "EUR"),
                         partner="simbank", initiated_at=now, attempt=1)
    produce(kafka_bootstrap, topics.name("risk.commands"), [command], key_of=lambda m: m.payee_account)  # type: ignore[attr-defined]
    return command.payment_id


def _reply(kafka_bootstrap: str, topics: Topics, payment_id: str) -> RiskAssessmentCompleted:
    def found() -> RiskAssessmentCompleted | None:
        replies = decode_all(read_all(kafka_bootstrap, topics.name("risk.replies")))
        return next((r for r in replies if isinstance(r, RiskAssessmentCompleted) and r.payment_id == payment_id),
                    None)

    reply = wait_for(found, 60, f"the reply for {payment_id}")
    assert reply is not None
    return reply


def _metrics(process: ServiceProcess) -> str:
    """The process's /metrics, without the OpenTelemetry scope labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{process.health_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return re.sub(r',?otel_scope_[a-z_]+="[^"]*"', "", text).replace("{,", "{")


def _scored_by(kafka_bootstrap: str, topics: Topics, active: str, candidate: str | None,
               timeout_s: float = 60) -> RiskAssessmentCompleted:
    """Ask until a reply comes from `active` with `candidate` in shadow (the service follows within seconds)."""
    deadline = datetime.now(UTC) + timedelta(seconds=timeout_s)
    while True:
        reply = _reply(kafka_bootstrap, topics, _ask(kafka_bootstrap, topics, "acc-alice", "acc-bob", "42.00"))
        shadow = reply.shadow.model_version if reply.shadow is not None else None
        if (reply.model_version, shadow) == (active, candidate):
            return reply
        assert datetime.now(UTC) < deadline, f"still scored by {reply.model_version}, shadow {shadow}"


def test_a_risk_service_refuses_to_start_with_a_model_it_cannot_load_or_trust(
        kafka_bootstrap: str, topics: Topics, tmp_path: Path, risk_model: tuple[Path, str]) -> None:
    setup_topics(kafka_bootstrap, topics)
    missing = _risk(kafka_bootstrap, topics, tmp_path, PAYMENTS_RISK_MODEL="gbm-20990101-0000000000",
                    PAYMENTS_RISK_MODELS_DIR=str(risk_model[0])).start()
    assert missing.process is not None and missing.process.wait(60) == 2
    assert "payments run risk: cannot read risk model" in missing.log_tail() and "Traceback" not in missing.log_tail()

    tampered = tmp_path / "tampered"
    tampered.mkdir()
    version = risk_model[1]
    (tampered / f"{version}.json").write_bytes((risk_model[0] / f"{version}.json").read_bytes())
    onnx = (risk_model[0] / f"{version}.onnx").read_bytes()
    (tampered / f"{version}.onnx").write_bytes(onnx[:-1] + bytes([onnx[-1] ^ 1]))
    refused = _risk(kafka_bootstrap, topics, tmp_path / "t", PAYMENTS_RISK_MODEL=version,
                    PAYMENTS_RISK_MODELS_DIR=str(tampered)).start()
    assert refused.process is not None and refused.process.wait(60) == 2
    assert "does not have the SHA-256 its manifest declares" in refused.log_tail()


def test_shadow_promote_and_rollback_are_recorded_and_the_running_service_follows_them(
        kafka_bootstrap: str, topics: Topics, tmp_path: Path, risk_model: tuple[Path, str], cli: None,
        capsys: pytest.CaptureFixture[str]) -> None:
    setup_topics(kafka_bootstrap, topics)
    gbm = risk_model[1]
    risk = _risk(kafka_bootstrap, topics, tmp_path, PAYMENTS_RISK_MODELS_DIR=str(risk_model[0])).start()
    try:
        risk.wait_ready()
        first = _scored_by(kafka_bootstrap, topics, "risk-model-v1", None)
        assert first.features and first.payer_seq >= 1  # behavioural features recorded whichever model scores

        assert main(["risk", "promote", "--reason", "nothing in shadow"]) == 1  # refused, nothing recorded
        assert "no candidate runs in shadow" in capsys.readouterr().err
        assert main(["risk", "shadow", "gbm-20990101-0000000000", "--reason", "typo"]) == 1
        assert "cannot read risk model" in capsys.readouterr().err

        assert main(["risk", "shadow", gbm, "--reason", "trained on January"]) == 0
        shadowed = _scored_by(kafka_bootstrap, topics, "risk-model-v1", gbm)
        assert shadowed.shadow is not None and 0 <= shadowed.shadow.score_bp <= 10_000
        exported = _metrics(risk)
        assert f'payments_risk_model{{role="candidate",version="{gbm}"}} 1.0' in exported
        assert f'payments_risk_shadow_agreement{{active="risk-model-v1",candidate="{gbm}"}}' in exported
        assert f'payments_risk_shadow_psi{{active="risk-model-v1",candidate="{gbm}"}}' in exported

        assert main(["risk", "promote", "--reason", "agreement 0.99 over a week"]) == 0
        _scored_by(kafka_bootstrap, topics, gbm, None)
        burst = [_ask(kafka_bootstrap, topics, "acc-mallory", f"stranger-{n % 2}") for n in range(6)]
        declined = [r for r in (_reply(kafka_bootstrap, topics, pid) for pid in burst) if r.decision == "DECLINE"]
        assert declined and declined[-1].reasons == ["SCORE_ABOVE_THRESHOLD"] and declined[-1].contributions

        assert main(["risk", "rollback", "--reason", "too many declines"]) == 0
        _scored_by(kafka_bootstrap, topics, "risk-model-v1", None)
        exported = _metrics(risk)
        assert 'payments_risk_model{role="active",version="risk-model-v1"} 1.0' in exported
        assert "payments_risk_shadow_agreement{" not in exported and "payments_risk_shadow_psi{" not in exported
        assert 'payments_risk_model{role="candidate"' not in exported
        assert f'payments_risk_assessments_total{{decision="DECLINE",declined_by="model",model_version="{gbm}"}}' \
            in exported
    finally:
        assert risk.stop() == 0, risk.log_tail()
    capsys.readouterr()
    assert main(["risk", "models"]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[:3] == ["active:    risk-model-v1   (recorded)", "candidate: -", f"rollback:  {gbm}"]
    assert [line.split()[1] for line in shown[3:]] == ["shadow", "promote", "rollback"]
    assert all("by alice-operator" in line for line in shown[3:]) and "too many declines" in shown[-1]
    assert os.environ["USER"] == "alice-operator"
