"""The chaos run: the whole pipeline on a three-broker cluster while a seeded schedule injects faults.

`make chaos` (python -m tests.chaos) runs it with the defaults; tests/chaos/test_chaos.py runs a short
version in `make test`. In order:

1. a KRaft cluster of three nodes (replication factor 3, min.insync.replicas 2) and PostgreSQL, both
   from the project's launcher; a fresh database and topic prefix;
2. every process of the pipeline (ops.registry.process_args) under a Supervisor that starts again a
   process that exits: `instances` instances of the orchestrator and of each participant, one of each
   intake service and projection, the partner simulator; all niced below the brokers and PostgreSQL,
   which in production have machines of their own;
3. an upstream producer on librdkafka's defaults (acks=all, no idempotence: its retries may duplicate,
   which the intake absorbs) sends `payments` InitiatePayment at `rate`/s, cancels some of them right
   away and resends some (an upstream retry: same command, same idempotency key); a merchant watching
   the settlement events refunds some payments once settled (fully or in part, some twice with the
   same refund id);
4. meanwhile the schedule (tests.chaos.schedule, from the seed) strikes;
5. once the traffic and the faults are over, the run waits for quiescence (every payment in a final
   status, every refund answered) and checks, printing one table:
   - every payment reached exactly one terminal state, events numbered 1..n, no event id twice, and its
     status row agrees;
   - exactly one settlement event per settled payment and per refund, none for the others, no event id
     twice (read_committed);
   - the partner's own journal: at most one recorded transfer per submission, and money moved at the
     partner exactly for the settled payments;
   - the ledger balances per currency, nothing is left held or in clearing, and each customer
     account's balance is what the settlement events say it should be;
   - each projection equals a fresh fold of the topics up to the offsets it stored (read in one snapshot);
   - every process is alive and healthy, and every exit the supervisor saw is a kill of ours or a
     documented exit (the watchdog's, rebuilds exhausted), never a crash.
   A failed check names the payments involved and writes each one's event timeline to the run's folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from consumers.partner.simulator import LOG_FILE
from ops.errors import StackError
from ops.registry import PROJECTIONS, SERVICES, SIMULATORS, process_args
from ops.stack import KafkaCluster, PostgresNode
from ops.supervisor import ServiceProcess, Supervisor, free_port
from orchestrator.state import submission_id
from payments.contracts.codec import SingleObjectSerde
from payments.contracts.commands import CancelPayment, InitiatePayment, RefundPayment
from payments.contracts.envelope import build_headers
from payments.contracts.errors import ContractError
from payments.contracts.messages import (
    Message,
    PaymentCancelled,
    PaymentFailed,
    PaymentRefunded,
    PaymentRejected,
    PaymentSettled,
    RefundRejected,
    SagaEvent,
    SettlementEvent,
)
from payments.money import Money
from payments.runtime.service import EXIT_REBUILDS_EXHAUSTED, EXIT_WATCHDOG
from payments.runtime.topics import Topics
from projections.replay import LIVE_SCHEMA, checksum, fold_records
from tests.chaos.schedule import (
    BROKER_STALL,
    LEADER_KILL,
    PARTNER_OUTAGE,
    POSTGRES_RESTART,
    POSTGRES_STALL,
    PROCESS_KILL,
    Fault,
    FaultCounts,
    by_kind,
    plan,
)
from tests.e2e.pipeline import fresh_database
from tests.support import PARTITIONS, Record, decode_all, read_all, setup_topics, wait_for

BROKERS = 3
INTAKE = ("intake", "gate", "idempotency")  # one instance each; the orchestrator and each participant get more
SERVICE_NICENESS = 15
QUIET = 2  # librdkafka log level of the run's own clients: brokers going away is the point, not news
PAYERS = ("acc-alice", "acc-carol", "acc-dave", "acc-frank", "acc-heidi", "acc-judy")
PAYEES = ("acc-bob", "acc-erin", "acc-grace")
CURRENCIES = ("EUR", "USD", "JPY")
TERMINAL_EVENTS = (PaymentSettled, PaymentFailed, PaymentCancelled)
FINAL_STATUSES = {"SETTLED", "REFUNDED", "FAILED", "CANCELLED", "REJECTED", "COMPENSATION_FAILED"}
DOCUMENTED_EXITS = {EXIT_WATCHDOG, EXIT_REBUILDS_EXHAUSTED}  # docs/operations.md; -9 is one of our kills
ENV = {
    "PAYMENTS_SAGA_TIME_SCALE": "1.0",  # production's reply windows: a stall shorter than them is ridden out
    "PAYMENTS_PARTNER_DECLINE_RATE": "0.08", "PAYMENTS_PARTNER_TIMEOUT_RATE": "0.03",
    "PAYMENTS_PARTNER_ERROR_RATE": "0.02", "PAYMENTS_PARTNER_LATENCY_MS": "5,50",
    "PAYMENTS_BATCH_MAX": "200",
}


@dataclass
class ChaosConfig:
    seed: int = 1
    payments: int = 20_000
    rate: float = 60.0  # InitiatePayment per second
    instances: int = 2  # of the orchestrator and of each participant
    counts: FaultCounts = field(default_factory=FaultCounts)
    cancel_share: float = 0.04
    resend_share: float = 0.02
    refund_share: float = 0.08
    quiescence_timeout_s: float = 1_800.0
    out_dir: Path | None = None  # default: .chaos-results/<time>-seed<seed>

    @property
    def traffic_s(self) -> float:
        return self.payments / self.rate


# -- the system under test ------------------------------------------------------------------------------


@dataclass
class System:
    home: Path
    kafka: KafkaCluster
    postgres: PostgresNode
    database_url: str
    topics: Topics
    supervisor: Supervisor
    partner_port: int
    partner_dir: Path

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap_servers

    def process(self, name: str) -> ServiceProcess:
        return next(s for s in self.supervisor.services if s.name == name)

    def killable(self) -> list[str]:
        return [s.name for s in self.supervisor.services if s.args[0] not in SIMULATORS]


def start_system(home: Path, instances: int) -> tuple[System, Callable[[], None]]:
    """The cluster, PostgreSQL and every process, ready; and how to take it all down."""
    kafka = KafkaCluster(home / "kafka", ports=tuple((free_port(), free_port()) for _ in range(BROKERS)))
    postgres = PostgresNode(home / "postgres", port=free_port())
    teardown: list[Callable[[], object]] = [kafka.stop, postgres.purge]
    try:  # a step that fails (a service that never gets ready: start_all has stopped the others) takes the rest down
        kafka.start()
        postgres.start()
        databases = fresh_database(postgres.url, "chaos")
        database_url = next(databases)
        teardown.insert(0, lambda: list(databases))
        topics, supervisor, partner_port, partner_dir = _start_services(home, instances, kafka, database_url)
    except BaseException:
        _stop_each(*teardown)
        raise
    system = System(home, kafka, postgres, database_url, topics, supervisor, partner_port, partner_dir)

    def stop() -> None:
        _stop_each(supervisor.stop, *teardown)

    return system, stop


def _start_services(home: Path, instances: int, kafka: KafkaCluster,
                    database_url: str) -> tuple[Topics, Supervisor, int, Path]:
    """Fresh topics and every process on them, ready, under a supervisor."""
    topics = Topics(prefix=f"c{uuid.uuid4().hex[:8]}.")
    setup_topics(kafka.bootstrap_servers, topics)
    partner_port, partner_dir = free_port(), home / "partner"
    env = {**ENV, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers, "DATABASE_URL": database_url,
           "PAYMENTS_TOPIC_PREFIX": topics.prefix, "PAYMENTS_STATE_DIR": str(home / "state"),
           "PAYMENTS_PARTNER_SIM_PORT": str(partner_port), "PAYMENTS_PARTNER_DATA_DIR": str(partner_dir)}
    services = []
    for args in process_args():
        copies = instances if args[0] in SERVICES and args[0] not in INTAKE else 1
        for n in range(copies):
            instance = "0" if copies == 1 else "abcdefgh"[n]
            # Niced: in production the brokers and the database have machines of their own. Here all share two
            # cores, and a restarted broker starved by fifteen busy services took minutes to recover its logs.
            services.append(ServiceProcess(args, log_dir=home / "logs", env=env, instance_id=instance,
                                           health_port=free_port(), niceness=SERVICE_NICENESS))
    return topics, Supervisor(services).start(ready_timeout_s=180), partner_port, partner_dir


def _stop_each(*steps: Callable[[], object]) -> None:
    """Every step even if one before it fails (a database that cannot be dropped must not leave the brokers
    running); the first failure is raised at the end."""
    failures: list[BaseException] = []
    for step in steps:
        try:
            step()
        except Exception as error:
            failures.append(error)
    if failures:
        raise failures[0]


# -- the upstream traffic -------------------------------------------------------------------------------


@dataclass
class Traffic:
    """What the upstream sent: per payment its InitiatePayment and when it went out (wall clock, ms)."""

    initiates: dict[str, InitiatePayment] = field(default_factory=dict)
    sent_ms: dict[str, int] = field(default_factory=dict)
    cancels: set[str] = field(default_factory=set)
    resends: set[str] = field(default_factory=set)
    refunds: dict[str, list[RefundPayment]] = field(default_factory=lambda: defaultdict(list))  # sent
    refund_plan: dict[str, list[RefundPayment]] = field(default_factory=dict)  # to send once settled
    undelivered: int = 0
    done: threading.Event = field(default_factory=threading.Event)


def _seeded_uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def command_plan(config: ChaosConfig, refund_plan: dict[str, list[RefundPayment]]) -> list[tuple[float, Message]]:
    """(seconds after the start, command) of the whole run, seeded by the run's seed; the refunds to send
    once a payment settles go to `refund_plan`."""
    rng = random.Random(f"{config.seed}:traffic")
    now = datetime.now(UTC).replace(microsecond=0)
    timeline: list[tuple[float, Message]] = []
    for i in range(config.payments):
        due = i / config.rate
        payment_id = _seeded_uuid(rng)
        currency = rng.choice(CURRENCIES)
        payer = "acc-poor" if rng.random() < 0.04 else rng.choice(PAYERS)  # some fail on funds: holds must return
        amount = rng.randint(100, 50_000)
        initiate = InitiatePayment(
            command_id=_seeded_uuid(rng), idempotency_key=f"chaos-{payment_id}",
            payment_id=payment_id, payer_account=payer, payee_account=rng.choice(PAYEES),
            amount=Money(amount_minor=amount, currency=currency), partner="simbank", reference=f"chaos {i}",
            requested_at=now)
        timeline.append((due, initiate))
        draw = rng.random()
        if draw < config.cancel_share:
            timeline.append((due + rng.uniform(0.0, 0.5), CancelPayment(
                payment_id=payment_id, command_id=_seeded_uuid(rng), idempotency_key=f"cancel-{payment_id}",
                reason="customer asked")))
        elif draw < config.cancel_share + config.refund_share:
            refund = RefundPayment(payment_id=payment_id, command_id=_seeded_uuid(rng),
                                   idempotency_key=f"refund-{payment_id}", refund_id=_seeded_uuid(rng),
                                   amount=Money(amount_minor=rng.choice([amount, amount // 2]), currency=currency),
                                   reason="returned goods")
            # Twice for some: the same refund again is answered from the first, with no second settlement.
            refund_plan[payment_id] = [refund, refund] if rng.random() < 0.25 else [refund]
        if rng.random() < config.resend_share:
            timeline.append((due + 1.0, initiate))
    return sorted(timeline, key=lambda entry: entry[0])


def send(bootstrap: str, topic: str, timeline: list[tuple[float, Message]], traffic: Traffic,
         started: float) -> None:
    """Publish each command when it is due, on librdkafka's defaults; record what went out."""
    serde = SingleObjectSerde()
    producer = Producer({"bootstrap.servers": bootstrap, "log_level": QUIET})  # defaults otherwise
    failed: list[str] = []

    def delivered(error: object, _record: object) -> None:
        if error is not None:
            failed.append(str(error))

    for due, command in timeline:
        wait = started + due - time.monotonic()
        if wait > 0:
            producer.poll(wait)
        key = command.payment_id.encode()
        while True:
            try:
                producer.produce(topic, key=key, value=serde.encode(command), on_delivery=delivered,
                                 headers=build_headers(command, source="chaos-upstream", traceparent=None))
                break
            except BufferError:  # the queue is full while the cluster is down: wait for room
                producer.poll(0.5)
        payment_id = command.payment_id
        if isinstance(command, InitiatePayment):
            if payment_id in traffic.initiates:
                traffic.resends.add(payment_id)
            else:
                traffic.initiates[payment_id] = command
                traffic.sent_ms[payment_id] = int(time.time() * 1000)
        elif isinstance(command, CancelPayment):
            traffic.cancels.add(payment_id)
        elif isinstance(command, RefundPayment):
            traffic.refunds[payment_id].append(command)
        producer.poll(0)
    left = producer.flush(600)
    traffic.undelivered = left + len(failed)
    traffic.done.set()


