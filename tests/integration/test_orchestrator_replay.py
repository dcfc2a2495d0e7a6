"""`payments replay orchestrator` on real Kafka: after the changelog is deleted, the saga states are
rebuilt from payments.events, equal to what the orchestrator had written, and the restarted orchestrator
carries on from them."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from ops.registry import topology
from ops.supervisor import ServiceProcess, start_all
from orchestrator.replay import (
    OrchestratorReplayError,
    live_states,
    orchestrator_group_members,
    read_changelog,
    replay_orchestrator,
)
from orchestrator.state import SagaState
from payments.contracts.messages import (
    InitiatePayment,
    Message,
    PaymentCancelled,
    PaymentFailed,
    PaymentRefunded,
    PaymentRejected,
    PaymentSettled,
    RefundPayment,
    RefundRejected,
)
from payments.contracts.participants import AssessRisk, CommitFunds, ReserveFunds, SubmitToPartner
from payments.money import Money
from payments.runtime.topics import Topics, ensure_topics
from tests.e2e.pipeline import FAST_ENV
from tests.integration.test_projections import produce_events
from tests.support import (
    COMMAND_PATH,
    PARTITIONS,
    decode_all,
    make_initiate,
    partner_env,
    produce,
    read_all,
    serde,
    service,
    setup_topics,
    wait_for,
)
from tests.unit.saga.harness import (
    START,
    Saga,
    commit_reply,
    initiate,
    refund,
    reservation_reply,
    risk_reply,
    submission_reply,
)

pytestmark = pytest.mark.integration

TERMINAL = (PaymentSettled, PaymentFailed, PaymentCancelled)
SERVICES = ["partner-sim", *COMMAND_PATH, "risk", "funds", "partner", "settlement"]


def _payments(count: int) -> list[InitiatePayment]:
    """Every kind of ending: settled (most), risk decline, insufficient funds, partner decline, timeout+query."""
    made = []
    for i in range(count):
        kind = i % 10
        if kind == 7:
            made.append(make_initiate(payer_account="acc-blocked", payee_account="acc-bob"))
        elif kind == 8:
            made.append(make_initiate(payer_account="acc-poor", payee_account="acc-bob",
                                      amount=Money.parse("5.00", "EUR")))
        elif kind == 9:
            made.append(make_initiate(payer_account="acc-alice", payee_account=f"acc-sim-decline-{i}"))
        elif kind == 6:
            made.append(make_initiate(payer_account="acc-alice", payee_account=f"acc-sim-timeout-{i}"))
        else:
            made.append(make_initiate(payer_account="acc-alice", payee_account="acc-bob",
                                      amount=Money.parse("10.00", "EUR")))
    return made


def _refund(payment_id: str, amount: str) -> RefundPayment:
    refund_id = str(uuid.uuid4())
    return RefundPayment(command_id=str(uuid.uuid4()), idempotency_key=f"refund-{refund_id}", payment_id=payment_id,
                         refund_id=refund_id, amount=Money.parse(amount, "EUR"), reason="customer request")


def _events(bootstrap: str, topics: Topics) -> list[Message]:
    return decode_all(read_all(bootstrap, topics.events))


def _recreate_changelog(bootstrap: str, topics: Topics) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    changelog = topics.changelog("orchestrator")
    for future in admin.delete_topics([changelog], operation_timeout=30).values():
        future.result(30)
    wait_for(lambda: changelog not in admin.list_topics(timeout=10).topics, 30, "the changelog to be deleted")

    def recreated() -> bool:
        try:  # creation fails while the broker is still finishing the deletion: try again until it works
            ensure_topics(bootstrap, topology(topics, PARTITIONS))
        except KafkaException:
            return False
        return True

    wait_for(recreated, 30, "the changelog to be created again")
    wait_for(lambda: len(getattr(admin.list_topics(timeout=10).topics.get(changelog), "partitions", {}))
             == len(admin.list_topics(timeout=10).topics[topics.events].partitions), 30, "the new changelog")


def test_orchestrator_states_rebuilt_from_events_equal_the_lost_changelog_and_the_orchestrator_resumes(
        kafka_bootstrap: str, postgres_server_url: str, topics: Topics) -> None:
    setup_topics(kafka_bootstrap, topics)
    log_dir = Path(tempfile.mkdtemp(prefix="orchestrator-replay-"))
    env = {**FAST_ENV, **partner_env(log_dir)}

    def start(names: list[str]) -> list[ServiceProcess]:
        return start_all([service([name], bootstrap=kafka_bootstrap, database_url=postgres_server_url, topics=topics,
                        log_dir=log_dir, extra_env=env) for name in names])

    processes = start(SERVICES)
    initiates = _payments(50)
    ids = {p.payment_id for p in initiates}
    try:
        produce(kafka_bootstrap, topics.commands, initiates, key_of=lambda m: m.payment_id)

        def finished() -> set[str]:
            return {e.payment_id for e in _events(kafka_bootstrap, topics) if isinstance(e, TERMINAL)} & ids

        wait_for(lambda: finished() == ids, 120, "50 payments to reach a terminal state", interval_s=1)
        settled = sorted({e.payment_id for e in _events(kafka_bootstrap, topics) if isinstance(e, PaymentSettled)})
        # Refunds, a refund too large, a reused idempotency key: states with refunds and rejections.
        refunds = [_refund(pid, "3.00") for pid in settled[:5]] + [_refund(settled[5], "99.00")]
        reused = initiates[0].model_copy(update={"command_id": str(uuid.uuid4()), "amount": Money.parse("1.00", "EUR")})
        produce(kafka_bootstrap, topics.commands, [*refunds, reused], key_of=lambda m: m.payment_id)
        wait_for(lambda: sum(isinstance(e, PaymentRefunded | RefundRejected | PaymentRejected)
                             for e in _events(kafka_bootstrap, topics)) >= 7, 60, "refunds and rejections")
    finally:
        for process in processes:
            assert process.stop() == 0, process.log_tail()  # type: ignore[attr-defined]

    changelog = topics.changelog("orchestrator")
    before = live_states(kafka_bootstrap, changelog)
    assert ids <= set(before), "every payment has a snapshot"
    assert all(before[pid][1].is_terminal for pid in ids)
    # The live changelog already equals the fold of the events.
    check = replay_orchestrator(bootstrap=kafka_bootstrap, topics=topics, serde=serde(), verify_only=True)
    assert check.differences == [], [d.describe() for d in check.differences]

    _recreate_changelog(kafka_bootstrap, topics)
    assert read_changelog(kafka_bootstrap, changelog) == {}
    cli_env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap, "PAYMENTS_TOPIC_PREFIX": topics.prefix}
    command = [sys.executable, "-m", "ops.cli", "replay", "orchestrator"]
    verify = subprocess.run([*command, "--verify"], env=cli_env, capture_output=True, text=True, timeout=120,
                            check=False)
    assert verify.returncode == 2, (verify.stdout, verify.stderr)  # every payment is missing
    assert f"{len(before)} difference(s)" in verify.stdout, verify.stdout

    done = subprocess.run(command, env=cli_env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, (done.stdout, done.stderr)
    rate = re.search(r"([\d,]+) payments/s", done.stdout)
    assert rate is not None, done.stdout
    sys.stderr.write(f"\norchestrator replay: {done.stdout.strip()}\n")

    after = live_states(kafka_bootstrap, changelog)
    assert {pid: state.model_dump() for pid, (_p, state) in after.items()} == {
        pid: state.model_dump() for pid, (_p, state) in before.items()}
    assert {pid: partition for pid, (partition, _s) in after.items()} == {
        pid: partition for pid, (partition, _s) in before.items()}, "a snapshot on another partition"
    assert replay_orchestrator(bootstrap=kafka_bootstrap, topics=topics, serde=serde(),
                               verify_only=True).differences == []

    # The restarted orchestrator restores the rebuilt states: a refund of a settled payment is applied
    # (without its state it would be rejected as UNKNOWN_PAYMENT).
    target = settled[-1]
    refund = _refund(target, "2.50")
    orchestrator = start([*COMMAND_PATH, "settlement"])
    try:
        produce(kafka_bootstrap, topics.commands, [refund], key_of=lambda m: m.payment_id)

        def outcome() -> Message | None:
            return next((e for e in _events(kafka_bootstrap, topics)
                         if isinstance(e, PaymentRefunded | RefundRejected) and e.refund_id == refund.refund_id),
                        None)

        result = wait_for(outcome, 60, "the refund's outcome", interval_s=0.5)
        assert isinstance(result, PaymentRefunded), result
        assert result.refunded_total == Money.parse("2.50", "EUR")
        state: SagaState = before[target][1]
        assert result.seq == state.seq + 1
    finally:
        for process in orchestrator:
            assert process.stop() == 0, process.log_tail()  # type: ignore[attr-defined]


def _synthetic_saga(index: int) -> Saga:
    """A payment driven by the pure saga logic: settled, settled and refunded, or still in flight."""
    saga = Saga(payment_id=str(uuid.uuid4()))
    saga.handle(initiate(saga.payment_id, amount_minor=1000 + index))
    if index % 5 == 4:
        return saga  # awaiting risk: a pending timer in the state
    saga.handle(risk_reply(saga.last_command(AssessRisk)))
    saga.handle(reservation_reply(saga.last_command(ReserveFunds)))
    if index % 5 == 3:
        return saga  # submitted to the partner
    saga.handle(submission_reply(saga.last_command(SubmitToPartner)))
    saga.handle(commit_reply(saga.last_command(CommitFunds)))
    if index % 5 == 2:
        saga.handle(refund(300, payment_id=saga.payment_id))
    return saga


def test_orchestrator_replay_of_many_payments_writes_their_folded_states_in_bounded_transactions(
        kafka_bootstrap: str, topics: Topics) -> None:
    setup_topics(kafka_bootstrap, topics)
    sagas = [_synthetic_saga(i) for i in range(5000)]
    events = [event for saga in sagas for event in saga.events]
    for start in range(0, len(events), 5000):
        produce_events(kafka_bootstrap, topics.events, events[start:start + 5000], transactional=True)

    now = START + timedelta(hours=1)  # the synthetic sagas happened at START: inside their retention
    result = replay_orchestrator(bootstrap=kafka_bootstrap, topics=topics, serde=serde(), batch_size=1000,
                                 out=io.StringIO(), now=now)
    sys.stderr.write(f"\norchestrator replay: {result.payments} payments, {result.events} events in "
                     f"{result.read_s:.2f}s read + {result.write_s:.2f}s write = {result.payments_per_s:,.0f} "
                     f"payments/s, {result.transactions} transactions\n")
    assert (result.payments, result.events, result.transactions) == (5000, len(events), 5)
    assert len(result.differences) == 5000 and {d.kind for d in result.differences} == {"missing"}

    rebuilt = live_states(kafka_bootstrap, topics.changelog("orchestrator"))
    assert {pid: state for pid, (_p, state) in rebuilt.items()} == {saga.payment_id: saga.state for saga in sagas}
    partitions = {r.key.decode(): r.partition for r in read_all(kafka_bootstrap, topics.events) if r.key}
    assert {pid: partition for pid, (partition, _s) in rebuilt.items()} == partitions
    assert replay_orchestrator(bootstrap=kafka_bootstrap, topics=topics, serde=serde(),
                               verify_only=True, now=now).differences == []

    # 200 days later every finished payment is past its retention (90-day refund window): the replay
    # keeps only the live ones (awaiting risk, submitted) and tombstones the others' snapshots.
    later = replay_orchestrator(bootstrap=kafka_bootstrap, topics=topics, serde=serde(), batch_size=1000,
                                out=io.StringIO(), now=START + timedelta(days=200))
    live = {saga.payment_id for i, saga in enumerate(sagas) if i % 5 in (3, 4)}
    assert (later.retired, later.written, later.tombstones) == (3000, 2000, 3000)
    assert set(live_states(kafka_bootstrap, topics.changelog("orchestrator"))) == live


def test_the_running_check_counts_no_members_only_when_the_group_does_not_exist(kafka_bootstrap: str) -> None:
    assert orchestrator_group_members(kafka_bootstrap, f"no-such-group-{uuid.uuid4().hex}") == 0
    with pytest.raises(OrchestratorReplayError, match="cannot tell whether the orchestrator is running"):
        orchestrator_group_members("127.0.0.1:1", "orchestrator", timeout_s=2)  # nothing listens there
