"""`payments demo`: the main job on the embedded default, start to finish.

1. bring the local stack up (Kafka + PostgreSQL) unless KAFKA_BOOTSTRAP_SERVERS / DATABASE_URL say otherwise;
2. start every service and projection of the registry as its own process, on topics under a fresh
   prefix so runs never mix;
   with a risk model trained on synthetic traffic (ops/demo_risk.py) in shadow beside the v1 model;
3. publish a batch of sample payments (several currencies, 0/2/3 decimal places);
4. wait, with a deadline, until the read model has an outcome for each, and print it;
5. promote the trained model (recorded on risk.models, as `payments risk promote` does), publish a
   card-testing burst, and print how the model declined it and which features drove each decline;
6. print where each process serves its metrics, a few live figures from them, and the trace of the
   first payment as a tree (the services export spans over OTLP to a receiver in this process);
7. stop the services (SIGTERM, clean group leave) and the stack it started.
"""

from __future__ import annotations

import sys
import tempfile
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from confluent_kafka import Producer
from psycopg import sql

from consumers.risk.artifact import Manifest
from ops.demo_risk import (
    card_testing_burst,
    describe_burst,
    describe_shadow,
    promote,
    risk_answers,
    train_model,
)
from ops.registry import process_args, topology
from ops.settings import Settings
from ops.stack import LocalStack
from ops.supervisor import ServiceProcess, free_port, start_all
from ops.tracesink import TraceSink, new_traceparent, tree
from payments.contracts.codec import Serde
from payments.contracts.envelope import build_headers
from payments.contracts.messages import InitiatePayment
from payments.money import Money, is_known_currency
from payments.runtime.clients import WireHeaders
from payments.runtime.connection import Kafka, client_config
from payments.runtime.topics import Topics, ensure_topics
from projections.migrate import migrate

# The demo is deterministic: ordinary payees are accepted by the simulated partner, and the
# `acc-sim-*` payees force a decline or a lost reply (see docs/participants.md). Saga timers run 50x faster.
DEMO_ENV = {"PAYMENTS_PARTNER_DECLINE_RATE": "0", "PAYMENTS_PARTNER_TIMEOUT_RATE": "0",
            "PAYMENTS_PARTNER_ERROR_RATE": "0", "PAYMENTS_SAGA_TIME_SCALE": "0.02"}
TERMINAL = {"SETTLED", "FAILED", "CANCELLED", "REJECTED", "REFUNDED", "COMPENSATION_FAILED"}
WAIT_TIMEOUT_S = 120
SAMPLES = [  # payer, payee, amount, currency: what should happen
    ("acc-alice", "acc-bob", "12.50", "EUR"),            # settles
    ("acc-dave", "acc-erin", "4300", "JPY"),             # settles, 0 decimals
    ("acc-frank", "acc-grace", "12.345", "BHD"),         # settles, 3 decimals
    ("acc-heidi", "acc-ivan", "250.00", "USD"),          # settles
    ("acc-judy", "acc-sim-timeout-1", "75.10", "GBP"),   # partner reply lost: queried, then settles
    ("acc-alice", "acc-sim-decline-1", "19.99", "EUR"),  # partner declines: funds released, fails
    ("acc-poor", "acc-bob", "500.00", "EUR"),            # insufficient funds: fails
    ("acc-blocked", "acc-bob", "5.00", "EUR"),           # risk declines: fails
    ("acc-carol", "acc-carol", "1.00", "EUR"),           # payer = payee: rejected at intake
    ("acc-bob", "acc-alice", "1000", "XTS"),             # unknown currency: rejected at intake
]


def _amount(text: str, currency: str) -> Money:
    # An unknown currency cannot be parsed as a decimal: it is given in minor units, to be rejected.
    return Money.parse(text, currency) if is_known_currency(currency) else Money.of(int(text), currency)


def _show(money: Money) -> str:
    known = is_known_currency(money.currency)
    return money.format() if known else f"{money.amount_minor} {money.currency} (minor)"


def sample_commands() -> list[InitiatePayment]:
    now = datetime.now(UTC)
    commands = []
    for payer, payee, amount, currency in SAMPLES:
        payment_id = str(uuid.uuid4())
        commands.append(InitiatePayment(
            command_id=str(uuid.uuid4()), idempotency_key=f"demo-{payment_id}", payment_id=payment_id,
            payer_account=payer, payee_account=payee, amount=_amount(amount, currency), partner="simbank",
            reference="demo", requested_at=now))
    return commands


def publish(bootstrap_servers: Kafka, serde: Serde, topics: Topics, commands: list[InitiatePayment],
            traceparents: dict[str, str] | None = None) -> None:
    producer = Producer(client_config(bootstrap_servers, {"partitioner": "murmur2_random",
                                                          "enable.idempotence": True}))
    for command in commands:
        traceparent = (traceparents or {}).get(command.payment_id)
        headers: WireHeaders = [*build_headers(command, source="demo", traceparent=traceparent,
                                               content_type=serde.content_type)]
        producer.produce(topics.commands, key=command.payment_id.encode(), value=serde.encode(command),
                         headers=headers)
    left = producer.flush(30)
    if left:
        raise RuntimeError(f"{left} demo commands were not delivered")


