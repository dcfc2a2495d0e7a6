"""End-to-end throughput: N payments through every service on one machine, at two partner latencies.

Runs the same burst twice in one invocation, first with the simulated partner answering in 1 ms (the
baseline), then in about 200 ms (median 200, p99 250), and prints both side by side with their ratio.
Per run, from the events' own timestamps: payments/s (all settlements over first PaymentInitiated ->
last terminal event; this counts one end-to-end latency too, so on a short burst a slower partner
weighs more) and the initiated->settled latency percentiles.
Figures only: nothing here asserts a speed.

The processes come from the registry (ops.registry): every simulator, and every service on the payment
path, i.e. each service whose output another service reads (today intake, gate, idempotency,
orchestrator, risk, funds, partner). A service only downstream of the saga (today the settlement
publisher, which reads payments.events for subscribers) and the projections are left out: nothing
the benchmark measures waits for them, they only add load. A participant added to the registry is
benchmarked without a change here.

    .venv/bin/python benchmarks/e2e_throughput.py --payments 4000 --latencies 1 200,250
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil
from confluent_kafka import Producer

from ops.registry import SERVICES as REGISTERED_SERVICES
from ops.registry import SIMULATORS, topology
from ops.settings import Settings
from ops.stack import LocalStack
from ops.supervisor import ServiceProcess, free_port, start_all
from payments.contracts.codec import SingleObjectSerde
from payments.contracts.envelope import build_headers
from payments.contracts.messages import InitiatePayment, PaymentFailed, PaymentInitiated, PaymentSettled
from payments.money import Money
from payments.runtime.reader import committed_records, partitions_of
from payments.runtime.topics import Topics, ensure_topics

PAYERS = ["acc-alice", "acc-carol", "acc-dave", "acc-frank", "acc-heidi", "acc-judy", "acc-payer-1", "acc-bob"]


def payment_path() -> tuple[str, ...]:
    """The registered services some other registered service reads from, in registry order."""
    read_by: dict[str, set[str]] = {}
    for name, spec in REGISTERED_SERVICES.items():
        for topic in spec.logic.input_topics:
            read_by.setdefault(topic, set()).add(name)
    return tuple(name for name, spec in REGISTERED_SERVICES.items()
                 if any(read_by.get(topic, set()) - {name} for topic in spec.logic.output_topics))


SERVICES = payment_path()
PROCESSES = (*SIMULATORS, *SERVICES)  # `payments run` names, simulators first: the services call them


@dataclass(frozen=True)
class Run:
    latency: str
    payments: int
    settled: int
    span_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    cpu_ms: dict[str, float]  # per process: CPU per payment over the run

    @property
    def throughput(self) -> float:
        return self.settled / self.span_s


def cpu_s(process: ServiceProcess) -> float:
    assert process.process is not None
    times = psutil.Process(process.process.pid).cpu_times()
    return float(times.user + times.system)


def run_once(settings: Settings, payments: int, latency: str, timeout_s: float) -> Run:
    topics = Topics(prefix=f"bench{uuid.uuid4().hex[:6]}.")
    ensure_topics(settings.bootstrap_servers, topology(topics, settings.partitions))
    log_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    env = {"KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "DATABASE_URL": settings.database,
           "PAYMENTS_TOPIC_PREFIX": topics.prefix, "PAYMENTS_PARTNER_LATENCY_MS": latency,
           "PAYMENTS_PARTNER_DECLINE_RATE": "0", "PAYMENTS_PARTNER_TIMEOUT_RATE": "0",
           "PAYMENTS_PARTNER_DATA_DIR": str(log_dir / "partner"), "PAYMENTS_PARTNER_SIM_PORT": str(free_port())}
    services = start_all([ServiceProcess([name], log_dir=log_dir, env=env) for name in PROCESSES])
    serde = SingleObjectSerde()
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "partitioner": "murmur2_random",
                         "linger.ms": 5})
    events: list[object] = []
    cpu_before = {process.args[0]: cpu_s(process) for process in services}
    cpu_after = cpu_before
    try:
        for i in range(payments):
            payment_id = str(uuid.uuid4())
            command = InitiatePayment(
                command_id=str(uuid.uuid4()), idempotency_key=f"bench-{payment_id}", payment_id=payment_id,
                payer_account=PAYERS[i % len(PAYERS)], payee_account="acc-erin", amount=Money.of(100 + i % 50, "EUR"),
                partner="simbank", reference=None, requested_at=datetime.now(UTC))
            producer.produce(topics.commands, key=payment_id.encode(), value=serde.encode(command),
                             headers=build_headers(command, source="bench", traceparent=None))
            producer.poll(0)
        producer.flush(60)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            records = committed_records(settings.bootstrap_servers, partitions_of(settings.bootstrap_servers,
                                                                                  [topics.events]))
            events = [serde.decode(r.value()) for r in records if r.value() is not None]
            done = {e.payment_id for e in events if isinstance(e, PaymentSettled | PaymentFailed)}
            print(f"\r  partner latency {latency} ms: {len(done)}/{payments} payments terminal", end="", flush=True)
            if len(done) == payments:
                break
            time.sleep(2)
        print()
        cpu_after = {process.args[0]: cpu_s(process) for process in services}
    finally:
        for process in services:
            process.stop()
    initiated = {e.payment_id: e.occurred_at for e in events if isinstance(e, PaymentInitiated)}
    settled = {e.payment_id: e.occurred_at for e in events if isinstance(e, PaymentSettled)}
    first, last = min(initiated.values()), max([*settled.values(), *initiated.values()])
    latencies_ms = sorted((settled[p] - initiated[p]).total_seconds() * 1000 for p in settled)
    cut = statistics.quantiles(latencies_ms, n=100)
    cpu_ms = {name: (cpu_after[name] - cpu_before[name]) * 1000 / payments for name in cpu_before}
    return Run(latency, payments, len(settled), (last - first).total_seconds(), cut[49], cut[94], cut[98], cpu_ms)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--payments", type=int, default=4000)
    parser.add_argument("--latencies", nargs="+", default=["1", "200,250"],
                        help="simulated partner latencies, 'median' or 'median,p99' in ms; the first is the baseline")
    parser.add_argument("--timeout-s", type=float, default=600)
    args = parser.parse_args()
    settings = Settings.load()
    LocalStack.of(settings).up()
    runs = [run_once(settings, args.payments, latency, args.timeout_s) for latency in args.latencies]
    baseline = runs[0]
    print(f"\nend to end, {args.payments} payments in one burst; {len(SERVICES)} services ({', '.join(SERVICES)}), "
          f"1 instance each, plus {', '.join(SIMULATORS)}; no projections; {os.cpu_count()} cores, Kafka and "
          "PostgreSQL on this machine")
    print(f"{'partner latency ms (median,p99)':>32} {'settled':>8} {'payments/s':>11} {'vs baseline':>12} "
          f"{'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}")
    for run in runs:
        ratio = run.throughput / baseline.throughput
        print(f"{run.latency:>32} {run.settled:>8} {run.throughput:>11.0f} {ratio:>11.0%} "
              f"{run.p50_ms:>7.0f} {run.p95_ms:>7.0f} {run.p99_ms:>7.0f}")
    print("\nCPU ms per payment (user+system, over the run):")
    print(f"{'partner latency ms':>32} " + " ".join(f"{name:>12}" for name in PROCESSES))
    for run in runs:
        print(f"{run.latency:>32} " + " ".join(f"{run.cpu_ms[name]:>12.2f}" for name in PROCESSES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
