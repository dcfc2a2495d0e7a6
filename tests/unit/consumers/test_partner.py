from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from consumers.ids import reply_id
from consumers.partner.breaker import NEVER, Breaker, BreakerConfig, Throttle
from consumers.partner.caller import CallerConfig, backoff_s
from consumers.partner.client import HttpResult, classify, retry_after_s
from consumers.partner.logic import (
    DEFAULT_CALL_WINDOW,
    PARTNER_UNAVAILABLE,
    PartnerAnswer,
    PartnerGatewayLogic,
    PartnerState,
    PendingCall,
)
from payments.contracts.participants import (
    PartnerQueryResult,
    PartnerSubmissionResult,
    QueryPartnerPayment,
    SubmitToPartner,
)
from payments.contracts.topics import PARTNER_COMMANDS, PARTNER_REPLIES
from payments.money import Money
from payments.runtime.logic import Completion
from tests.unit.consumers.helpers import NOW, incoming

EUR_10 = Money.of(1000, "EUR")
LOGIC = PartnerGatewayLogic()


# -- gateway logic: record the call, answer on completion ------------------------------------------

def submit_command(expires_at: datetime | None = NOW + timedelta(seconds=60)) -> SubmitToPartner:
    return SubmitToPartner(payment_id="pay-1", command_id=str(uuid.uuid4()), issued_at=NOW, partner="simbank",
                           submission_id="pay-1:1", amount=EUR_10, payer_account="acc-a", payee_account="acc-b",
                           expires_at=expires_at)


def query_command() -> QueryPartnerPayment:
    return QueryPartnerPayment(payment_id="pay-1", command_id=str(uuid.uuid4()), issued_at=NOW, partner="simbank",
                               submission_id="pay-1:1", expires_at=NOW + timedelta(seconds=30))


def decide(command: SubmitToPartner | QueryPartnerPayment, state: PartnerState | None = None,
           now: datetime = NOW) -> tuple[PartnerState | None, list[object]]:
    decision = LOGIC.decide(state, incoming(command, PARTNER_COMMANDS), now)
    for out in decision.outgoing:
        assert out.destination == PARTNER_REPLIES and out.key == command.payment_id
    return decision.state, [out.message for out in decision.outgoing]


def complete(state: PartnerState, command_id: str, answer: PartnerAnswer) -> tuple[PartnerState | None, object]:
    decision = LOGIC.complete(state, Completion(0, "pay-1", command_id, answer), NOW)
    (out,) = decision.outgoing
    assert out.destination == PARTNER_REPLIES and out.key == "pay-1"
    return decision.state, out.message


def test_a_submission_is_recorded_as_a_call_and_answered_only_when_it_completes() -> None:
    command = submit_command()
    state, replies = decide(command)
    assert replies == [] and state is not None
    (call,) = LOGIC.calls(state)
    assert call.call_id == command.command_id and isinstance(call.request, PendingCall)
    assert (call.request.kind, call.request.amount, call.request.expires_at) == ("submit", EUR_10, command.expires_at)
    after, reply = complete(state, command.command_id, PartnerAnswer(
        kind="submit", submission_id="pay-1:1", code="ACCEPTED", partner_reference="REF-1"))
    assert isinstance(reply, PartnerSubmissionResult)
    assert (reply.outcome, reply.partner_reference, reply.submission_id) == ("ACCEPTED", "REF-1", "pay-1:1")
    assert reply.reply_id == reply_id("partner", command.command_id)
    assert after is not None and LOGIC.calls(after) == ()
    assert LOGIC.decode_state(LOGIC.encode_state(after)) == after


def test_a_redelivered_command_waits_for_its_call_then_gets_the_same_reply_without_a_new_call() -> None:
    command = submit_command()
    state, _ = decide(command)
    assert state is not None
    again, replies = decide(command, state)
    assert replies == [] and again == state  # the call is out: nothing new
    answered, first = complete(state, command.command_id, PartnerAnswer(
        kind="submit", submission_id="pay-1:1", code="DECLINED", reason_code="NO"))
    assert answered is not None
    final, replies = decide(command, answered)
    assert replies == [first] and final == answered and LOGIC.calls(answered) == ()


def test_a_command_past_its_expiry_is_never_sent_and_answered_at_once() -> None:
    command = submit_command(expires_at=NOW - timedelta(milliseconds=1))
    state, replies = decide(command)
    assert state is not None and LOGIC.calls(state) == ()
    (reply,) = replies
    assert isinstance(reply, PartnerSubmissionResult)
    assert (reply.outcome, reply.reason_code) == ("ERROR", PARTNER_UNAVAILABLE)
    query = query_command()
    _, (answer,) = decide(query, now=NOW + timedelta(seconds=31))
    assert isinstance(answer, PartnerQueryResult) and answer.status == "PENDING"


def test_a_v1_command_without_expiry_may_be_sent_for_the_default_window() -> None:
    command = submit_command(expires_at=None)
    state, _ = decide(command)
    assert state is not None
    (call,) = LOGIC.calls(state)
    assert call.request.expires_at == NOW + DEFAULT_CALL_WINDOW
    late, replies = decide(submit_command(expires_at=None), now=NOW + DEFAULT_CALL_WINDOW)
    assert len(replies) == 1 and late is not None and LOGIC.calls(late) == ()


def test_a_query_is_a_call_too_and_both_can_be_out_for_one_payment() -> None:
    submit, query = submit_command(), query_command()
    state, _ = decide(submit)
    state, _ = decide(query, state)
    assert state is not None and {c.call_id for c in LOGIC.calls(state)} == {submit.command_id, query.command_id}
    state, reply = complete(state, query.command_id, PartnerAnswer(kind="query", submission_id="pay-1:1",
                                                                   code="ACCEPTED", partner_reference="REF-1"))
    assert isinstance(reply, PartnerQueryResult) and (reply.status, reply.partner_reference) == ("ACCEPTED", "REF-1")
    assert state is not None and [c.call_id for c in LOGIC.calls(state)] == [submit.command_id]


