"""The risk service's decisions: its two stages over account histories, rules before the model, answers
repeated, failures counted, a candidate in shadow, and a replay that rebuilds every feature it computed."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers.ids import reply_id
from consumers.risk.artifact import load_artifact
from consumers.risk.features import FEATURES, IDLE_FORGET, Attempt, FeatureFold
from consumers.risk.logic import ANSWERS_MAX, AccountRisk, RiskLogic
from consumers.risk.models import GbmScorer, LogisticScorer, Models
from consumers.risk.replay import replay
from consumers.risk.scoring import RiskModelError, load_model, load_rules
from payments.contracts.participants import AssessRisk
from payments.contracts.topics import RISK_COMMANDS, RISK_OUTCOMES, RISK_SCORING
from payments.money import Money
from payments.runtime.logic import InputRejected
from tests.unit.consumers.helpers import NOW, incoming
from tests.unit.consumers.risk_harness import Harness, assess_risk, failed, later


def v1_logic(**kwargs: object) -> RiskLogic:
    return RiskLogic(load_rules(), Models(LogisticScorer(load_model())), **kwargs)  # type: ignore[arg-type]


def gbm(trained: Path) -> GbmScorer:
    return GbmScorer(load_artifact(trained))


def test_packaged_rules_and_model_load_and_the_model_version_is_recorded_in_the_reply() -> None:
    assert load_rules().version == "risk-rules-v1"
    reply = Harness(v1_logic()).assess(assess_risk(at=NOW))
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
    reply = Harness(v1_logic()).assess(assess_risk(payer=payer, payee=payee, amount=Money.parse(amount, currency),
                                                   at=NOW))
    assert (reply.decision, reply.reasons) == (decision, reasons)
    assert 0 <= reply.score_bp <= 10_000


def test_known_input_gives_known_score() -> None:
    assert Harness(v1_logic()).assess(assess_risk(at=NOW)).score_bp == 21


def test_unknown_currency_is_declined_and_added_to_no_history() -> None:
    harness = Harness(v1_logic())
    reply = harness.assess(assess_risk(amount=Money.of(100, "XXX"), at=NOW))
    assert (reply.decision, reply.reasons, reply.score_bp) == ("DECLINE", ["UNKNOWN_CURRENCY"], 10_000)
    assert (reply.payer_seq, reply.payee_seq, reply.features) == (0, 0, {})
    assert all(s.payer.count == 0 and s.payee.count == 0 for s in harness.states.values())


def test_each_stage_is_keyed_by_the_account_whose_history_it_keeps() -> None:
    logic = v1_logic()
    command = assess_risk(payer="acc-alice", payee="acc-bob", at=NOW)
    first = logic.decide(None, incoming(command, RISK_COMMANDS, key="acc-bob"), NOW)
    assert first.state is not None and first.state.payee.count == 1 and first.state.payer.count == 0
    (onward,) = first.outgoing
    assert (onward.destination, onward.key) == (RISK_SCORING, "acc-alice")
    assert logic.key_of(command, None) == "acc-bob"  # type: ignore[arg-type]
    assert logic.key_of(onward.message, None) == "acc-alice"  # type: ignore[arg-type]
    second = logic.decide(None, incoming(onward.message, RISK_SCORING, key="acc-alice"), NOW)
    (reply,) = second.outgoing
    assert reply.key == command.payment_id
    assert reply.message.command_id == command.command_id  # type: ignore[attr-defined]
    assert reply.message.reply_id == reply_id("risk", command.command_id)  # type: ignore[attr-defined]
    assert second.state is not None and (second.state.payer.count, second.state.payee.count) == (1, 0)


def test_the_features_of_each_reply_are_those_of_the_payments_before_it() -> None:
    harness, fold = Harness(v1_logic()), FeatureFold()
    rng = random.Random(3)
    accounts = [f"acc-{n}" for n in range(5)]
    at = NOW
    for _ in range(60):
        at = later(at, rng.uniform(1, 4_000))
        payer, payee = rng.sample(accounts, 2)
        command = assess_risk(payer=payer, payee=payee, amount=Money.of(rng.randint(100, 90_000), "EUR"), at=at)
        assert command.initiated_at is not None  # the wire's milliseconds, which the replay reads too
        expected = fold.step(Attempt(command.payment_id, command.initiated_at, payer, payee, command.amount,
                                     "simbank"))
        reply = harness.assess(command)
        assert reply.features == expected and list(reply.features) == list(FEATURES)
    assert reply.payer_seq == harness.states[payer].payer.count
    assert reply.payee_seq == harness.states[payee].payee.count


def test_a_later_attempt_gets_the_first_answer_and_adds_nothing() -> None:
    harness = Harness(v1_logic())
    first = assess_risk(at=NOW)
    one = harness.assess(first)
    before = dict(harness.states)
    again = harness.assess(first.model_copy(update={"command_id": "c-2", "attempt": 2, "issued_at": later(NOW, 30)}))
    assert again.model_copy(update={"reply_id": one.reply_id, "command_id": one.command_id}) == one
    assert again.reply_id == reply_id("risk", "c-2")
    assert harness.states == before


def test_a_later_attempt_whose_first_answer_is_gone_is_scored_but_added_to_no_history() -> None:
    harness = Harness(v1_logic())
    first = assess_risk(at=NOW)
    harness.assess(first)
    for n in range(ANSWERS_MAX):  # the payer's later payments push the first answer out
        harness.assess(assess_risk(at=later(NOW, n + 1)))
    counts = (harness.states["acc-alice"].payer.count, harness.states["acc-bob"].payee.count)
    again = harness.assess(first.model_copy(update={"command_id": "c-2", "attempt": 2, "issued_at": later(NOW, 60)}))
    assert (again.payer_seq, again.payee_seq, again.failures_before) == (0, 0, [])
    assert (harness.states["acc-alice"].payer.count, harness.states["acc-bob"].payee.count) == counts


def test_a_redelivery_after_a_model_change_repeats_the_first_answer(tmp_path: Path) -> None:
    harness = Harness(v1_logic())
    command = assess_risk(at=NOW)
    first = harness.assess(command)
    data = json.loads(load_model().model_dump_json())
    data.update(version="risk-model-v1b", bias=20.0)
    path = tmp_path / "v1b.json"
    path.write_text(json.dumps(data))
    harness.logic.models = Models(LogisticScorer(load_model(path)))
    assert harness.assess(command) == first
    fresh = harness.assess(assess_risk(at=later(NOW, 1)))
    assert (fresh.model_version, fresh.decision) == ("risk-model-v1b", "DECLINE")


def test_a_decline_counts_in_the_payers_declines() -> None:
    harness = Harness(v1_logic())
    assert harness.assess(assess_risk(payee="acc-blocked", at=NOW)).decision == "DECLINE"
    after = harness.assess(assess_risk(at=later(NOW, 60)))
    assert after.features["payer_declines_7d"] == 1.0 and after.features["payer_failures_7d"] == 0.0


def test_a_failure_notice_counts_once_and_is_named_in_the_payers_next_reply() -> None:
    harness = Harness(v1_logic())
    paid = harness.assess(assess_risk(at=NOW))
    for _ in range(2):  # told twice: counted once
        harness.send(failed(paid.payment_id, "acc-alice", later(NOW, 5)))
        harness.step(RISK_OUTCOMES)
    harness.send(failed("pay-unknown", "acc-alice", later(NOW, 5)))  # not in the history: no effect
    harness.step(RISK_OUTCOMES)
    nxt = harness.assess(assess_risk(at=later(NOW, 60)))
    assert nxt.failures_before == [paid.payment_id] and nxt.features["payer_failures_7d"] == 1.0
    assert harness.assess(assess_risk(at=later(NOW, 120))).failures_before == []


def test_a_notice_for_an_account_without_state_keeps_none() -> None:
    notice = failed("pay-1", "acc-nobody", NOW)
    assert v1_logic().decide(None, incoming(notice, RISK_OUTCOMES, key="acc-nobody"), NOW).state is None


def test_state_round_trips_through_the_changelog_encoding() -> None:
    harness = Harness(v1_logic())
    harness.assess(assess_risk(at=NOW))
    state = harness.states["acc-alice"]
    assert harness.logic.decode_state(harness.logic.encode_state(state)) == state


def test_a_stale_command_is_dead_lettered_never_scored() -> None:
    logic = v1_logic(retention=timedelta(days=7))
    command = assess_risk(at=NOW)
    with pytest.raises(InputRejected) as rejected:
        logic.decide(None, incoming(command, RISK_COMMANDS, key="acc-bob"), NOW + timedelta(days=7))
    assert rejected.value.reason_code == "stale_command"


def test_an_account_is_forgotten_only_when_no_accepted_payment_could_see_its_history() -> None:
    logic = v1_logic(retention=timedelta(days=7))
    harness = Harness(logic)
    harness.assess(assess_risk(at=NOW))
    state = harness.states["acc-alice"]
    deadline = logic.next_deadline(state)
    assert deadline is not None and deadline > NOW + IDLE_FORGET + timedelta(days=7)
    assert logic.fire_timers("acc-alice", state, deadline - timedelta(seconds=1)).state == state
    assert logic.fire_timers("acc-alice", state, deadline).state is None


def test_a_history_idle_for_longer_than_the_bound_counts_as_new() -> None:
    harness = Harness(v1_logic())
    harness.assess(assess_risk(at=NOW))
    back = harness.assess(assess_risk(at=NOW + IDLE_FORGET + timedelta(days=1)))
    assert back.payer_seq == 1 and back.features["payer_age_log_days"] == 0.0
    assert back.features["payer_first_time_payee"] == 1.0


# -- a trained model in the service ----------------------------------------------------------------


def _card_testing(harness: Harness, payer: str, count: int) -> list[object]:
    replies = []
    for n in range(count):
        replies.append(harness.assess(assess_risk(payer=payer, payee=f"stranger-{n % 2}", at=later(NOW, 20 * n),
                                                  amount=Money.parse("1.00", "EUR"))))
    return replies


def test_a_trained_model_declines_a_card_testing_burst_and_says_which_features_drove_it(trained: Path) -> None:
    harness = Harness(RiskLogic(load_rules(), Models(gbm(trained))))
    harness.assess(assess_risk(payer="acc-victim", payee="shop", at=later(NOW, -30 * 86_400)))
    replies = _card_testing(harness, "acc-victim", 15)
    declined = [r for r in replies if r.decision == "DECLINE"]  # type: ignore[attr-defined]
    assert declined, [r.score_bp for r in replies]  # type: ignore[attr-defined]
    last = declined[-1]
    assert last.reasons == ["SCORE_ABOVE_THRESHOLD"] and last.model_version == load_artifact(trained).version
    assert 1 <= len(last.contributions) <= 5 and all(c.bp > 0 for c in last.contributions)
    assert last.contributions == sorted(last.contributions, key=lambda c: -c.bp)
    assert {c.feature for c in last.contributions} <= set(FEATURES)


def test_rules_decline_before_the_model_and_the_model_does_not_claim_the_decline(trained: Path) -> None:
    harness = Harness(RiskLogic(load_rules(), Models(gbm(trained))))
    reply = harness.assess(assess_risk(payer="acc-blocked", at=NOW))
    assert reply.decision == "DECLINE" and reply.reasons[0] == "ACCOUNT_BLOCKED"
    assert ("SCORE_ABOVE_THRESHOLD" in reply.reasons) == bool(reply.contributions)


def test_a_candidate_in_shadow_is_recorded_beside_the_answer_and_decides_nothing(trained: Path) -> None:
    alone = Harness(RiskLogic(load_rules(), Models(LogisticScorer(load_model()))))
    paired = Harness(RiskLogic(load_rules(), Models(LogisticScorer(load_model()), gbm(trained))))
    for harness in (alone, paired):
        harness.assess(assess_risk(payer="acc-victim", payee="shop", at=later(NOW, -30 * 86_400)))
        _card_testing(harness, "acc-victim", 15)
    same = {"score_bp", "decision", "reasons", "model_version", "features", "payer_seq", "payee_seq"}
    for one, two in zip(alone.replies, paired.replies, strict=True):
        assert one.model_dump(include=same) == two.model_dump(include=same) and one.shadow is None
        assert two.shadow is not None and two.shadow.model_version == load_artifact(trained).version
    assert any(r.shadow.decision == "DECLINE" for r in paired.replies if r.shadow is not None)
    assert all(r.decision == "APPROVE" for r in paired.replies)


def test_a_model_that_is_not_in_the_models_directory_is_refused(tmp_path: Path) -> None:
    from consumers.risk.models import load_scorer

    with pytest.raises(RiskModelError, match="cannot read"):
        load_scorer("gbm-20260101-0000000000", tmp_path)
    with pytest.raises(RiskModelError, match="PAYMENTS_RISK_MODELS_DIR"):
        load_scorer("gbm-20260101-0000000000", None)
    assert load_scorer("risk-model-v1", None).version == "risk-model-v1"


# -- the replay of what the saga recorded rebuilds what the service computed -------------------------

ACCOUNTS = [f"acc-{n}" for n in range(4)]


@st.composite
def traffic(draw: st.DrawFn) -> tuple[list[tuple[str, object]], int]:
    """A schedule: payments (some out of time order, some after a long idle gap, some asked twice), failure
    notices, and in which order the service's three inputs are served."""
    steps: list[tuple[str, object]] = []
    at = NOW
    for n in range(draw(st.integers(5, 40))):
        kind = draw(st.sampled_from(["pay", "pay", "pay", "retry", "fail", "serve", "gap"]))
        if kind == "gap":
            at = at + IDLE_FORGET + timedelta(days=draw(st.integers(1, 5)))
            continue
        at = at + timedelta(seconds=draw(st.sampled_from([1, 5, 20, 90, 600, 7_200, 90_000])))
        if kind == "pay":
            payer, payee = draw(st.permutations(ACCOUNTS))[:2]
            jitter = timedelta(seconds=draw(st.integers(-120, 0)))  # issued by another orchestrator partition
            amount = Money.of(draw(st.integers(1, 5_000_000)), draw(st.sampled_from(["EUR", "JPY"])))
            steps.append(("pay", (f"pay-{n}", payer, payee, amount, at + jitter)))
        else:
            steps.append((kind, draw(st.integers(0, 10_000))))
    return steps, draw(st.integers(0, 2**32))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traffic())