def refund_when_settled(bootstrap: str, topics: Topics, traffic: Traffic, stop: threading.Event) -> None:
    """The merchant: reads the settlement events (read_committed) and sends each planned refund once the
    payment's settlement is published."""
    serde = SingleObjectSerde()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"chaos-merchant-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                         "enable.auto.commit": False, "log_level": QUIET})
    producer = Producer({"bootstrap.servers": bootstrap, "log_level": QUIET})
    consumer.subscribe([topics.settlements])
    try:
        while not stop.is_set():
            for record in consumer.consume(100, 0.5):
                if record.error() or record.value() is None:
                    continue
                try:
                    event = serde.decode(record.value())
                except ContractError:
                    continue
                if (not isinstance(event, SettlementEvent) or event.kind != "SETTLEMENT"
                        or event.payment_id not in traffic.refund_plan or event.payment_id in traffic.refunds):
                    continue
                for refund in traffic.refund_plan[event.payment_id]:
                    producer.produce(topics.commands, key=refund.payment_id.encode(), value=serde.encode(refund),
                                     headers=build_headers(refund, source="chaos-merchant", traceparent=None))
                    traffic.refunds[event.payment_id].append(refund)
            producer.poll(0)
    finally:
        producer.flush(120)
        consumer.close()


# -- the faults -----------------------------------------------------------------------------------------