def outcomes(database_url: str, payment_ids: list[str]) -> dict[str, tuple[str, str | None]]:
    """Terminal outcomes from the payment-status read model."""
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT payment_id, status, reason_code FROM payment_status WHERE payment_id = ANY(%s)",
                            (payment_ids,)).fetchall()
    return {str(pid): (str(status), reason) for pid, status, reason in rows if status in TERMINAL}


def wait_for_outcomes(database_url: str, ids: list[str], services: list[ServiceProcess],
                      log_dir: Path) -> dict[str, tuple[str, str | None]]:
    """Poll the read model until every payment has an outcome, a service died, or WAIT_TIMEOUT_S passed."""
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    seen: dict[str, tuple[str, str | None]] = {}
    while time.monotonic() < deadline and len(seen) < len(ids):
        time.sleep(0.5)
        seen = outcomes(database_url, ids)
        dead = [s.args for s in services if not s.alive()]
        if dead:
            print(f"services exited early: {dead}; logs in {log_dir}", file=sys.stderr)
            break
    return seen


def ledger_summary(database_url: str, payment_ids: list[str]) -> str:
    """Journal entries of the demo's payments and whether each balances per currency."""
    with psycopg.connect(database_url) as conn:
        entries = conn.execute("SELECT count(*) FROM journal_entries WHERE payment_id = ANY(%s)",
                               (payment_ids,)).fetchone()
        unbalanced = conn.execute(
            """SELECT count(*) FROM (SELECT p.entry_id FROM postings p JOIN journal_entries e USING (entry_id)
                                    WHERE e.payment_id = ANY(%s) GROUP BY p.entry_id, p.currency
                                    HAVING sum(p.amount_minor) <> 0) AS bad""", (payment_ids,)).fetchone()
        report = conn.execute("SELECT day, currency, partner, settled_count, settled_minor FROM settlement_report "
                              "ORDER BY day DESC, currency LIMIT 10").fetchall()
    assert entries is not None and unbalanced is not None
    lines = [f"ledger: {entries[0]} journal entries for these payments, {unbalanced[0]} unbalanced"]
    lines += [f"settlement report {day} {currency} {partner}: {count} settled, {Money.of(total, currency).format()}"
              for day, currency, partner, count, total in report]
    return "\n".join(lines)


METRICS_SHOWN = ("payments_payment_outcomes_total", "payments_saga_duration_seconds_count",
                 "payments_records_dead_lettered_total", "payments_ledger_net", "payments_in_flight",
                 "payments_risk_assessments_total", "payments_risk_shadow_agreement", "payments_risk_model")


def metrics_summary(services: list[ServiceProcess]) -> list[str]:
    """Where each process serves /metrics, and a few of its non-zero figures right now."""
    lines = ["metrics (Prometheus text format, while the services run; deploy/prometheus/prometheus.yml "
             "scrapes them, docs/slo.md lists them):"]
    for service in services:
        url = f"http://127.0.0.1:{service.health_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
        except OSError as error:
            lines.append(f"  {' '.join(service.args):26} {url}  (no answer: {error})")
            continue
        shown = [line.replace('otel_scope_name="payments",otel_scope_schema_url="",otel_scope_version="",', "")
                 for line in text.splitlines() if line.startswith(METRICS_SHOWN) and not line.endswith(" 0.0")]
        lines.append(f"  {' '.join(service.args):26} {url}")
        lines += [f"      {line}" for line in shown[:6]]
    return lines


def trace_of(sink: TraceSink, trace_id: str, services: int, prefix: str, timeout_s: float = 20.0) -> list[str]:
    """The payment's trace as a tree, once every service's spans arrived (they export in batches)."""
    deadline = time.monotonic() + timeout_s
    spans = sink.trace(trace_id)
    while time.monotonic() < deadline and len({s.service for s in spans}) < services:
        time.sleep(0.5)
        spans = sink.trace(trace_id)
    return [f"trace {trace_id} of the first payment: {len(spans)} spans from {len({s.service for s in spans})} "
            f"processes (offset from the first span, span [kind] on topics under {prefix}, duration, process)",
            *tree(spans, strip=prefix)]