def test_a_replay_of_the_recorded_answers_rebuilds_every_feature_the_service_computed(
        schedule: tuple[list[tuple[str, object]], int]) -> None:
    steps, seed = schedule
    rng = random.Random(seed)
    harness = Harness(v1_logic(retention=timedelta(days=10_000)))
    paid: list[AssessRisk] = []
    for kind, arg in steps:
        if kind == "pay":
            payment_id, payer, payee, amount, at = arg  # type: ignore[misc]
            command = assess_risk(payment_id, payer=payer, payee=payee, amount=amount, at=at)
            harness.send(command)
            paid.append(command)
        elif kind == "retry" and paid:
            first = paid[int(arg) % len(paid)]  # type: ignore[call-overload]
            harness.send(first.model_copy(update={"command_id": f"{first.command_id}-2", "attempt": 2}))
        elif kind == "fail" and paid:
            victim = paid[int(arg) % len(paid)]  # type: ignore[call-overload]
            harness.send(failed(victim.payment_id, victim.payer_account, victim.issued_at))
        for _ in range(rng.randint(0, 3)):  # the three inputs are served in any interleaving
            ready = [t for t in (RISK_COMMANDS, RISK_SCORING, RISK_OUTCOMES) if harness.queues[t]]
            if ready:
                harness.step(rng.choice(ready))
    harness.drain()
    replayed = replay(harness.recorded())
    assert all(r.matches for r in replayed), [r.payment_id for r in replayed if not r.matches]
    assert {r.payment_id for r in replayed} == {c.payment_id for c in paid}


def test_a_replay_notices_a_payment_the_log_lost() -> None:
    harness = Harness(v1_logic())
    for n in range(3):
        harness.assess(assess_risk(f"pay-{n}", payee=f"shop-{n}", at=later(NOW, 60 * n)))
    del harness.kept["pay-1"]  # the saga had stopped waiting: its answer is not in payments.events
    replayed = {r.payment_id: r for r in replay(harness.recorded())}
    assert replayed["pay-0"].matches is True and replayed["pay-2"].matches is False


def test_state_holds_both_sides_of_an_account() -> None:
    harness = Harness(v1_logic())
    harness.assess(assess_risk(payer="acc-a", payee="acc-b", at=NOW))
    harness.assess(assess_risk(payer="acc-b", payee="acc-a", at=later(NOW, 1)))
    state: AccountRisk = harness.states["acc-a"]
    assert (state.payer.count, state.payee.count) == (1, 1)
