"""Liveness under broker and database faults, on a stack of their own (these tests kill and stop it).

Every service and projection runs under a supervisor that restarts a process that exits. For each
fault, payments flow while it strikes: the broker SIGKILLed and restarted; the broker SIGSTOPped for
longer than the session and transaction timeouts; PostgreSQL SIGKILLed and restarted; PostgreSQL
SIGSTOPped. Afterwards, within a bound: every payment reached exactly one terminal state with no
event lost or doubled, one settlement event per settled payment, no funds left held, every process
is alive and reports progress, and each exit the supervisor saw is a documented one (the watchdog's
among them, counted).

`make faults` runs these (PAYMENTS_FAULT_PAYMENTS, PAYMENTS_FAULT_SECONDS); `make test` leaves them out
(`-m "not faults"`): its short chaos run (tests/chaos) strikes every one of these faults, on three
brokers, in one run.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import psycopg
import pytest

from ops.registry import process_args
from ops.stack import KafkaNode, PostgresNode
from ops.supervisor import ServiceProcess, Supervisor, free_port
from payments.contracts.messages import (
    InitiatePayment,
    PaymentCancelled,
    PaymentFailed,
    PaymentInitiated,
    PaymentSettled,
    SagaEvent,
    SettlementEvent,
)
from payments.runtime.service import EXIT_REBUILDS_EXHAUSTED, EXIT_WATCHDOG
from payments.runtime.topics import Topics
from tests.e2e.pipeline import FAST_ENV, fresh_database
from tests.support import decode_all, make_initiate, partner_env, produce, read_all, setup_topics, wait_for

pytestmark = pytest.mark.faults

PAYMENTS = int(os.environ.get("PAYMENTS_FAULT_PAYMENTS", "60"))
SEND_SECONDS = float(os.environ.get("PAYMENTS_FAULT_SECONDS", "6"))
TERMINAL_WITHIN_S = 240
PAYERS = ["acc-alice", "acc-carol", "acc-dave", "acc-frank", "acc-heidi", "acc-judy"]
# Documented exits a supervisor may see during a fault (docs/operations.md): never a crash (1).
EXPECTED_EXITS = {EXIT_WATCHDOG, EXIT_REBUILDS_EXHAUSTED}



@dataclass
class System:
    kafka: KafkaNode
    postgres: PostgresNode
    database_url: str
    topics: Topics
    supervisor: Supervisor

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap_servers


@pytest.fixture(scope="module")
def system() -> Iterator[System]:
    home = Path(tempfile.mkdtemp(prefix="payments-faults-"))
    kafka = KafkaNode(home / "kafka", port=free_port(), controller_port=free_port())
    postgres = PostgresNode(home / "postgres", port=free_port())
    kafka.start()
    postgres.start()
    try:
        for database_url in fresh_database(postgres.url, "faults"):
            topics = Topics(prefix=f"f{uuid.uuid4().hex[:8]}.")
            setup_topics(kafka.bootstrap_servers, topics)
            env = {**FAST_ENV, "PAYMENTS_SAGA_TIME_SCALE": "0.1", "PAYMENTS_PARTNER_DECLINE_RATE": "0.1",
                   "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "DATABASE_URL": database_url,
                   "PAYMENTS_TOPIC_PREFIX": topics.prefix, "PAYMENTS_STATE_DIR": str(home / "state"),
                   **partner_env(home)}
            services = [ServiceProcess(args, log_dir=home / "logs", env=env, health_port=free_port())
                        for args in process_args()]
            supervisor = Supervisor(services).start()
            try:
                yield System(kafka, postgres, database_url, topics, supervisor)
            finally:
                codes = supervisor.stop()
                assert set(codes.values()) <= {0, EXIT_WATCHDOG}, codes  # SIGTERM: clean, or bounded
    finally:
        kafka.stop()
        postgres.purge()


# -- the faults ---------------------------------------------------------------------------------------


def _stop_for(processes: Callable[[], list[psutil.Process]], seconds: float) -> None:
    stopped = processes()
    for process in stopped:
        process.send_signal(signal.SIGSTOP)
    time.sleep(seconds)
    for process in stopped:
        process.send_signal(signal.SIGCONT)


def _kafka_processes(system: System) -> list[psutil.Process]:
    pid = system.kafka.pid()
    assert pid is not None
    return [psutil.Process(pid)]


def _postgres_processes(system: System) -> list[psutil.Process]:
    pid = system.postgres.pid()
    assert pid is not None
    postmaster = psutil.Process(pid)
    return [postmaster, *postmaster.children(recursive=True)]


def broker_killed_and_restarted(system: System) -> None:
    system.kafka.kill()
    time.sleep(2)
    system.kafka.start()


def broker_stopped(system: System) -> None:
    _stop_for(lambda: _kafka_processes(system), 15)  # longer than the 10 s session and transaction timeouts


def postgres_killed_and_restarted(system: System) -> None:
    for process in _postgres_processes(system):
        process.kill()
    time.sleep(2)
    system.postgres.start()


def postgres_stopped(system: System) -> None:
    _stop_for(lambda: _postgres_processes(system), 12)


FAULTS: dict[str, Callable[[System], None]] = {
    "broker SIGKILL and restart": broker_killed_and_restarted,
    "broker SIGSTOP 15 s": broker_stopped,
    "PostgreSQL SIGKILL and restart": postgres_killed_and_restarted,
    "PostgreSQL SIGSTOP 12 s": postgres_stopped,
}


# -- the checks ---------------------------------------------------------------------------------------


def _payments() -> list[InitiatePayment]:
    made = []
    for i in range(PAYMENTS):
        payer = "acc-poor" if i % 10 == 9 else PAYERS[i % len(PAYERS)]  # some fail: their holds must come back
        made.append(make_initiate(amount_minor=100 + i, payer_account=payer, payee_account="acc-bob"))
    return made


def _send_over(system: System, payments: list[InitiatePayment], seconds: float) -> threading.Thread:
    def send() -> None:
        batch = max(1, len(payments) // 12)
        for start in range(0, len(payments), batch):
            produce(system.bootstrap, system.topics.commands, payments[start:start + batch],
                    key_of=lambda m: m.payment_id)
            time.sleep(seconds / 12)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def _statuses(system: System, ids: list[str]) -> dict[str, str]:
    try:
        with psycopg.connect(system.database_url, connect_timeout=5) as conn:
            rows = conn.execute("SELECT payment_id, status FROM payment_status WHERE payment_id = ANY(%s)",
                                (ids,)).fetchall()
    except psycopg.OperationalError:
        return {}
    return {str(pid): str(status) for pid, status in rows}


def _ledger(system: System) -> tuple[int, int]:
    """(held balance left over all customer accounts, journal entries)."""
    with psycopg.connect(system.database_url, connect_timeout=5) as conn:
        held = conn.execute("SELECT coalesce(sum(balance_minor), 0) FROM account_balances "
                            "WHERE account LIKE 'customer:%:held'").fetchone()
        entries = conn.execute("SELECT count(*) FROM journal_entries").fetchone()
    assert held is not None and entries is not None
    return int(held[0]), int(entries[0])


@pytest.mark.parametrize("fault", list(FAULTS))
def test_payments_flowing_through_a_fault_all_end_once_with_no_funds_held_and_no_process_hung(
        system: System, fault: str) -> None:
    payments = _payments()
    ids = [p.payment_id for p in payments]
    exits_before = len(system.supervisor.exits)
    sender = _send_over(system, payments, SEND_SECONDS)
    time.sleep(SEND_SECONDS / 3)
    struck = time.monotonic()
    FAULTS[fault](system)
    sender.join(180)
    assert not sender.is_alive(), "the test's producer could not deliver"

    final = {"SETTLED", "FAILED", "CANCELLED", "REJECTED"}
    wait_for(lambda: len([s for s in _statuses(system, ids).values() if s in final]) == len(ids),
             TERMINAL_WITHIN_S, f"{len(ids)} payments in a final status", interval_s=1)
    terminal_s = time.monotonic() - struck

    events = [e for e in decode_all(read_all(system.bootstrap, system.topics.events), skip_undecodable=True)
              if isinstance(e, SagaEvent) and e.payment_id in set(ids)]
    assert len({e.event_id for e in events}) == len(events), "an event id appears twice"
    by_payment: dict[str, list[SagaEvent]] = {}
    for event in events:
        by_payment.setdefault(event.payment_id, []).append(event)
    for payment_id in ids:
        mine = by_payment[payment_id]
        assert [e.seq for e in mine] == list(range(1, len(mine) + 1)), payment_id
        assert sum(isinstance(e, PaymentInitiated) for e in mine) == 1, payment_id
        assert sum(isinstance(e, PaymentSettled | PaymentFailed | PaymentCancelled) for e in mine) == 1, payment_id
    settled = {e.payment_id for e in events if isinstance(e, PaymentSettled)}
    wait_for(lambda: Counter(s.payment_id for s in decode_all(read_all(system.bootstrap, system.topics.settlements),
                                                              skip_undecodable=True)
                             if isinstance(s, SettlementEvent) and s.payment_id in settled) ==
             Counter(dict.fromkeys(settled, 1)), 60, "one settlement event per settled payment")
    wait_for(lambda: _ledger(system)[0] == 0, 60, "no funds left held in the ledger", interval_s=1)

    def every_process_progressing() -> bool:
        return all(service.alive() and service.health()[0] for service in system.supervisor.services)

    wait_for(every_process_progressing, 90, "every process alive and progressing", interval_s=1)
    exits = [code for _, code in system.supervisor.exits[exits_before:]]
    assert set(exits) <= EXPECTED_EXITS, system.supervisor.exits[exits_before:]
    outcomes = Counter(_statuses(system, ids).values())
    sys.stderr.write(f"\n{fault}: {len(ids)} payments {dict(outcomes)}, all final {terminal_s:.0f}s after the "
                     f"fault; process exits {dict(Counter(exits)) or 'none'} (4 = watchdog)\n")
