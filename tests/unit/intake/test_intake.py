"""The intake's three hops, pure: the router's repartitioning, the gate's per-payment order and claims, and
the idempotency service's per-client keys."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from intake.errors import HeldCommandError, IntakeConfigError, IntakeError, UnknownCommandError
from intake.gate import GateConfig, GateLogic, GateState, Held
from intake.idempotency import IdempotencyConfig, IdempotencyLogic, Remembered
from intake.router import IntakeRouterLogic
from intake.scope import request_hash, scope_key
from payments.contracts.base import Command
from payments.contracts.commands import CancelPayment, InitiatePayment, RefundPayment
from payments.contracts.envelope import Envelope
from payments.contracts.events import PaymentSettled
from payments.contracts.intake import DuplicateCommand, KeyClaim, KeyClaimResult
from payments.contracts.messages import Message
from payments.contracts.topics import COMMANDS, INTAKE_CLAIM_RESULTS, INTAKE_CLAIMS, INTAKE_COMMANDS
from payments.money import Money
from payments.runtime.logic import Decision, Incoming, InputRejected

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
PAYMENT = "5b0c3e52-6a5e-4e8e-9a57-2f2b1c7c2a10"


def initiate(key: str = "order-1", payment_id: str = PAYMENT, amount: int = 1250,
             **changes: object) -> InitiatePayment:
    fields: dict[str, object] = {
        "command_id": str(uuid.uuid4()), "idempotency_key": key, "payment_id": payment_id,
        "payer_account": "acc-a", "payee_account": "acc-b", "amount": Money.of(amount, "EUR"), "partner": "simbank",
        "reference": "invoice 7", "requested_at": T0}
    fields.update(changes)
    return InitiatePayment.model_validate(fields)


def cancel(key: str = "cancel-1", payment_id: str = PAYMENT) -> CancelPayment:
    return CancelPayment(payment_id=payment_id, command_id=str(uuid.uuid4()), idempotency_key=key, reason="oops")


def refund(key: str, payment_id: str = PAYMENT, amount: int = 500) -> RefundPayment:
    return RefundPayment(payment_id=payment_id, command_id=str(uuid.uuid4()), idempotency_key=key,
                         refund_id=str(uuid.uuid4()), amount=Money.of(amount, "EUR"), reason="returned")


def incoming(message: Message, topic: str, source: str = "billing") -> Incoming:
    envelope = Envelope(id=message.message_id, type=message.AVRO_NAME, source=source, time=T0,
                        content_type="application/avro", traceparent="00-abc-def-01")
    return Incoming(topic=topic, partition=0, offset=0, key=message.payment_id, message=message, envelope=envelope)


# -- router -----------------------------------------------------------------------------------------


def test_the_router_forwards_each_command_unchanged_keyed_by_payment_id_with_its_envelope() -> None:
    command = initiate()
    decision = IntakeRouterLogic().decide(None, incoming(command, COMMANDS), T0)
    (out,) = decision.outgoing
    assert (out.destination, out.key, out.message) == (INTAKE_COMMANDS, command.payment_id, command)
    assert out.envelope is not None and (out.envelope.source, out.envelope.traceparent) == ("billing", "00-abc-def-01")
    assert decision.state is None


def test_the_router_stamps_the_records_publish_time_and_never_takes_upstreams_own() -> None:
    from dataclasses import replace

    from payments.contracts.envelope import forwarded_headers, parse_headers

    command = initiate()
    claimed = replace(incoming(command, COMMANDS).envelope, published_at=T0 - timedelta(days=3))  # upstream says so
    published_ms = int((T0 - timedelta(seconds=2)).timestamp() * 1000)
    stamped = IntakeRouterLogic().decide(None, replace(incoming(command, COMMANDS), envelope=claimed,
                                                       timestamp_ms=published_ms), T0)
    (out,) = stamped.outgoing
    assert out.envelope is not None and out.envelope.published_at == T0 - timedelta(seconds=2)
    # Carried on the internal topics in its header, read back as it was written.
    headers = forwarded_headers(out.envelope, command, content_type="application/avro")
    assert parse_headers(headers).published_at == T0 - timedelta(seconds=2)
    (untimed,) = IntakeRouterLogic().decide(None, replace(incoming(command, COMMANDS), envelope=claimed), T0).outgoing
    assert untimed.envelope is not None and untimed.envelope.published_at is None
    # A malformed header is ignored, never a reason to refuse the record.
    broken = [(name, value) for name, value in headers if name != "payments_published_at"]
    assert parse_headers([*broken, ("payments_published_at", b"yesterday")]).published_at is None


def test_the_gate_keeps_the_publish_time_of_a_command_it_holds() -> None:
    from dataclasses import replace

    envelope = replace(incoming(initiate(), COMMANDS).envelope, published_at=T0)
    assert Held.of(initiate(), envelope).envelope().published_at == T0


def test_the_router_rejects_a_record_that_is_not_a_command() -> None:
    event = PaymentSettled(payment_id="p", event_id="e", seq=1, occurred_at=T0, causation_id="c",
                           amount=Money.of(1, "EUR"), partner="simbank", partner_reference="r", payer_account="a",
                           payee_account="b")
    with pytest.raises(InputRejected) as rejected:
        IntakeRouterLogic().decide(None, incoming(event, COMMANDS), T0)
    assert rejected.value.reason_code == "unexpected_message_type"


# -- gate -------------------------------------------------------------------------------------------


class Gate:
    """One payment's gate, driven like the loop drives it."""

    def __init__(self) -> None:
        self.logic = GateLogic(GateConfig(claim_retry=timedelta(seconds=10)))
        self.state: GateState | None = None
        self.now = T0

    def take(self, message: Message, topic: str = INTAKE_COMMANDS, source: str = "billing") -> list[Message]:
        decision = self.logic.decide(self.state, incoming(message, topic, source), self.now)
        self.state = decision.state
        return [out.message for out in decision.outgoing]

    def answer(self, claim: KeyClaim, verdict: str = "GRANTED", original: Command | None = None) -> list[Message]:
        first = original or claim
        result = KeyClaimResult(payment_id=claim.payment_id, command_id=claim.command_id, verdict=verdict,  # type: ignore[arg-type]
                                original_payment_id=first.payment_id, original_command_id=first.command_id,
                                first_seen_at=T0)
        return self.take(result, INTAKE_CLAIM_RESULTS)


