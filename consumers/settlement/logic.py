"""Settlement publisher: exactly one SettlementEvent per settlement and per refund, on payments.settlements.

Input: payments.events (key payment id). PaymentSettled -> SettlementEvent(kind SETTLEMENT);
PaymentRefunded -> SettlementEvent(kind REFUND, refund_id). The event id is uuid5 of the source
event id, and the state per payment remembers which source events were published, so a redelivered
or replayed saga event publishes nothing new. Exactly-once on the output topic itself comes from the
processor's transaction (the event, the state snapshot and the consumed offset commit together).

A refund needs the settlement's parties and partner reference, which PaymentRefunded does not carry,
so the state also keeps the facts of the PaymentSettled event (same payment, same partition, earlier
in the log). A refund whose settlement was never seen cannot be published; it is left unpublished
(not marked), which cannot happen while the orchestrator only refunds settled payments.

Retention: a payment's state is deleted `refund_window + retention` after its last settlement event
(the orchestrator takes refunds only within the refund window). An event older than that, read again
(a consumer group reset, say), was published when it was new and is skipped, not published twice.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import ClassVar

from pydantic import BaseModel

from consumers.ids import derived_event_id
from payments.contracts.envelope import Envelope
from payments.contracts.events import PaymentRefunded, PaymentSettled
from payments.contracts.messages import Message
from payments.contracts.settlements import SettlementEvent
from payments.contracts.topics import EVENTS, SETTLEMENTS
from payments.runtime.logic import STATE_CONFIG, Decision, Forgets, Incoming, JsonState, Outgoing

SERVICE = "settlement"
REFUND_WINDOW = timedelta(days=90)  # orchestrator.config.SagaConfig.refund_window: the same setting
RETENTION = timedelta(days=7)


class SettledFacts(BaseModel):
    model_config = STATE_CONFIG

    payer_account: str
    payee_account: str
    partner: str
    partner_reference: str


class SettlementState(BaseModel):
    model_config = STATE_CONFIG

    published: tuple[str, ...] = ()  # source event ids already published, in order
    settled: SettledFacts | None = None
    last_at: datetime | None = None  # occurred_at of the last event published (retention counts from it)


def settlement_event_id(source_event_id: str) -> str:
    return derived_event_id("settlement", source_event_id)


class SettlementPublisherLogic(JsonState[SettlementState], Forgets[SettlementState]):
    state_model = SettlementState
    service: ClassVar[str] = SERVICE
    input_topics: ClassVar[tuple[str, ...]] = (EVENTS,)
    output_topics: ClassVar[tuple[str, ...]] = (SETTLEMENTS,)

    def __init__(self, refund_window: timedelta = REFUND_WINDOW, retention: timedelta = RETENTION) -> None:
        self.kept_for = refund_window + retention

    def forget_at(self, state: SettlementState) -> datetime | None:
        return None if state.last_at is None else state.last_at + self.kept_for

    def key_of(self, message: Message, envelope: Envelope) -> str:
        return message.payment_id

    def decide(self, state: SettlementState | None, incoming: Incoming,
               now: datetime) -> Decision[SettlementState]:
        event = incoming.message
        if not isinstance(event, PaymentSettled | PaymentRefunded):
            return Decision(state)  # other saga events are not settlements
        if state is None and event.occurred_at <= now - self.kept_for:
            return Decision(state)  # published when it was new; its state has been forgotten since
        current = state or SettlementState()
        if event.event_id in current.published:
            return Decision(current)
        if isinstance(event, PaymentSettled):
            facts = SettledFacts(payer_account=event.payer_account, payee_account=event.payee_account,
                                 partner=event.partner, partner_reference=event.partner_reference)
            published = SettlementEvent(
                payment_id=event.payment_id, event_id=settlement_event_id(event.event_id),
                settled_at=event.occurred_at, amount=event.amount, kind="SETTLEMENT", **facts.model_dump())
            current = current.model_copy(update={"settled": facts})
        else:
            if current.settled is None:
                return Decision(state)
            published = SettlementEvent(
                payment_id=event.payment_id, event_id=settlement_event_id(event.event_id),
                settled_at=event.occurred_at, amount=event.amount, kind="REFUND", refund_id=event.refund_id,
                **current.settled.model_dump())
        current = current.model_copy(update={"published": (*current.published, event.event_id),
                                             "last_at": max(event.occurred_at, current.last_at or event.occurred_at)})
        return Decision(current, (Outgoing(SETTLEMENTS, event.payment_id, published),))