def risk_part(settings: Settings, services: list[ServiceProcess], database_url: str, log_dir: Path,
              version: str) -> bool:
    """Step 5: what the model in shadow would have decided, its promotion, then a card-testing burst and what the
    model decided and why. True when the model (not a rule) declined at least one payment of the burst."""
    _, shadowed = risk_answers(settings, set())
    print("\n".join(describe_shadow(shadowed)))
    risk = next(s for s in services if s.args == ["risk"])
    print(promote(settings, risk), flush=True)
    burst = card_testing_burst()
    publish(settings.kafka, settings.serde(), settings.topics, burst)
    wait_for_outcomes(database_url, [c.payment_id for c in burst], services, log_dir)
    answers, _ = risk_answers(settings, {c.payment_id for c in burst})
    threshold = Manifest.model_validate_json((settings.risk_models_dir / f"{version}.json").read_text()
                                             ).decline_threshold_bp if settings.risk_models_dir else 0
    print("\n".join(describe_burst(burst, answers, threshold)) + "\n")
    return any("SCORE_ABOVE_THRESHOLD" in a.reasons and a.model_version == version for a in answers.values())


def fresh_database(server_url: str, name: str) -> str:
    """A new database for this run's read models; earlier demo databases are dropped."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        for (old,) in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'demo%'").fetchall():
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(old)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def main(settings: Settings) -> int:
    stack = LocalStack.of(settings)
    was_running = stack.kafka.is_running() and stack.postgres.is_running()
    print("starting the local stack (Kafka KRaft + PostgreSQL)...", flush=True)
    stack.up()
    run = f"demo{datetime.now(UTC):%Y%m%d%H%M%S}"
    topics = Topics(prefix=f"{run}.")
    ensure_topics(settings.kafka, topology(topics, settings.partitions))
    database_url = fresh_database(settings.database, run)
    migrate(database_url)
    log_dir = Path(tempfile.mkdtemp(prefix="payments-demo-"))
    model = train_model(log_dir / "models")
    print(model.summary, flush=True)
    sink = TraceSink(0)  # the services' OTLP exports come here (OTEL_BSP_SCHEDULE_DELAY: every 200 ms)
    env = {"KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "DATABASE_URL": database_url,
           "PAYMENTS_TOPIC_PREFIX": topics.prefix, "PAYMENTS_PARTNER_DATA_DIR": str(log_dir / "partner"),
           "PAYMENTS_PARTNER_SIM_PORT": str(free_port()), "PAYMENTS_TRACES_EXPORTER": "otlp",
           "OTEL_EXPORTER_OTLP_ENDPOINT": sink.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "200",
           "PAYMENTS_RISK_MODELS_DIR": str(model.directory), "PAYMENTS_RISK_CANDIDATE": model.version,
           **DEMO_ENV}
    services = [ServiceProcess(args, log_dir=log_dir, env=env, health_port=free_port()) for args in process_args()]
    code = 1
    try:
        start_all(services)
        commands = sample_commands()
        traceparents = {c.payment_id: new_traceparent() for c in commands}
        started = time.monotonic()
        publish(settings.kafka, settings.serde(), topics, commands,
                {pid: tp for pid, (tp, _) in traceparents.items()})
        print(f"published {len(commands)} payments to {topics.commands}; waiting for outcomes...", flush=True)
        seen = wait_for_outcomes(database_url, [c.payment_id for c in commands], services, log_dir)
        # A client that retries the first payment with a freshly minted payment id but the same
        # idempotency key: the intake recognises the request and no second payment is made.
        retry = commands[0].model_copy(update={"payment_id": str(uuid.uuid4()), "command_id": str(uuid.uuid4())})
        publish(settings.kafka, settings.serde(), topics, [retry])
        commands.append(retry)
        ids = [c.payment_id for c in commands]
        seen = wait_for_outcomes(database_url, ids, services, log_dir)
        elapsed = time.monotonic() - started
        print(f"\n{'payment':38} {'amount':>16}  {'payer -> payee':34} status")
        for command in commands:
            status, reason = seen.get(command.payment_id, ("NO OUTCOME YET", None))
            route = f"{command.payer_account} -> {command.payee_account}"
            note = "  <- a retry of the first, new payment id, same key" if command is retry else ""
            print(f"{command.payment_id:38} {_show(command.amount):>16}  {route:34} {status}"
                  + (f" ({reason})" if reason else "") + note)
        print(f"\n{len(seen)}/{len(ids)} payments have an outcome after {elapsed:.1f}s; service logs: {log_dir}")
        time.sleep(2)  # let the ledger and report projections catch up with the last events
        print(ledger_summary(database_url, ids))
        print(f"read models of this run: {database_url}\n")
        # The operator's settings as the services' (until a change is recorded, they say what is deployed)
        declined = risk_part(settings.model_copy(update={"topic_prefix": topics.prefix, "risk_candidate": model.version,
                                                         "risk_models_dir": model.directory}),
                             services, database_url, log_dir, model.version)
        print("\n".join(metrics_summary(services)) + "\n")
        # Every Kafka->Kafka service and projection handles a settled payment (the simulator exports nothing).
        print("\n".join(trace_of(sink, traceparents[commands[0].payment_id][1], len(services) - 1, topics.prefix)))
        code = 0 if len(seen) == len(ids) and declined else 1
    finally:
        sink.close()
        for service in services:
            service.stop()
        if not was_running:
            print("stopping the local stack...", flush=True)
            stack.down()
    return code