@dataclass
class Injected:
    fault: Fault
    started_s: float
    ended_s: float
    detail: str = ""
    skipped: str = ""  # why it could not strike (the process was not running), else ""


def _postgres_processes(system: System) -> list[psutil.Process]:
    pid = system.postgres.pid()
    if pid is None:
        return []
    postmaster = psutil.Process(pid)
    return [postmaster, *postmaster.children(recursive=True)]


def _signal_all(processes: Iterable[psutil.Process], sig: signal.Signals) -> None:
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.send_signal(sig)


def _leader(system: System, partition: int) -> int:
    admin = AdminClient({"bootstrap.servers": system.bootstrap, "log_level": QUIET})
    metadata = admin.list_topics(system.topics.events, timeout=10)
    return int(metadata.topics[system.topics.events].partitions[partition].leader)


def under_replicated(system: System) -> int:
    """Partitions (internal topics included) with a replica out of sync: -1 when the cluster does not answer."""
    admin = AdminClient({"bootstrap.servers": system.bootstrap, "log_level": QUIET})
    try:
        metadata = admin.list_topics(timeout=10)
    except Exception:  # not answering is not "fully replicated"
        return -1
    return sum(1 for topic in metadata.topics.values() for partition in topic.partitions.values()
               if len(partition.isrs) < len(partition.replicas))


