"""Two orchestrator instances in one consumer group; one is SIGKILLed mid-flight.

Afterwards: every payment reached exactly one terminal event, every payment's events are numbered
1..n with no duplicate and no gap, and each settled payment has exactly one settlement event.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from ops.supervisor import ServiceProcess, start_all
from payments.contracts.messages import Message, PaymentCancelled, PaymentFailed, PaymentSettled
from payments.runtime.topics import Topics
from tests.support import (
    COMMAND_PATH,
    PARTITIONS,
    decode_all,
    make_initiate,
    partner_env,
    produce,
    read_all,
    service,
    setup_topics,
    wait_for,
)

pytestmark = pytest.mark.e2e

PAYMENTS = 600
TERMINAL = (PaymentSettled, PaymentFailed, PaymentCancelled)
ENV = {"PAYMENTS_SAGA_TIME_SCALE": "0.05", "PAYMENTS_PARTNER_LATENCY_MS": "1", "PAYMENTS_BATCH_MAX": "20",
       "PAYMENTS_PARTNER_TIMEOUT_RATE": "0.05", "PAYMENTS_PARTNER_DECLINE_RATE": "0.1"}
PAYERS = ["acc-alice", "acc-carol", "acc-dave", "acc-frank", "acc-heidi", "acc-judy"]


def _settled(bootstrap: str, topics: Topics) -> set[str]:
    return {e.payment_id for e in decode_all(read_all(bootstrap, topics.events)) if isinstance(e, PaymentSettled)}


def _settlements_per_payment(bootstrap: str, topics: Topics) -> Counter[str]:
    return Counter(s.payment_id for s in decode_all(read_all(bootstrap, topics.settlements)))


def _terminal_count(events: list[Message]) -> int:
    return len({e.payment_id for e in events if isinstance(e, TERMINAL)})


def test_killing_one_of_two_orchestrators_loses_and_duplicates_nothing(
        kafka_bootstrap: str, postgres_server_url: str) -> None:
    topics = Topics(prefix=f"t{uuid.uuid4().hex[:10]}.")
    setup_topics(kafka_bootstrap, topics)
    log_dir = Path(tempfile.mkdtemp(prefix="scale-out-"))
    env = {**ENV, **partner_env(log_dir)}

    def make(name: str, instance: str = "0") -> ServiceProcess:
        return service([name], bootstrap=kafka_bootstrap, database_url=postgres_server_url, topics=topics,
                       log_dir=log_dir, instance_id=instance, extra_env=env)

    participants = start_all([make(name) for name in ("partner-sim", *COMMAND_PATH[:-1], "risk", "funds", "partner",
                                                            "settlement")])
    first, second = start_all([make("orchestrator", "a"), make("orchestrator", "b")])
    commands = [make_initiate(amount_minor=100 + i, payer_account=PAYERS[i % len(PAYERS)], payee_account="acc-bob")
                for i in range(PAYMENTS)]
    half = PAYMENTS // 2
    produce(kafka_bootstrap, topics.commands, commands[:half], key_of=lambda m: m.payment_id)  # type: ignore[attr-defined]
    try:
        wait_for(lambda: _terminal_count(decode_all(read_all(kafka_bootstrap, topics.events))) >= 30,
                 90, "the first payments to finish")
        first.kill()
        # The second half arrives after the kill: the dead instance's partitions get new work that only
        # the survivor can do once it takes them over, so the failover is certain to be exercised.
        produce(kafka_bootstrap, topics.commands, commands[half:], key_of=lambda m: m.payment_id)  # type: ignore[attr-defined]
        wait_for(lambda: _terminal_count(decode_all(read_all(kafka_bootstrap, topics.events))) == PAYMENTS,
                 180, "every payment to finish on the surviving instance")
        wait_for(lambda: set(_settlements_per_payment(kafka_bootstrap, topics)) == _settled(kafka_bootstrap, topics),
                 60, "a settlement event per settled payment")
    finally:
        for process in [second, *participants]:
            assert process.stop() == 0, process.log_tail()
    # The survivor took over every partition after the kill: the failover really happened.
    assignments = [json.loads(line) for line in second.log_path.read_text().splitlines()
                   if '"partitions_assigned"' in line]
    assert len({p.split("[")[1] for p in assignments[-1]["partitions"]}) == PARTITIONS, assignments

    events = decode_all(read_all(kafka_bootstrap, topics.events))
    by_payment: dict[str, list[Message]] = defaultdict(list)
    for event in events:
        by_payment[event.payment_id].append(event)
    assert set(by_payment) == {c.payment_id for c in commands}
    duplicated_ids = [i for i, n in Counter(e.event_id for e in events).items() if n > 1]  # type: ignore[attr-defined]
    assert duplicated_ids == []
    for payment_id, stream in by_payment.items():
        assert [e.seq for e in stream] == list(range(1, len(stream) + 1)), payment_id  # type: ignore[attr-defined]
        assert len([e for e in stream if isinstance(e, TERMINAL)]) == 1, [type(e).__name__ for e in stream]
    settled = {p for p, stream in by_payment.items() if isinstance(stream[-1], PaymentSettled)}
    assert settled, "some payments should settle"
    assert set(_settlements_per_payment(kafka_bootstrap, topics).values()) == {1}
