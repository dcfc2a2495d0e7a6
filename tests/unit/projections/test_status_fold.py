"""PaymentStatusFold: the payment_status and payment_timeline rows as a pure fold of saga events."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from payments.contracts.events import (
    CompensationFailed,
    FundsReleased,
    FundsReserved,
    ParticipantCommandIssued,
    PartnerDeclined,
    PaymentCancelled,
    PaymentFailed,
    PaymentInitiated,
    PaymentRefunded,
    PaymentRejected,
    RefundRejected,
    RiskAssessed,
    SubmittedToPartner,
)
from payments.contracts.messages import Message
from payments.money import Money
from projections.replay import checksum
from projections.runner import RecordMeta
from projections.status import PaymentStatusFold, StatusRow, TimelineRow
from tests.unit.projections.events import T0, committed, initiated, settled

META = RecordMeta("payments.events", 0, 0, 0)


def _base(payment_id: str, seq: int) -> dict[str, Any]:
    return {"payment_id": payment_id, "event_id": f"{payment_id}:{seq}", "seq": seq,
            "occurred_at": T0 + timedelta(seconds=seq), "causation_id": str(uuid.uuid4())}


def rejected(payment_id: str, seq: int, code: str = "AMOUNT_OVER_LIMIT") -> PaymentRejected:
    return PaymentRejected(**_base(payment_id, seq), reason_code=code, detail="no", idempotency_key="k")


def status_lifecycle(index: int) -> list[Message]:
    """One payment's events covering every rule of the status projection, varied by `index`."""
    pid = str(uuid.uuid4())
    eur = Money(amount_minor=100 + index, currency="EUR")
    start = [initiated(pid, 100 + index).model_copy(update=_base(pid, 1)),
             RiskAssessed(**_base(pid, 2), score_bp=10, decision="APPROVE", reasons=[], model_version="m1"),
             FundsReserved(**_base(pid, 3), hold_id="h", amount=eur),
             SubmittedToPartner(**_base(pid, 4), partner="simbank", attempt=1, submission_id="s")]
    match index % 6:
        case 0:  # settled, a late cancel rejected, refunded, a refund rejected
            return [*start, committed(pid, 100 + index).model_copy(update=_base(pid, 5)),
                    settled(pid, 100 + index).model_copy(update=_base(pid, 6)),
                    rejected(pid, 7, "INVALID_STATE"),
                    PaymentRefunded(**_base(pid, 8), refund_id="r", amount=eur, refunded_total=eur),
                    RefundRejected(**_base(pid, 9), refund_id="r2", reason_code="REFUND_EXCEEDS_SETTLED")]
        case 1:  # partner declined: released, failed with a reason code
            return [*start, PartnerDeclined(**_base(pid, 5), partner="simbank", reason_code="P01", detail="d"),
                    FundsReleased(**_base(pid, 6), hold_id="h", amount=eur, reason="declined"),
                    PaymentFailed(**_base(pid, 7), stage="PARTNER", reason_code="P01", detail="d")]
        case 2:  # refused at intake
            return [rejected(pid, 1)]
        case 3:  # a command for a payment that did not exist yet, then the payment
            return [rejected(pid, 1, "UNKNOWN_PAYMENT"),
                    initiated(pid, 100 + index).model_copy(update=_base(pid, 2))]
        case 4:  # cancelled after a compensating release
            return [*start, ParticipantCommandIssued(**_base(pid, 5), step="FUNDS_RELEASE", attempt=1,
                                                     command_id="c", reason="CANCEL_REQUESTED", detail="x"),
                    FundsReleased(**_base(pid, 6), hold_id="h", amount=eur, reason="cancel"),
                    PaymentCancelled(**_base(pid, 7), reason="customer")]
        case _:  # compensation kept failing
            return [*start, PartnerDeclined(**_base(pid, 5), partner="simbank", reason_code="P02", detail="d"),
                    CompensationFailed(**_base(pid, 6), step="FUNDS_RELEASE", attempts=5, detail="down")]


def fold(events: list[Message]) -> PaymentStatusFold:
    result = PaymentStatusFold()
    for event in events:
        result.apply(event, META)
    return result


