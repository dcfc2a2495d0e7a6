from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from consumers.settlement.logic import SettlementPublisherLogic, SettlementState, settlement_event_id
from payments.contracts.base import SagaEvent
from payments.contracts.events import PaymentFailed, PaymentRefunded, PaymentSettled
from payments.contracts.settlements import SettlementEvent
from payments.money import Money
from tests.unit.consumers.helpers import NOW, incoming

EVENTS = "payments.events"


def settled(seq: int = 5) -> PaymentSettled:
    return PaymentSettled(payment_id="pay-1", event_id=str(uuid.uuid4()), seq=seq, occurred_at=NOW,
                          causation_id="c", amount=Money.of(1250, "EUR"), partner="simbank",
                          partner_reference="SIM-1", payer_account="acc-alice", payee_account="acc-bob")


def refunded(refund_id: str = "r-1", minor: int = 250, seq: int = 6) -> PaymentRefunded:
    return PaymentRefunded(payment_id="pay-1", event_id=str(uuid.uuid4()), seq=seq, occurred_at=NOW,
                           causation_id="c", refund_id=refund_id, amount=Money.of(minor, "EUR"),
                           refunded_total=Money.of(minor, "EUR"))


def publish(logic: SettlementPublisherLogic, state: SettlementState | None,
            event: SagaEvent) -> tuple[SettlementState | None, list[SettlementEvent]]:
    decision = logic.decide(state, incoming(event, EVENTS), NOW)
    out = []
    for outgoing in decision.outgoing:
        assert outgoing.destination == "payments.settlements" and outgoing.key == "pay-1"
        assert isinstance(outgoing.message, SettlementEvent)
        out.append(outgoing.message)
    return decision.state, out


def test_settled_payment_publishes_one_settlement_event() -> None:
    logic = SettlementPublisherLogic()
    event = settled()
    _, out = publish(logic, None, event)
    assert out == [SettlementEvent(payment_id="pay-1", event_id=settlement_event_id(event.event_id), settled_at=NOW,
                                   amount=Money.of(1250, "EUR"), payer_account="acc-alice", payee_account="acc-bob",
                                   partner="simbank", partner_reference="SIM-1", kind="SETTLEMENT")]


def test_refund_publishes_a_refund_event_with_the_settlement_parties() -> None:
    logic = SettlementPublisherLogic()
    state, _ = publish(logic, None, settled())
    event = refunded()
    state, out = publish(logic, state, event)
    (refund,) = out
    assert (refund.kind, refund.refund_id, refund.amount, refund.partner_reference, refund.payer_account) == (
        "REFUND", "r-1", Money.of(250, "EUR"), "SIM-1", "acc-alice")
    assert refund.event_id == settlement_event_id(event.event_id)
    assert state is not None and logic.decode_state(logic.encode_state(state)) == state


def test_redelivered_events_publish_nothing_new() -> None:
    logic = SettlementPublisherLogic()
    settle, refund = settled(), refunded()
    state, _ = publish(logic, None, settle)
    state, _ = publish(logic, state, refund)
    for event in (settle, refund):
        again, out = publish(logic, state, event)
        assert out == [] and again == state


def test_other_events_and_orphan_refunds_publish_nothing() -> None:
    logic = SettlementPublisherLogic()
    failed = PaymentFailed(payment_id="pay-1", event_id="e", seq=3, occurred_at=NOW, causation_id="c",
                           stage="RISK", reason_code="X", detail="d")
    assert publish(logic, None, failed) == (None, [])
    assert publish(logic, None, refunded()) == (None, [])


@given(st.lists(st.integers(0, 3), max_size=30))
def test_any_redelivery_order_publishes_each_source_event_exactly_once(picks: list[int]) -> None:
    logic = SettlementPublisherLogic()
    events: list[SagaEvent] = [settled(), refunded("r-1", 100, 6), refunded("r-2", 200, 7), refunded("r-3", 300, 8)]
    state: SettlementState | None = None
    published: list[SettlementEvent] = []
    for index in [0, *picks, 1, 2, 3]:  # the settlement first, as the log orders it; then redeliveries
        state, out = publish(logic, state, events[index])
        published += out
    assert sorted(e.event_id for e in published) == sorted(settlement_event_id(e.event_id) for e in events)