def strike(system: System, fault: Fault) -> str:
    """Inject one fault and undo it (a restart, SIGCONT); what it did, for the report."""
    if fault.kind == PROCESS_KILL:
        process = system.process(fault.target)
        wait_for(process.alive, 30, f"{fault.target} running again", interval_s=0.2)
        process.kill()
        return f"pid {process.process.pid if process.process else '?'}"
    if fault.kind == LEADER_KILL:
        partition = int(fault.target.rsplit(" ", 1)[1])
        node_id = _leader(system, partition)
        node = system.kafka.node(node_id)
        node.kill()
        time.sleep(fault.duration_s)
        try:
            node.start()
        except StackError:  # still recovering its logs (a machine this busy): give it one more bound
            node.wait_ready()
        return f"node {node_id}"
    if fault.kind == BROKER_STALL:
        node = system.kafka.node(int(fault.target.split()[1]))
        pid = node.pid()
        assert pid is not None, "the broker to stop is not running"
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(fault.duration_s)
        finally:
            os.kill(pid, signal.SIGCONT)
        return f"pid {pid}"
    if fault.kind == POSTGRES_STALL:
        stopped = _postgres_processes(system)
        _signal_all(stopped, signal.SIGSTOP)
        try:
            time.sleep(fault.duration_s)
        finally:
            _signal_all(stopped, signal.SIGCONT)
        return f"{len(stopped)} processes"
    if fault.kind == POSTGRES_RESTART:
        killed = _postgres_processes(system)
        _signal_all(killed, signal.SIGKILL)
        time.sleep(fault.duration_s)
        system.postgres.start()
        return f"{len(killed)} processes"
    if fault.kind == PARTNER_OUTAGE:
        body = json.dumps({"mode": "unavailable", "seconds": fault.duration_s}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{system.partner_port}/_sim/faults", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        time.sleep(fault.duration_s)
        return "503 to every call"
    raise ValueError(f"unknown fault {fault.kind}")


def inject(system: System, faults: list[Fault], started: float, out: list[Injected],
           log: Callable[[str], None]) -> None:
    """Strike each fault at its time, in order (a caller runs process kills and cluster faults apart)."""
    for fault in faults:
        wait = started + fault.at_s - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        if fault.kind in (LEADER_KILL, BROKER_STALL):
            # One broker lost at a time: one that has not caught up since the last fault counts as lost.
            with contextlib.suppress(AssertionError):
                wait_for(lambda: under_replicated(system) == 0, 180, "every replica in sync", interval_s=1)
        begun = time.monotonic() - started
        try:
            detail, skipped = strike(system, fault), ""
        except Exception as error:  # reported (the check "every scheduled fault struck" fails), never fatal here
            detail, skipped = "", f"{type(error).__name__}: {str(error)[:300]}"
        out.append(Injected(fault, round(begun, 1), round(time.monotonic() - started, 1), detail, skipped))
        log(f"  [{begun:6.1f}s] {fault.kind} {fault.target} {detail}{' SKIPPED ' + skipped if skipped else ''}")


# -- quiescence and the checks --------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    payments: list[str] = field(default_factory=list)  # the payments a failure involves
    lost: int = 0  # payments, settlement events or refunds that should exist and do not
    duplicated: int = 0  # terminal states, event ids, settlement events or partner records that exist twice
    unbalanced: int = 0  # currencies, entries or accounts whose money does not add up


@dataclass
class Observed:
    events: dict[str, list[SagaEvent]]
    settlements: list[SettlementEvent]
    statuses: dict[str, str]
    event_records: list[Record]


def statuses(database_url: str, ids: list[str]) -> dict[str, str]:
    try:
        with psycopg.connect(database_url, connect_timeout=5) as conn:
            rows = conn.execute("SELECT payment_id::text, status FROM payment_status WHERE payment_id = ANY(%s)",
                                (ids,)).fetchall()
    except psycopg.OperationalError:
        return {}
    return {str(pid): str(status) for pid, status in rows}


def observe(system: System, ids: set[str]) -> Observed:
    records = read_all(system.bootstrap, system.topics.events, timeout_s=120)
    by_payment: dict[str, list[SagaEvent]] = defaultdict(list)
    for event in decode_all(records, skip_undecodable=True):
        if isinstance(event, SagaEvent) and event.payment_id in ids:
            by_payment[event.payment_id].append(event)
    settlements = [s for s in decode_all(read_all(system.bootstrap, system.topics.settlements, timeout_s=120),
                                         skip_undecodable=True)
                   if isinstance(s, SettlementEvent) and s.payment_id in ids]
    return Observed(dict(by_payment), settlements, statuses(system.database_url, sorted(ids)), records)


def quiescent(system: System, traffic: Traffic) -> bool:
    """Every payment sent has a status row, it is final, and each settled one planned for a refund has had
    its refund sent."""
    ids = sorted(traffic.initiates)
    found = statuses(system.database_url, ids)
    if len(found) < len(ids) or not all(status in FINAL_STATUSES for status in found.values()):
        return False
    return all(pid in traffic.refunds for pid in traffic.refund_plan if found[pid] in ("SETTLED", "REFUNDED"))


def _write_timelines(folder: Path, seen: Observed, payment_ids: list[str]) -> None:
    """Each payment's saga events, one line each: what `payments inspect` will show (issue 14)."""
    folder.mkdir(parents=True, exist_ok=True)
    for payment_id in payment_ids:
        lines = [f"payment {payment_id}: status {seen.statuses.get(payment_id, '(no row)')}"]
        for event in seen.events.get(payment_id, []):
            fields = event.model_dump(mode="json", exclude={"payment_id", "event_id", "seq"})
            lines.append(f"  {event.seq:3d} {type(event).__name__} {event.event_id} {json.dumps(fields, default=str)}")
        lines += [f"  settlement {s.kind} {s.event_id} {s.amount.amount_minor} {s.amount.currency}"
                  for s in seen.settlements if s.payment_id == payment_id]
        (folder / f"{payment_id}.txt").write_text("\n".join(lines) + "\n")


def _expected_status(events: list[SagaEvent]) -> str:
    if any(isinstance(e, PaymentRefunded) for e in events):
        return "REFUNDED"
    for kind, status in ((PaymentSettled, "SETTLED"), (PaymentFailed, "FAILED"), (PaymentCancelled, "CANCELLED")):
        if any(isinstance(e, kind) for e in events):
            return status
    return "REJECTED" if events and isinstance(events[0], PaymentRejected) else "?"


def check_payments(traffic: Traffic, seen: Observed) -> list[Check]:
    ids = sorted(traffic.initiates)
    missing = [p for p in ids if p not in seen.events]
    not_terminal, doubled, gaps, disagree = [], [], [], []
    for payment_id, events in seen.events.items():
        terminal = sum(isinstance(e, TERMINAL_EVENTS) for e in events)
        rejected_at_start = isinstance(events[0], PaymentRejected)
        if terminal == 0 and not rejected_at_start:
            not_terminal.append(payment_id)
        if terminal > 1:
            doubled.append(payment_id)
        if [e.seq for e in events] != list(range(1, len(events) + 1)):
            gaps.append(payment_id)
        if seen.statuses.get(payment_id) != _expected_status(events):
            disagree.append(payment_id)
    event_ids = Counter(e.event_id for events in seen.events.values() for e in events)
    twice = [eid for eid, n in event_ids.items() if n > 1]
    return [
        Check("every payment has events", not missing, f"{len(ids) - len(missing):,} of {len(ids):,}", missing,
              lost=len(missing)),
        Check("exactly one terminal state per payment", not not_terminal and not doubled,
              f"{len(not_terminal)} without, {len(doubled)} with two or more", not_terminal + doubled,
              lost=len(not_terminal), duplicated=len(doubled)),
        Check("events numbered 1..n, no event id twice", not gaps and not twice,
              f"{len(gaps)} payments with a gap or repeat, {len(twice)} event ids twice", gaps,
              duplicated=len(twice)),
        Check("status row agrees with the events", not disagree, f"{len(disagree)} disagree", disagree),
    ]


def check_settlements(seen: Observed) -> list[Check]:
    expected: Counter[tuple[str, str]] = Counter()
    for payment_id, events in seen.events.items():
        for event in events:
            if isinstance(event, PaymentSettled):
                expected[(payment_id, "SETTLEMENT")] += 1
            elif isinstance(event, PaymentRefunded):
                expected[(payment_id, f"REFUND {event.refund_id}")] += 1
    actual = Counter((s.payment_id, "SETTLEMENT" if s.kind == "SETTLEMENT" else f"REFUND {s.refund_id}")
                     for s in seen.settlements)
    short = sum(max(0, n - actual[key]) for key, n in expected.items())
    over = sum(max(0, n - expected[key]) for key, n in actual.items())
    missing = sorted({key[0] for key, n in expected.items() if actual[key] < n})
    extra = sorted({key[0] for key, n in actual.items() if n > expected[key]})
    ids = Counter(s.event_id for s in seen.settlements)
    twice = [eid for eid, n in ids.items() if n > 1]
    return [Check("one settlement event per settlement and per refund", not missing and not extra and not twice,
                  f"{sum(expected.values()):,} expected, {len(seen.settlements):,} published; "
                  f"{short} missing, {over} extra, {len(twice)} event ids twice",
                  missing + extra, lost=short, duplicated=over)]


def check_partner(system: System, seen: Observed) -> list[Check]:
    """The partner's own journal: each submission recorded at most once; money moved exactly for the settled."""
    recorded: Counter[str] = Counter()
    accepted: set[str] = set()
    journal = system.partner_dir / LOG_FILE
    for line in journal.read_text(encoding="utf-8").splitlines() if journal.exists() else []:
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line from a kill: its answer was never sent
        if entry.get("kind") == "recorded":
            recorded[entry["submission_id"]] += 1
            if entry.get("status") == "ACCEPTED":
                accepted.add(entry["submission_id"])
    by_submission = {submission_id(pid): pid for pid in seen.events}
    twice = [by_submission.get(sid, sid) for sid, n in recorded.items() if n > 1]
    settled = {pid for pid, events in seen.events.items() if any(isinstance(e, PaymentSettled) for e in events)}
    moved = {by_submission.get(sid, sid) for sid in accepted}
    return [Check("the partner recorded each submission at most once", not twice,
                  f"{len(recorded):,} submissions, {len(twice)} recorded twice", twice, duplicated=len(twice)),
            Check("money moved at the partner exactly for the settled payments", moved == settled,
                  f"{len(moved):,} accepted by the partner, {len(settled):,} settled; "
                  f"{len(moved - settled)} accepted but not settled, {len(settled - moved)} settled but not accepted",
                  sorted(moved ^ settled), unbalanced=len(moved ^ settled))]


def check_ledger(system: System, seen: Observed) -> list[Check]:
    with psycopg.connect(system.database_url, connect_timeout=10) as conn:
        sums = conn.execute("SELECT currency, sum(balance_minor)::bigint FROM account_balances "
                            "GROUP BY currency").fetchall()
        balances = {(str(a), str(c)): int(b) for a, c, b in
                    conn.execute("SELECT account, currency, balance_minor FROM account_balances").fetchall()}
        unbalanced_entries = conn.execute(
            "SELECT count(*) FROM (SELECT entry_id FROM postings GROUP BY entry_id, currency "
            "HAVING sum(amount_minor) <> 0) AS off").fetchone()
    unbalanced = {str(c): int(s) for c, s in sums if int(s) != 0}
    # What each customer account must hold from the settlement events alone (the ledger starts at zero).
    expected: Counter[tuple[str, str]] = Counter()
    for settlement in seen.settlements:
        amount, currency = settlement.amount.amount_minor, settlement.amount.currency
        if settlement.kind == "SETTLEMENT":
            expected[(f"customer:{settlement.payer_account}:available", currency)] -= amount
            expected[(f"customer:{settlement.payee_account}:available", currency)] += amount
        else:  # a refund: back from the payee to the payer
            expected[(f"customer:{settlement.payer_account}:available", currency)] += amount
            expected[(f"customer:{settlement.payee_account}:available", currency)] -= amount
    left_over = {k: v for k, v in balances.items() if v != 0 and not k[0].endswith(":available")}
    wrong = {k: (balances.get(k, 0), v) for k, v in expected.items() if balances.get(k, 0) != v}
    wrong.update({k: (v, 0) for k, v in balances.items()
                  if k[0].endswith(":available") and k not in expected and v != 0})
    assert unbalanced_entries is not None
    return [Check("the ledger balances per currency (and per entry)", not unbalanced and unbalanced_entries[0] == 0,
                  f"sums {unbalanced or 'all 0'}; {unbalanced_entries[0]} entries off",
                  unbalanced=len(unbalanced) + int(unbalanced_entries[0])),
            Check("nothing left held or in clearing", not left_over, f"{left_over or 'all 0'}",
                  unbalanced=len(left_over)),
            Check("each account holds what the settlement events say", not wrong,
                  f"{len(expected)} account balances checked, {len(wrong)} differ"
                  + (f": {dict(list(wrong.items())[:5])}" if wrong else ""), unbalanced=len(wrong))]


def check_projections(system: System) -> list[Check]:
    """Each projection's tables against a fresh fold of its topics up to the offsets it stored; both read
    in one snapshot of the database, so a batch committing meanwhile cannot make them differ."""
    checks = []
    for spec in PROJECTIONS.values():
        expected_tables = spec.fold().rows().keys()
        with psycopg.connect(system.database_url, connect_timeout=10) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            offsets = conn.execute("SELECT topic, partition, next_offset FROM projection_offsets "
                                   "WHERE projection = %s", (spec.name,)).fetchall()
            live = {table: checksum(conn.execute(f'SELECT * FROM {LIVE_SCHEMA}."{table}"').fetchall())
                    for table in expected_tables}
            conn.rollback()
        bounds = {(str(topic), int(partition)): (0, int(end)) for topic, partition, end in offsets}
        rows = fold_records(spec, system.bootstrap, bounds, SingleObjectSerde(), until_ms=None)
        fresh = {table: checksum(rows.get(table, [])) for table in expected_tables}
        differing = [t for t in expected_tables if live[t] != fresh[t]]
        checks.append(Check(f"projection {spec.name} equals a fresh replay", not differing,
                            ", ".join(f"{t} {live[t][0]:,} rows" for t in expected_tables)
                            + (f"; DIFFER: {differing}" if differing else "")))
    return checks


def check_processes(system: System, injected: list[Injected]) -> list[Check]:
    def healthy() -> list[str]:
        return [s.name for s in system.supervisor.services if not (s.alive() and s.health()[0])]

    try:
        wait_for(lambda: not healthy(), 120, "every process alive and healthy", interval_s=2)
        unhealthy: list[str] = []
    except AssertionError:
        unhealthy = healthy()
    kills = Counter(i.fault.target for i in injected if i.fault.kind == PROCESS_KILL and not i.skipped)
    exits: Counter[str] = Counter()
    crashes = []
    for args, code in system.supervisor.exits:
        exits[str(code)] += 1
        if code not in DOCUMENTED_EXITS and code != -signal.SIGKILL:
            crashes.append(f"{' '.join(args)} exited {code}")
    killed_exits = exits[str(-signal.SIGKILL)]
    return [Check("every process alive and healthy at the end", not unhealthy, f"unhealthy: {unhealthy or 'none'}"),
            Check("every exit a kill of ours or a documented one", not crashes and killed_exits == sum(kills.values()),
                  f"exits {dict(exits) or 'none'} (-9: our {sum(kills.values())} kills; 4 watchdog; 5 rebuilds)"
                  + (f"; CRASHES: {crashes}" if crashes else ""))]


def latencies(traffic: Traffic, seen: Observed, windows: list[tuple[float, float]], started_ms: int) -> dict[str, Any]:
    """Publish -> terminal event (its record's timestamp), in ms: all payments, and those sent during a fault."""
    terminal = {e.event_id for events in seen.events.values() for e in events if isinstance(e, TERMINAL_EVENTS)}
    by_id: dict[str, int] = {}
    for record in seen.event_records:
        key = record.key.decode(errors="replace") if record.key else ""
        if key in traffic.sent_ms and _event_id(record) in terminal:
            by_id[key] = record.timestamp_ms
    overall, during = [], []
    for payment_id, sent in traffic.sent_ms.items():
        if payment_id not in by_id:
            continue
        latency = by_id[payment_id] - sent
        overall.append(latency)
        offset_s = (sent - started_ms) / 1000
        if any(start <= offset_s <= end for start, end in windows):
            during.append(latency)
    return {"p50_ms": _percentile(overall, 50), "p99_ms": _percentile(overall, 99),
            "p99_during_faults_ms": _percentile(during, 99), "during_faults": len(during)}


def _event_id(record: Record) -> str:
    return next((value.decode(errors="replace") for name, value in record.headers if name == "ce_id"), "")


def _percentile(values: list[int], p: float) -> int | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


# -- the run --------------------------------------------------------------------------------------------


@dataclass
class Report:
    config: dict[str, Any]
    schedule: list[str]
    injected: list[dict[str, Any]]
    checks: list[Check]
    outcomes: dict[str, int]
    figures: dict[str, Any]
    out_dir: str

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def table(self) -> str:
        width = max(len(c.name) for c in self.checks)
        lines = [f"chaos run, seed {self.config['seed']}: {self.figures['payments']:,} payments, "
                 f"{BROKERS} brokers (replication 3, min.insync.replicas 2), {self.config['instances']} instances "
                 f"of the orchestrator and of each participant", "", f"  {'check'.ljust(width)}  result"]
        for check in self.checks:
            lines.append(f"  {check.name.ljust(width)}  {'ok  ' if check.ok else 'FAIL'}  {check.detail}")
            if not check.ok and check.payments:
                lines.append(f"  {''.ljust(width)}        payments: {', '.join(check.payments[:10])}"
                             f"{' ...' if len(check.payments) > 10 else ''} (timelines in {self.out_dir}/inspect/)")
        f = self.figures
        failed = ", ".join(f"{k} {v:,}" for k, v in sorted(f["failed_by_reason"].items()))
        lines += ["", f"  outcomes: {', '.join(f'{k} {v:,}' for k, v in sorted(self.outcomes.items()))}"
                  + (f" (failed: {failed})" if failed else ""),
                  f"  faults injected: {', '.join(f'{k} {v}' for k, v in sorted(f['faults'].items()))}"
                  + (f" ({f['skipped']} skipped)" if f["skipped"] else ""),
                  f"  lost {f['lost']}, duplicated {f['duplicated']}, unbalanced {f['unbalanced']}, "
                  f"projection differences {f['projection_differences']}",
                  f"  quiescent {f['quiescence_s']:.0f}s after the last command and fault; "
                  f"publish -> terminal event p50 {_ms(f['latency']['p50_ms'])}, p99 {_ms(f['latency']['p99_ms'])}, "
                  f"p99 of the {f['latency']['during_faults']:,} sent during a cluster fault "
                  f"{_ms(f['latency']['p99_during_faults_ms'])}",
                  f"  run folder: {self.out_dir}"]
        return "\n".join(lines)


def _ms(value: int | None) -> str:
    return "-" if value is None else f"{value:,} ms"


def run(config: ChaosConfig, log: Callable[[str], None] = print) -> Report:
    out_dir = config.out_dir or Path(".chaos-results") / f"{datetime.now(UTC):%Y%m%dT%H%M%S}-seed{config.seed}"
    out_dir.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="payments-chaos-"))
    log(f"chaos: seed {config.seed}, {config.payments:,} payments at {config.rate:g}/s, home {home}")
    keep_logs = True  # unless the run ends with every check holding: then the logs go with the rest
    try:
        system, stop = start_system(home, config.instances)
        try:
            report = _run(config, system, out_dir, log)
            keep_logs = not report.ok
            return report
        finally:
            stop()
    finally:
        if keep_logs and (home / "logs").exists():
            shutil.copytree(home / "logs", out_dir / "logs", dirs_exist_ok=True)
            log(f"process logs kept in {out_dir / 'logs'}")
        shutil.rmtree(home, ignore_errors=True)


