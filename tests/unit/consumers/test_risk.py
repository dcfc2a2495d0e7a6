from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from consumers.ids import reply_id
from consumers.risk.logic import RiskLogic, RiskState
from consumers.risk.scoring import RiskModelError, load_model
from payments.contracts.participants import AssessRisk, RiskAssessmentCompleted
from payments.contracts.topics import RISK_COMMANDS, RISK_REPLIES
from payments.money import Money
from tests.unit.consumers.helpers import NOW, incoming


def assess_risk(amount: str = "12.50", currency: str = "EUR", payer: str = "acc-alice", payee: str = "acc-bob",
                command_id: str | None = None) -> AssessRisk:
    return AssessRisk(payment_id="pay-1", command_id=command_id or str(uuid.uuid4()), issued_at=NOW,
                      payer_account=payer, payee_account=payee, amount=Money.parse(amount, currency))


def reply_of(logic: RiskLogic, command: AssessRisk, state: RiskState | None = None
             ) -> tuple[RiskState | None, RiskAssessmentCompleted]:
    decision = logic.decide(state, incoming(command, RISK_COMMANDS), NOW)
    assert len(decision.outgoing) == 1
    out = decision.outgoing[0]
    assert out.destination == RISK_REPLIES and out.key == command.payment_id
    assert isinstance(out.message, RiskAssessmentCompleted)
    return decision.state, out.message


def test_packaged_model_loads_and_its_version_is_recorded_in_the_reply() -> None:
    model = load_model()
    assert model.version == "risk-model-v1"
    _, reply = reply_of(RiskLogic(model), assess_risk())
    assert reply.model_version == "risk-model-v1"


@pytest.mark.parametrize(("amount", "currency", "payer", "payee", "decision", "reasons"), [
    ("12.50", "EUR", "acc-alice", "acc-bob", "APPROVE", []),
    ("4300", "JPY", "acc-dave", "acc-erin", "APPROVE", []),
    ("12.345", "BHD", "acc-frank", "acc-grace", "APPROVE", []),
    ("100000", "KRW", "acc-carol", "acc-dave", "APPROVE", []),
    ("50000.01", "EUR", "acc-alice", "acc-bob", "DECLINE", ["AMOUNT_OVER_RISK_LIMIT"]),
    ("10.00", "EUR", "acc-blocked", "acc-bob", "DECLINE", ["ACCOUNT_BLOCKED"]),
    ("10.00", "EUR", "acc-alice", "acc-alice", "DECLINE", ["SAME_PAYER_AND_PAYEE"]),
    ("400000", "TRY", "acc-alice", "acc-bob", "DECLINE", ["SCORE_ABOVE_THRESHOLD"]),
])
def test_known_inputs_give_known_decisions(amount: str, currency: str, payer: str, payee: str, decision: str,
                                           reasons: list[str]) -> None:
    _, reply = reply_of(RiskLogic(), assess_risk(amount, currency, payer, payee))
    assert (reply.decision, reply.reasons) == (decision, reasons)
    assert 0 <= reply.score_bp <= 10_000


def test_known_input_gives_known_score() -> None:
    _, reply = reply_of(RiskLogic(), assess_risk("12.50", "EUR", "acc-alice", "acc-bob"))
    assert reply.score_bp == 21


def test_unknown_currency_is_declined_with_a_reason() -> None:
    command = assess_risk().model_copy(update={"amount": Money.of(100, "XXX")})
    _, reply = reply_of(RiskLogic(), command)
    assert (reply.decision, reply.reasons, reply.score_bp) == ("DECLINE", ["UNKNOWN_CURRENCY"], 10_000)


def test_redelivered_command_gets_the_same_reply_and_nothing_new() -> None:
    logic = RiskLogic()
    command = assess_risk()
    state, first = reply_of(logic, command)
    again_state, again = reply_of(logic, command, state)
    assert again == first
    assert first.reply_id == reply_id("risk", command.command_id)
    assert again_state == state


def test_redelivery_after_a_model_change_repeats_the_first_answer(tmp_path: Path) -> None:
    command = assess_risk()
    state, first = reply_of(RiskLogic(), command)
    data = json.loads(load_model().model_dump_json())
    data.update(version="risk-model-v2", bias=20.0)
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(data))
    _, again = reply_of(RiskLogic(model_path=path), command, state)
    assert again == first
    _, fresh = reply_of(RiskLogic(model_path=path), assess_risk(), state)
    assert (fresh.model_version, fresh.decision) == ("risk-model-v2", "DECLINE")


def test_state_round_trips_through_the_changelog_encoding() -> None:
    logic = RiskLogic()
    state, _ = reply_of(logic, assess_risk())
    assert state is not None
    assert logic.decode_state(logic.encode_state(state)) == state


def _write(tmp_path: Path, **changes: object) -> Path:
    data = json.loads(load_model().model_dump_json())
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    path = tmp_path / "model.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(("changes", "message"), [
    ({"weights": [1.0]}, "5 features but 1 weights"),
    ({"version": None}, "version"),
    ({"features": ["log_amount_major", "zodiac", "a", "b", "c"]}, "features"),
    ({"decline_threshold_bp": 10_001}, "decline_threshold_bp"),
    ({"currency_risk": {"EURO": 0.1}}, "unknown currency codes"),
    ({"format": "neural-net/9"}, "format"),
])
def test_invalid_model_file_is_refused_with_a_clear_error(tmp_path: Path, changes: dict[str, object],
                                                          message: str) -> None:
    with pytest.raises(RiskModelError, match=message):
        load_model(_write(tmp_path, **changes))


def test_model_file_that_is_not_json_or_missing_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(RiskModelError, match="not JSON"):
        load_model(path)
    with pytest.raises(RiskModelError, match="cannot read"):
        load_model(tmp_path / "absent.json")