def test_initiated_creates_the_row_and_later_events_move_it():
    events = status_lifecycle(0)
    row = fold(events).status[events[0].payment_id]
    assert (row.status, row.last_seq, row.last_event_type) == ("REFUNDED", 8, "PaymentRefunded")
    assert (row.payer_account, row.amount_minor, row.currency, row.partner) == ("alice", 100, "EUR", "simbank")
    assert row.created_at == T0 + timedelta(seconds=1) and row.updated_at == T0 + timedelta(seconds=8)
    assert len(fold(events).timeline) == 9  # rejections and timeline-only events are on the timeline


def test_reason_code_is_set_by_an_event_that_has_one_and_kept_by_later_ones():
    events = status_lifecycle(1)
    row = fold(events).status[events[0].payment_id]
    assert (row.status, row.reason_code) == ("FAILED", "P01")
    row = fold(status_lifecycle(5)).status.popitem()[1]
    assert (row.status, row.reason_code) == ("COMPENSATION_FAILED", "P02")


def test_a_rejection_creates_a_row_only_at_intake_and_never_for_an_unknown_payment():
    intake = status_lifecycle(2)
    row = fold(intake).status[intake[0].payment_id]
    assert (row.status, row.reason_code, row.payer_account, row.amount_minor) == (
        "REJECTED", "AMOUNT_OVER_LIMIT", None, None)
    unknown = status_lifecycle(3)
    assert fold(unknown[:1]).status == {}
    row = fold(unknown).status[unknown[0].payment_id]
    assert (row.status, row.last_seq) == ("INITIATED", 2)


def test_a_rejection_never_changes_an_existing_row():
    events = status_lifecycle(0)
    row = fold(events[:6] + events[6:7]).status[events[0].payment_id]
    assert (row.status, row.last_seq, row.reason_code) == ("SETTLED", 6, None)


def test_a_replayed_event_is_a_no_op_and_a_lower_seq_never_moves_the_row_back():
    events = status_lifecycle(1)
    once = fold(events)
    again = fold([*events, *events])
    assert {t: checksum(r) for t, r in again.rows().items()} == {t: checksum(r) for t, r in once.rows().items()}
    late = [*events[:3], *events[4:], events[3]]  # SubmittedToPartner arrives after the failure
    row = fold(late).status[events[0].payment_id]
    assert (row.status, row.last_seq) == ("FAILED", 7)
    assert len(fold(late).timeline) == len(events)


def test_a_preloaded_row_is_updated_only_by_new_events():
    events = status_lifecycle(4)
    full = fold(events)
    partial = fold(events[:4])
    resumed = PaymentStatusFold()
    resumed.status = dict(partial.status)
    resumed.seen = set(partial.seen)
    for event in events:
        resumed.apply(event, META)
    assert resumed.status == full.status
    assert set(resumed.timeline) == {e.event_id for e in events[4:]}  # type: ignore[attr-defined]
    assert resumed.changed == {events[0].payment_id}


def test_rows_carry_each_column_by_name():
    events = status_lifecycle(0)  # settled, refunded, then a refund rejected (which moves no status)
    first, refunded = events[0], events[7]
    assert isinstance(first, PaymentInitiated) and isinstance(refunded, PaymentRefunded)
    row = StatusRow(*fold(events).rows()["payment_status"][0])  # type: ignore[arg-type]
    assert (row.payment_id, row.payer_account, row.payee_account, row.amount_minor, row.currency, row.partner) == (
        first.payment_id, first.payer_account, first.payee_account, 100, "EUR", first.partner)
    assert (row.status, row.last_event_type, row.last_seq) == ("REFUNDED", "PaymentRefunded", refunded.seq)
    assert row.created_at == first.occurred_at and row.updated_at == refunded.occurred_at
    timeline = TimelineRow(*fold(events).rows()["payment_timeline"][0])  # type: ignore[arg-type]
    assert (timeline.event_id, timeline.event_type, timeline.seq) == (first.event_id, "PaymentInitiated", 1)
    assert timeline.detail["payer_account"] == first.payer_account
