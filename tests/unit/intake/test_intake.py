"""The intake's two hops, pure: the router's repartitioning and the dedupe's per-client idempotency."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from intake.dedupe import DedupeConfig, DedupeLogic, Remembered
from intake.router import IntakeRouterLogic
from intake.scope import request_hash, scope_key, unscoped_key
from payments.contracts.commands import CancelPayment, InitiatePayment, RefundPayment
from payments.contracts.envelope import Envelope
from payments.contracts.events import PaymentSettled
from payments.contracts.intake import DuplicateCommand
from payments.contracts.messages import Message
from payments.contracts.topics import ADMITTED, COMMANDS, INTAKE_REQUESTS
from payments.money import Money
from payments.runtime.logic import Decision, Incoming, InputRejected

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def initiate(key: str = "order-1", payment_id: str | None = None, amount: int = 1250,
             **changes: object) -> InitiatePayment:
    fields: dict[str, object] = {
        "command_id": str(uuid.uuid4()), "idempotency_key": key, "payment_id": payment_id or str(uuid.uuid4()),
        "payer_account": "acc-a", "payee_account": "acc-b", "amount": Money.of(amount, "EUR"), "partner": "simbank",
        "reference": "invoice 7", "requested_at": T0}
    fields.update(changes)
    return InitiatePayment.model_validate(fields)


def refund(key: str, payment_id: str, amount: int = 500) -> RefundPayment:
    return RefundPayment(payment_id=payment_id, command_id=str(uuid.uuid4()), idempotency_key=key,
                         refund_id=str(uuid.uuid4()), amount=Money.of(amount, "EUR"), reason="returned")


def incoming(message: Message, topic: str, source: str = "billing") -> Incoming:
    envelope = Envelope(id=message.message_id, type=message.AVRO_NAME, source=source, time=T0,
                        content_type="application/avro", traceparent="00-abc-def-01")
    return Incoming(topic=topic, partition=0, offset=0, key=message.payment_id, message=message, envelope=envelope)


# -- router -----------------------------------------------------------------------------------------


def test_the_router_forwards_each_command_unchanged_keyed_by_its_client_and_idempotency_key() -> None:
    router = IntakeRouterLogic()
    command = initiate()
    decision = router.decide(None, incoming(command, COMMANDS), T0)
    (out,) = decision.outgoing
    assert (out.destination, out.key, out.message) == (INTAKE_REQUESTS, scope_key("billing", "order-1"), command)
    assert out.envelope is not None and (out.envelope.source, out.envelope.traceparent) == ("billing", "00-abc-def-01")
    assert decision.state is None


def test_scopes_are_per_client_and_ignore_the_payment_id() -> None:
    assert scope_key("billing", "k") != scope_key("checkout", "k")
    assert scope_key("a", "bc") != scope_key("ab", "c")  # no ambiguity between source and key
    router = IntakeRouterLogic()
    first, retry = initiate("k"), initiate("k")  # a retry that minted a new payment id
    keys = {router.decide(None, incoming(c, COMMANDS), T0).outgoing[0].key for c in (first, retry)}
    assert keys == {scope_key("billing", "k")}


def test_the_router_rejects_a_record_that_is_not_a_command_and_spreads_keyless_commands_by_payment() -> None:
    router = IntakeRouterLogic()
    event = PaymentSettled(payment_id="p", event_id="e", seq=1, occurred_at=T0, causation_id="c",
                           amount=Money.of(1, "EUR"), partner="simbank", partner_reference="r", payer_account="a",
                           payee_account="b")
    with pytest.raises(InputRejected) as rejected:
        router.decide(None, incoming(event, COMMANDS), T0)
    assert rejected.value.reason_code == "unexpected_message_type"
    keyless = initiate("  ")
    assert router.decide(None, incoming(keyless, COMMANDS), T0).outgoing[0].key == unscoped_key(keyless.payment_id)


# -- dedupe -----------------------------------------------------------------------------------------


def dedupe(state: Remembered | None, command: Message, at: datetime = T0, source: str = "billing",
           window: timedelta = timedelta(hours=24)) -> Decision[Remembered]:
    return DedupeLogic(DedupeConfig(window)).decide(state, incoming(command, INTAKE_REQUESTS, source), at)


def test_a_first_command_is_remembered_and_admitted_unchanged_with_its_envelope() -> None:
    command = initiate()
    decision = dedupe(None, command)
    (out,) = decision.outgoing
    assert (out.destination, out.key, out.message) == (ADMITTED, command.payment_id, command)
    assert out.envelope is not None and out.envelope.source == "billing"
    assert decision.state is not None
    assert (decision.state.payment_id, decision.state.first_seen_at) == (command.payment_id, T0)


def test_a_retry_with_a_new_payment_id_is_a_duplicate_naming_the_original_and_changes_nothing() -> None:
    first = initiate()
    remembered = dedupe(None, first).state
    retry = initiate(payment_id=str(uuid.uuid4()), metadata={"attempt": "2"}, reference="invoice 7")
    decision = dedupe(remembered, retry, T0 + timedelta(minutes=5))
    (out,) = decision.outgoing
    assert isinstance(out.message, DuplicateCommand) and (out.destination, out.key) == (ADMITTED, retry.payment_id)
    assert (out.message.verdict, out.message.original_payment_id, out.message.original_command_id) == (
        "SAME_REQUEST", first.payment_id, first.command_id)
    assert decision.state is remembered  # unchanged: no snapshot is written


def test_another_request_under_a_used_key_is_key_reused() -> None:
    remembered = dedupe(None, initiate(amount=1250)).state
    (out,) = dedupe(remembered, initiate(amount=1300)).outgoing
    assert isinstance(out.message, DuplicateCommand) and out.message.verdict == "KEY_REUSED"
    cancel = CancelPayment(payment_id=str(uuid.uuid4()), command_id=str(uuid.uuid4()), idempotency_key="order-1",
                           reason="oops")
    (out,) = dedupe(remembered, cancel).outgoing  # a key is for one request, of one type
    assert isinstance(out.message, DuplicateCommand) and (out.message.verdict, out.message.command_type) == (
        "KEY_REUSED", "CancelPayment")


def test_the_same_key_from_another_client_is_another_scope() -> None:
    logic = DedupeLogic()
    command = initiate()
    assert logic.key_of(command, incoming(command, INTAKE_REQUESTS, "billing").envelope) != \
        logic.key_of(command, incoming(command, INTAKE_REQUESTS, "checkout").envelope)


def test_after_the_window_a_key_is_new_again_and_its_timer_forgets_it() -> None:
    logic = DedupeLogic(DedupeConfig(timedelta(hours=1)))
    remembered = dedupe(None, initiate(), window=timedelta(hours=1)).state
    assert remembered is not None
    assert logic.next_deadline(remembered) == T0 + timedelta(hours=1)
    assert logic.fire_timers("k", remembered, T0 + timedelta(minutes=59)).state is remembered
    assert logic.fire_timers("k", remembered, T0 + timedelta(hours=1)).state is None  # tombstoned
    later = initiate(amount=999)
    decision = dedupe(remembered, later, T0 + timedelta(hours=2), window=timedelta(hours=1))
    assert decision.outgoing[0].message == later and decision.state is not None
    assert decision.state.payment_id == later.payment_id


def test_a_refund_retry_with_a_new_refund_id_names_the_original_refund() -> None:
    payment = str(uuid.uuid4())
    first = refund("refund-key", payment)
    remembered = dedupe(None, first).state
    (out,) = dedupe(remembered, refund("refund-key", payment)).outgoing
    assert isinstance(out.message, DuplicateCommand)
    assert (out.message.verdict, out.message.original_refund_id) == ("SAME_REQUEST", first.refund_id)


def test_a_command_without_a_usable_key_is_admitted_without_state_for_the_saga_to_reject() -> None:
    for key in ("", "   ", "k" * 256):
        command = initiate(key)
        decision = dedupe(None, command)
        assert decision.state is None and decision.outgoing[0].message == command


def test_what_makes_a_request_the_same() -> None:
    base = initiate()
    assert request_hash(base) == request_hash(initiate(payment_id=str(uuid.uuid4()), metadata={"x": "y"}))
    for changed in ({"amount": Money.of(1251, "EUR")}, {"payee_account": "acc-c"}, {"partner": "other"},
                    {"reference": None}, {"amount": Money.of(1250, "USD")}):
        assert request_hash(base) != request_hash(base.model_copy(update=changed)), changed
