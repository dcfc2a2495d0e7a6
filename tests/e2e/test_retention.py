"""Retention on real Kafka (docs/saga.md, "Retention"; docs/participants.md), with windows of seconds:
a refund inside the refund window works after the orchestrator and funds were killed and restored
(funds from its parts); after the window it is rejected REFUND_WINDOW_CLOSED; a duplicate initiate
after a restart keeps the original outcome; once the retention is over every service that keeps state by
payment tombstones the payment's, and the payment's old command can no longer start it again
(REQUEST_EXPIRED). (The risk service keeps state by account: its retention is tested in
tests/unit/consumers/test_risk.py.)"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from payments.contracts.commands import CancelPayment, RefundPayment
from payments.contracts.messages import (
    Message,
    PaymentInitiated,
    PaymentRefunded,
    PaymentRejected,
    PaymentSettled,
    RefundRejected,
)
from payments.money import Money
from tests.e2e.pipeline import Pipeline, start_pipeline
from tests.support import COMMAND_PATH, make_initiate, read_all, wait_for

pytestmark = pytest.mark.e2e

REFUND_WINDOW_S = 25  # the SIGKILLed orchestrator is back after ~12 s (the session timeout)
RETENTION_S = 20
SKEW_S = 2
PROCESSES = [["partner-sim"], *([name] for name in COMMAND_PATH), ["risk"], ["funds"], ["partner"], ["settlement"]]
ENV = {"PAYMENTS_REFUND_WINDOW_S": str(REFUND_WINDOW_S), "PAYMENTS_RETENTION_S": str(RETENTION_S),
       "PAYMENTS_CLOCK_SKEW_S": str(SKEW_S)}


@pytest.fixture(scope="module")
def retention_pipeline(kafka_bootstrap: str, postgres_server_url: str) -> Iterator[Pipeline]:
    yield from start_pipeline(kafka_bootstrap, postgres_server_url, PROCESSES, **ENV)


def process(pipeline: Pipeline, name: str) -> Any:
    return next(s for s in pipeline.services if s.args == [name])


def refund(payment_id: str, n: int) -> RefundPayment:
    return RefundPayment(payment_id=payment_id, command_id=str(uuid.uuid4()), idempotency_key=f"refund-{uuid.uuid4()}",
                         refund_id=str(uuid.uuid4()), amount=Money.of(100 + n, "EUR"), reason="returned goods")


def last_value(pipeline: Pipeline, service: str, key: str) -> tuple[bool, bytes | None]:
    """(whether the key is on the service's changelog at all, its latest value: None for a tombstone)."""
    records = [r for r in read_all(pipeline.bootstrap, pipeline.topics.changelog(service)) if r.key == key.encode()]
    return bool(records), records[-1].value if records else None


def of(events: list[Message], kind: type[Message]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def test_refund_window_and_retention_hold_across_a_restart_and_then_the_payment_is_forgotten(
        retention_pipeline: Pipeline) -> None:
    pipeline = retention_pipeline
    initiate = make_initiate(amount_minor=5_000, payer_account="acc-alice", payee_account="acc-bob",
                             requested_at=datetime.now(UTC))
    pid = initiate.payment_id
    pipeline.send(initiate)
    events = pipeline.wait_events(pid, PaymentSettled)
    settled_at = of(events, PaymentSettled)[0].occurred_at

    for name in ("orchestrator", "funds"):  # both restore from their changelogs (funds from parts)
        crashed = process(pipeline, name)
        crashed.kill()
        crashed.start()
    pipeline.send(initiate)  # the same command again, after the restart: the original outcome stands
    inside = refund(pid, 1)
    pipeline.send(inside)
    events = pipeline.wait_events(pid, (PaymentRefunded, RefundRejected))
    assert [r.refund_id for r in of(events, PaymentRefunded)] == [inside.refund_id], " ".join(
        f"{type(e).__name__}/{getattr(e, 'reason_code', None)}" for e in events)
    assert (datetime.now(UTC) - settled_at).total_seconds() < REFUND_WINDOW_S, "too slow to test the window"
    assert len(of(events, PaymentInitiated)) == 1 and not of(events, PaymentRejected)

    wait_for(lambda: (datetime.now(UTC) - settled_at).total_seconds() > REFUND_WINDOW_S + 0.5, 30, "the window")
    late = refund(pid, 2)
    pipeline.send(late)
    events = pipeline.wait_events(pid, RefundRejected)
    (rejected,) = of(events, RefundRejected)
    assert (rejected.refund_id, rejected.reason_code) == (late.refund_id, "REFUND_WINDOW_CLOSED")

    # The restored account takes a new payment: its head and parts came back whole.
    second = make_initiate(amount_minor=7_000, payer_account="acc-alice", payee_account="acc-bob",
                           requested_at=datetime.now(UTC))
    pipeline.send(second)
    pipeline.wait_events(second.payment_id, PaymentSettled)
    funds_keys = {r.key for r in read_all(pipeline.bootstrap, pipeline.topics.changelog("funds")) if r.key}
    assert b"acc-alice" in funds_keys and any(key.startswith(b"acc-alice\x1ff/") for key in funds_keys)

    # Retention: every service that kept this payment tombstones it (the funds account stays, and so do the
    # risk service's account histories: they are forgotten 400 days after an account's last payment).
    for service in ("orchestrator", "partner", "settlement"):
        assert last_value(pipeline, service, pid)[0], f"{service} never kept {pid}"
        wait_for(lambda s=service: last_value(pipeline, s, pid) == (True, None), 60, f"{service} tombstone")
    assert last_value(pipeline, "funds", "acc-alice")[1] is not None
    assert not last_value(pipeline, "risk", pid)[0]  # nothing kept by payment id
    assert all(last_value(pipeline, "risk", account)[1] is not None for account in ("acc-alice", "acc-bob"))

    # Forgotten: a cancel finds no payment, and the original command cannot start it again.
    pipeline.send(CancelPayment(payment_id=pid, command_id=str(uuid.uuid4()), idempotency_key="late-cancel",
                                reason="too late"))
    pipeline.send(initiate)
    def rejections() -> list[str]:
        return [e.reason_code for e in of(pipeline.events(pid), PaymentRejected)]
    codes = wait_for(lambda: len(rejections()) >= 2 and rejections(), 60, "two rejections")
    assert sorted(codes) == ["REQUEST_EXPIRED", "UNKNOWN_PAYMENT"]
    events = pipeline.events(pid)
    assert len(of(events, PaymentInitiated)) == 1 and len(of(events, PaymentSettled)) == 1