def test_the_gate_claims_a_command_key_and_admits_it_unchanged_when_granted() -> None:
    gate = Gate()
    command = initiate()
    (claim,) = gate.take(command)
    assert isinstance(claim, KeyClaim)
    assert (claim.source, claim.idempotency_key, claim.request_hash) == ("billing", "order-1", request_hash(command))
    assert gate.logic.decide(None, incoming(command, INTAKE_COMMANDS), T0).outgoing[0].key == \
        scope_key("billing", "order-1")
    assert gate.answer(claim) == [command]
    assert gate.state is None  # nothing held once nothing is in flight


def test_commands_arriving_during_a_claim_wait_and_go_on_in_order() -> None:
    gate = Gate()
    first, second, third = initiate(), cancel(), refund("refund-1")
    (claim,) = gate.take(first)
    assert gate.take(second) == [] and gate.take(third) == []  # parked behind the claim
    out = gate.answer(claim)
    assert out[0] == first and isinstance(out[1], KeyClaim) and out[1].command_id == second.command_id
    out = gate.answer(out[1])  # type: ignore[arg-type]
    assert out[0] == second and isinstance(out[1], KeyClaim) and out[1].command_id == third.command_id
    assert gate.answer(out[1]) == [third]  # type: ignore[arg-type]
    assert gate.state is None


def test_a_duplicate_is_admitted_as_a_notice_naming_the_original() -> None:
    gate = Gate()
    original = initiate(payment_id="other-payment")
    retry = initiate()
    (claim,) = gate.take(retry)
    (notice,) = gate.answer(claim, "SAME_REQUEST", original)  # type: ignore[arg-type]
    assert isinstance(notice, DuplicateCommand)
    assert (notice.payment_id, notice.verdict, notice.original_payment_id, notice.source) == (
        retry.payment_id, "SAME_REQUEST", "other-payment", "billing")


def test_a_late_second_answer_is_ignored_and_an_overdue_claim_is_sent_again() -> None:
    gate = Gate()
    command = initiate()
    (claim,) = gate.take(command)
    assert gate.state is not None and gate.logic.next_deadline(gate.state) == T0 + timedelta(seconds=10)
    resent = gate.logic.fire_timers(PAYMENT, gate.state, T0 + timedelta(seconds=10))
    assert [type(m.message) for m in resent.outgoing] == [KeyClaim] and resent.state is not None
    assert resent.state.claim_sent_at == T0 + timedelta(seconds=10)
    assert gate.answer(claim) == [command]
    assert gate.answer(claim) == []  # the re-sent claim's answer arrives too: already settled


def test_a_command_without_a_usable_key_is_admitted_in_its_place_without_a_claim() -> None:
    gate = Gate()
    keyless = initiate(key="")
    assert gate.take(keyless) == [keyless] and gate.state is None
    keyed, behind = initiate(), initiate(key="")
    (claim,) = gate.take(keyed)
    assert gate.take(behind) == []  # still waits its turn behind the claim
    assert gate.answer(claim) == [keyed, behind]


# -- idempotency ------------------------------------------------------------------------------------


def claim_of(command: Command, source: str = "billing") -> KeyClaim:
    return KeyClaim(payment_id=command.payment_id, command_id=command.command_id, source=source,
                    idempotency_key=command.idempotency_key,
                    command_type=type(command).__name__,  # type: ignore[arg-type]
                    request_hash=request_hash(command),
                    refund_id=command.refund_id if isinstance(command, RefundPayment) else None, claimed_at=T0)