def test_unanswered_calls_say_error_for_a_submission_and_pending_for_a_query() -> None:
    state, _ = decide(submit_command())
    assert state is not None
    (call,) = LOGIC.calls(state)
    assert call.request.unanswered("TIMEOUT") == PartnerAnswer(kind="submit", submission_id="pay-1:1", code="ERROR",
                                                               reason_code="TIMEOUT")
    state, _ = decide(query_command())
    assert state is not None
    (call,) = LOGIC.calls(state)
    assert call.request.unanswered("TIMEOUT").code == "PENDING"


# -- the HTTP answers, classified ------------------------------------------------------------------

@pytest.mark.parametrize(("status", "body", "query", "kind"), [
    (201, {"status": "ACCEPTED"}, False, "answer"),
    (200, {"status": "DECLINED"}, False, "answer"),
    (200, {"status": "WHO_KNOWS"}, False, "unknown"),
    (200, {"status": "PENDING"}, True, "pending"),  # received, not decided: neither an outcome nor NOT_FOUND
    (202, {"status": "PENDING"}, False, "pending"),
    (404, {"error": "NOT_FOUND"}, True, "not_found"),
    (404, {"error": "NOT_FOUND"}, False, "rejected"),
    (422, {"error": "IDEMPOTENCY_KEY_REUSED"}, False, "rejected"),
    (429, {}, False, "throttled"),
    (503, {}, True, "unavailable"),
    (500, {"error": "PARTNER_INTERNAL_ERROR"}, False, "unknown"),
    (502, {}, False, "unknown"),
])
def test_each_response_is_classified_by_whether_the_partner_may_have_processed_it(
        status: int, body: dict[str, str], query: bool, kind: str) -> None:
    assert classify(status, body, None, query=query).kind == kind


def test_breaker_verdicts_and_the_partner_code_are_read_from_the_result() -> None:
    assert HttpResult("rejected", {"error": "X"}).breaker_verdict == "success"
    assert HttpResult("throttled").breaker_verdict == "neutral"
    assert HttpResult("pending").breaker_verdict == "success"  # the partner is up, and working on it
    assert HttpResult("refused").breaker_verdict == "failure"
    assert HttpResult("unknown", {"error": "PARTNER_INTERNAL_ERROR"}).code == "PARTNER_INTERNAL_ERROR"
    assert HttpResult("unknown", {"error": 5}).code is None


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_s("3") == 3.0
    assert retry_after_s("Thu, 01 Jan 2026 12:00:07 GMT", now) == 7.0
    assert retry_after_s("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert retry_after_s("soon") is None and retry_after_s(None) is None and retry_after_s("") is None


def test_backoff_is_jittered_capped_and_never_shorter_than_retry_after() -> None:
    config = CallerConfig(endpoints={}, retry_base_s=0.2, retry_cap_s=5.0, retry_after_max_s=60.0)
    rng = random.Random(1)
    delays = [backoff_s(attempt, config, rng) for attempt in range(1, 12) for _ in range(50)]
    assert min(delays) >= 0 and max(delays) <= 5.0 and len(set(delays)) > 100
    assert all(backoff_s(1, config, rng) <= 0.2 for _ in range(100))
    honoured = [backoff_s(1, config, rng, retry_after=2.0) for _ in range(100)]
    assert all(2.0 <= d <= 2.4 for d in honoured) and len(set(honoured)) > 50
    assert backoff_s(1, config, rng, retry_after=3600) <= 72.0


# -- circuit breaker and throttle ------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_on_sustained_failures_probes_once_and_closes_on_success() -> None:
    clock = Clock()
    breaker = Breaker(BreakerConfig(window_s=10, calls_min=10, failure_ratio=0.5, open_s=2, open_max_s=8), clock)
    for _ in range(6):
        assert breaker.succeeded() is None
    transitions = [breaker.failed() for _ in range(6)]
    assert transitions[:5] == [None] * 5 and transitions[5] == ("closed", "open")  # 6 of 12 failed
    assert breaker.acquire() == (False, None) and breaker.wait_s() == 2
    clock.now += 2
    assert breaker.acquire() == (True, ("open", "half_open"))
    assert breaker.acquire() == (False, None) and breaker.wait_s() == NEVER  # one probe at a time
    assert breaker.failed() == ("half_open", "open") and breaker.wait_s() == 4  # the pause doubles
    clock.now += 4
    assert breaker.acquire()[0]
    breaker.released()  # a 429 on the probe: neither verdict, another probe may go
    assert breaker.acquire() == (True, None)
    assert breaker.succeeded() == ("half_open", "closed")
    assert breaker.acquire() == (True, None) and breaker.opened == 2


def test_breaker_forgets_failures_outside_its_window_and_needs_enough_calls() -> None:
    clock = Clock()
    breaker = Breaker(BreakerConfig(window_s=10, calls_min=10, failure_ratio=0.5), clock)
    for _ in range(9):
        assert breaker.failed() is None  # 9 calls: too few to judge
    clock.now += 11
    for _ in range(9):
        assert breaker.failed() is None  # the first nine left the window
    assert breaker.failed() == ("closed", "open")
    assert breaker.counts() == (0, 0)


def test_throttle_holds_until_the_latest_retry_after() -> None:
    clock = Clock()
    throttle = Throttle(clock)
    assert throttle.wait_s() == 0
    throttle.hold(3)
    throttle.hold(1)
    assert throttle.wait_s() == 3
    clock.now += 3
    assert throttle.wait_s() == 0
