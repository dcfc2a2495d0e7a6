"""The chaos run's checks on synthetic observations: each one passes on a consistent history and fails,
naming the payment, on a history with the defect it exists to catch (tests/chaos/run.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from payments.contracts.messages import PaymentInitiated, PaymentRefunded, PaymentSettled, SagaEvent, SettlementEvent
from payments.money import Money
from tests.chaos.run import Observed, Traffic, check_payments, check_settlements
from tests.support import make_initiate

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)
EUR = Money(amount_minor=1250, currency="EUR")


def _common(payment_id: str, seq: int) -> dict[str, object]:
    return {"payment_id": payment_id, "event_id": str(uuid.uuid4()), "seq": seq, "occurred_at": NOW,
            "causation_id": str(uuid.uuid4())}


def _history(payment_id: str) -> list[SagaEvent]:
    return [PaymentInitiated(**_common(payment_id, 1), payer_account="acc-alice", payee_account="acc-bob",
                             amount=EUR, partner="simbank", idempotency_key="k", request_hash="h"),
            PaymentSettled(**_common(payment_id, 2), amount=EUR, partner="simbank", partner_reference="ref",
                           payer_account="acc-alice", payee_account="acc-bob")]


def _settlement(event: SagaEvent, kind: str = "SETTLEMENT", refund_id: str | None = None) -> SettlementEvent:
    return SettlementEvent(payment_id=event.payment_id, event_id=f"s-{event.event_id}", settled_at=NOW, amount=EUR,
                           payer_account="acc-alice", payee_account="acc-bob", partner="simbank",
                           partner_reference="ref", kind=kind, refund_id=refund_id)  # type: ignore[arg-type]


def _world() -> tuple[Traffic, Observed, str]:
    initiate = make_initiate()
    traffic = Traffic()
    traffic.initiates[initiate.payment_id] = initiate
    events = _history(initiate.payment_id)
    seen = Observed({initiate.payment_id: events}, [_settlement(events[1])], {initiate.payment_id: "SETTLED"}, [])
    return traffic, seen, initiate.payment_id


def test_a_consistent_history_passes_every_check() -> None:
    traffic, seen, _ = _world()
    assert all(check.ok for check in check_payments(traffic, seen) + check_settlements(seen))


def test_a_second_terminal_event_is_a_duplicate_and_names_the_payment() -> None:
    traffic, seen, pid = _world()
    settled = seen.events[pid][1]
    seen.events[pid].append(settled.model_copy(update={"seq": 3, "event_id": str(uuid.uuid4())}))
    failed = [c for c in check_payments(traffic, seen) if not c.ok]
    assert [c.name for c in failed] == ["exactly one terminal state per payment"]
    assert failed[0].payments == [pid] and failed[0].duplicated == 1


def test_a_gap_in_the_numbering_and_a_status_that_disagrees_fail() -> None:
    traffic, seen, pid = _world()
    seen.events[pid][1] = seen.events[pid][1].model_copy(update={"seq": 3})
    seen.statuses[pid] = "FAILED"
    failed = {c.name for c in check_payments(traffic, seen) if not c.ok}
    assert failed == {"events numbered 1..n, no event id twice", "status row agrees with the events"}


def test_a_payment_never_seen_is_lost() -> None:
    traffic, seen, _ = _world()
    other = make_initiate()
    traffic.initiates[other.payment_id] = other
    check = next(c for c in check_payments(traffic, seen) if c.name == "every payment has events")
    assert not check.ok and check.lost == 1 and check.payments == [other.payment_id]


def test_missing_extra_and_refund_settlement_events_are_counted() -> None:
    _, seen, pid = _world()
    settled = seen.events[pid][1]
    assert check_settlements(seen)[0].ok
    seen.settlements.append(_settlement(settled))  # the same settlement published twice
    doubled = check_settlements(seen)[0]
    assert not doubled.ok and doubled.duplicated == 1 and doubled.payments == [pid]
    refund = PaymentRefunded(**_common(pid, 3), refund_id="r1", amount=EUR, refunded_total=EUR)
    seen.events[pid].append(refund)
    seen.settlements = [_settlement(settled)]
    missing = check_settlements(seen)[0]
    assert not missing.ok and missing.lost == 1
    seen.settlements.append(_settlement(refund, "REFUND", "r1"))
    assert check_settlements(seen)[0].ok