def _run(config: ChaosConfig, system: System, out_dir: Path, log: Callable[[str], None]) -> Report:
    faults = plan(config.seed, config.traffic_s, system.killable(), config.counts, brokers=BROKERS,
                  partitions=PARTITIONS)
    log("schedule:")
    for fault in faults:
        log("  " + fault.describe())
    (out_dir / "schedule.txt").write_text("\n".join(f.describe() for f in faults) + "\n")
    traffic = Traffic()
    timeline = command_plan(config, traffic.refund_plan)
    merchant_stop = threading.Event()
    merchant = threading.Thread(target=refund_when_settled, args=(system.bootstrap, system.topics, traffic,
                                                                  merchant_stop), name="merchant", daemon=True)
    merchant.start()
    injected: list[Injected] = []
    started = time.monotonic()
    started_ms = int(time.time() * 1000)
    threads = [
        threading.Thread(target=send, args=(system.bootstrap, system.topics.commands, timeline, traffic, started),
                         name="upstream", daemon=True),
        threading.Thread(target=inject, args=(system, [f for f in faults if f.kind == PROCESS_KILL], started,
                                              injected, log), name="process-faults", daemon=True),
        threading.Thread(target=inject, args=(system, [f for f in faults if f.kind != PROCESS_KILL], started,
                                              injected, log), name="cluster-faults", daemon=True),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    calm = time.monotonic()
    log(f"traffic and faults over at {calm - started:.0f}s ({traffic.undelivered} commands undelivered); "
        "waiting for quiescence")
    settled_down = True
    try:
        wait_for(lambda: quiescent(system, traffic), config.quiescence_timeout_s, "every payment in a final status",
                 interval_s=2)
    except AssertionError:  # the checks below name the payments that are not final
        settled_down = False
    quiescence_s = time.monotonic() - calm
    seen = observe(system, set(traffic.initiates))
    # Refunds are answered after the payment's terminal state: wait for each to be (a bounded wait).
    refunds_sent = {r.refund_id for rs in traffic.refunds.values() for r in rs}

    def refunds_answered() -> bool:
        nonlocal seen
        answered = {e.refund_id for events in seen.events.values() for e in events
                    if isinstance(e, PaymentRefunded | RefundRejected)}
        if refunds_sent <= answered:
            return True
        seen = observe(system, set(traffic.initiates))
        return False

    with contextlib.suppress(AssertionError):  # a refund left unanswered is reported by the check below
        wait_for(refunds_answered, 120, "every refund answered", interval_s=2)
    quiescence_s = time.monotonic() - calm
    merchant_stop.set()
    merchant.join(180)
    # Each refund is sent once its payment's settlement is out, for at most the settled amount: it must be made.
    refunded = {e.refund_id for events in seen.events.values() for e in events if isinstance(e, PaymentRefunded)}
    rejected = {e.refund_id: e.reason_code for events in seen.events.values() for e in events
                if isinstance(e, RefundRejected)}
    unanswered = refunds_sent - refunded
    missed = [f"{i.fault.kind} at {i.fault.at_s}s: {i.skipped}" for i in injected if i.skipped]
    checks = [Check("quiescent within the bound", settled_down,
                    f"{quiescence_s:.0f}s of at most {config.quiescence_timeout_s:.0f}s"),
              Check("every scheduled fault struck", len(injected) == len(faults) and not missed,
                    f"{len(injected) - len(missed)} of {len(faults)}" + (f"; MISSED: {missed[:3]}" if missed else "")),
              Check("every command delivered to Kafka", traffic.undelivered == 0,
                    f"{traffic.undelivered} undelivered", lost=traffic.undelivered),
              Check("every refund of a settled payment made", not unanswered,
                    f"{len(refunds_sent) - len(unanswered):,} of {len(refunds_sent):,}"
                    + (f"; rejected: {dict(Counter(rejected[r] for r in unanswered if r in rejected))}"
                       if unanswered else ""),
                    sorted({pid for pid, sent in traffic.refunds.items() for r in sent if r.refund_id in unanswered}),
                    lost=len(unanswered))]
    checks += check_payments(traffic, seen) + check_settlements(seen) + check_partner(system, seen)
    checks += check_ledger(system, seen) + check_projections(system) + check_processes(system, injected)
    windows = [(i.started_s, i.ended_s + 5.0) for i in injected if i.fault.kind != PROCESS_KILL and not i.skipped]
    involved = {pid for c in checks if not c.ok for pid in c.payments}
    if involved:
        _write_timelines(out_dir / "inspect", seen, sorted(involved)[:50])
    figures = {
        "payments": len(traffic.initiates), "cancels_sent": len(traffic.cancels), "resends": len(traffic.resends),
        "refunds_sent": sum(len(r) for r in traffic.refunds.values()),
        "faults": dict(by_kind([i.fault for i in injected if not i.skipped])),
        "skipped": sum(1 for i in injected if i.skipped),
        "lost": sum(c.lost for c in checks), "duplicated": sum(c.duplicated for c in checks),
        "unbalanced": sum(c.unbalanced for c in checks),
        "projection_differences": sum(1 for c in checks if c.name.startswith("projection ") and not c.ok),
        "quiescence_s": round(quiescence_s, 1),
        "latency": latencies(traffic, seen, windows, started_ms),
    }
    outcomes = Counter(seen.statuses.values())
    figures["failed_by_reason"] = dict(Counter(f"{e.stage}/{e.reason_code}" for events in seen.events.values()
                                               for e in events if isinstance(e, PaymentFailed)))
    report = Report(config={"seed": config.seed, "payments": config.payments, "rate": config.rate,
                            "instances": config.instances, "counts": asdict(config.counts)},
                    schedule=[f.describe() for f in faults],
                    injected=[{**asdict(i.fault), "started_s": i.started_s, "ended_s": i.ended_s,
                               "detail": i.detail, "skipped": i.skipped} for i in injected],
                    checks=checks, outcomes=dict(outcomes), figures=figures, out_dir=str(out_dir))
    (out_dir / "report.json").write_text(json.dumps(asdict(report), indent=2, default=str) + "\n")
    (out_dir / "report.txt").write_text(report.table() + "\n")
    return report