def claim(state: Remembered | None, command: Command, at: datetime = T0, source: str = "billing",
          window: timedelta = timedelta(hours=24)) -> tuple[Decision[Remembered], KeyClaimResult]:
    decision = IdempotencyLogic(IdempotencyConfig(window)).decide(
        state, incoming(claim_of(command, source), INTAKE_CLAIMS, source), at)
    (out,) = decision.outgoing
    assert out.destination == INTAKE_CLAIM_RESULTS and out.key == command.payment_id
    assert isinstance(out.message, KeyClaimResult)
    return decision, out.message


def test_the_first_claim_is_granted_and_a_resent_claim_for_the_same_command_too() -> None:
    command = initiate()
    decision, result = claim(None, command)
    assert result.verdict == "GRANTED" and decision.state is not None
    again, result = claim(decision.state, command, T0 + timedelta(minutes=1))
    assert result.verdict == "GRANTED" and again.state is decision.state


def test_a_retry_with_a_new_payment_id_is_the_same_request_and_another_request_is_a_reused_key() -> None:
    first = initiate()
    remembered = claim(None, first)[0].state
    retry = initiate(payment_id=str(uuid.uuid4()), metadata={"attempt": "2"})
    decision, result = claim(remembered, retry)
    assert (result.verdict, result.original_payment_id, result.original_command_id) == (
        "SAME_REQUEST", first.payment_id, first.command_id)
    assert decision.state is remembered  # unchanged: no snapshot written
    assert claim(remembered, initiate(amount=1300))[1].verdict == "KEY_REUSED"
    assert claim(remembered, cancel(key="order-1"))[1].verdict == "KEY_REUSED"  # a key is one request, one type


def test_keys_are_scoped_per_client() -> None:
    logic = IdempotencyLogic()
    command = initiate()
    envelope = incoming(command, INTAKE_CLAIMS).envelope
    assert logic.key_of(claim_of(command, "billing"), envelope) != logic.key_of(claim_of(command, "checkout"), envelope)
    assert scope_key("a", "bc") != scope_key("ab", "c")  # no ambiguity between source and key
    remembered = claim(None, command, source="billing")[0].state
    assert remembered is not None and remembered.source == "billing"


def test_after_the_window_a_key_is_new_again_and_its_timer_forgets_it() -> None:
    window = timedelta(hours=1)
    logic = IdempotencyLogic(IdempotencyConfig(window))
    remembered = claim(None, initiate(), window=window)[0].state
    assert remembered is not None and logic.next_deadline(remembered) == T0 + window
    assert logic.fire_timers("k", remembered, T0 + timedelta(minutes=59)).state is remembered
    assert logic.fire_timers("k", remembered, T0 + window).state is None  # tombstoned
    later = initiate(amount=999, payment_id=str(uuid.uuid4()))
    decision, result = claim(remembered, later, T0 + timedelta(hours=2), window=window)
    assert result.verdict == "GRANTED" and decision.state is not None
    assert decision.state.payment_id == later.payment_id


def test_a_refund_retry_with_a_new_refund_id_names_the_original_refund() -> None:
    first = refund("refund-key")
    remembered = claim(None, first)[0].state
    result = claim(remembered, refund("refund-key"))[1]
    assert (result.verdict, result.original_refund_id) == ("SAME_REQUEST", first.refund_id)


def test_what_makes_a_request_the_same() -> None:
    base = initiate()
    assert request_hash(base) == request_hash(initiate(payment_id=str(uuid.uuid4()), metadata={"x": "y"}))
    for changed in ({"amount": Money.of(1251, "EUR")}, {"payee_account": "acc-c"}, {"partner": "other"},
                    {"reference": None}, {"amount": Money.of(1250, "USD")}):
        assert request_hash(base) != request_hash(base.model_copy(update=changed)), changed


# -- errors ------------------------------------------------------------------------------------------


def test_the_intake_raises_its_own_errors_under_its_own_root() -> None:
    with pytest.raises(IntakeConfigError, match="must be positive") as raised:
        IdempotencyConfig(timedelta(0))
    assert isinstance(raised.value, IntakeError)


def test_a_command_type_without_a_request_identity_cannot_be_claimed() -> None:
    class Unruled(Command):  # no AVRO_NAME: registers nowhere, stands for a command added to the contracts
        pass

    command = Unruled(payment_id=PAYMENT, command_id="c-1", idempotency_key="k-1")
    with pytest.raises(UnknownCommandError, match="Unruled"):  # the loop dead-letters the command with it
        request_hash(command)


def test_a_gate_state_holding_a_record_that_is_no_command_is_refused_by_name() -> None:
    held = Held.of(initiate(), incoming(initiate(), INTAKE_COMMANDS).envelope)
    for foreign in (PaymentSettled.AVRO_NAME, "payments.Unheard"):
        with pytest.raises(HeldCommandError, match=foreign):
            held.model_copy(update={"avro_name": foreign}).command()
    assert held.command().command_id == json.loads(held.body)["command_id"]
