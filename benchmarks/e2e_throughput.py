"""End-to-end throughput: N payments through every service on one machine, measured from the log.

Prints payments/s (first PaymentInitiated to last terminal event) and the initiated->settled latency
percentiles, taken from the events' own timestamps. Figures only: nothing here asserts a speed.

    .venv/bin/python benchmarks/e2e_throughput.py --payments 2000
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Producer

from ops.registry import topology
from ops.settings import Settings
from ops.stack import LocalStack
from ops.supervisor import ServiceProcess, start_all
from payments.contracts.codec import SingleObjectSerde
from payments.contracts.envelope import build_headers
from payments.contracts.messages import InitiatePayment, PaymentFailed, PaymentInitiated, PaymentSettled
from payments.money import Money
from payments.runtime.reader import committed_records, partitions_of
from payments.runtime.topics import Topics, ensure_topics

PAYERS = ["acc-alice", "acc-carol", "acc-dave", "acc-frank", "acc-heidi", "acc-judy", "acc-payer-1", "acc-bob"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--payments", type=int, default=1000)
    parser.add_argument("--timeout-s", type=float, default=600)
    args = parser.parse_args()
    settings = Settings.load()
    LocalStack.of(settings).up()
    topics = Topics(prefix=f"bench{uuid.uuid4().hex[:6]}.")
    ensure_topics(settings.bootstrap_servers, topology(topics, settings.partitions))
    log_dir = Path(tempfile.mkdtemp(prefix="bench-"))
    env = {"KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "DATABASE_URL": settings.database,
           "PAYMENTS_TOPIC_PREFIX": topics.prefix, "PAYMENTS_PARTNER_LATENCY_MS": "1",
           "PAYMENTS_PARTNER_DECLINE_RATE": "0", "PAYMENTS_PARTNER_TIMEOUT_RATE": "0",
           "PAYMENTS_PARTNER_DATA_DIR": str(log_dir / "partner")}
    names = ("intake", "gate", "idempotency", "orchestrator", "risk", "funds", "partner")
    services = start_all([ServiceProcess([name], log_dir=log_dir, env=env) for name in names])
    serde = SingleObjectSerde()
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers, "partitioner": "murmur2_random",
                         "linger.ms": 5})
    try:
        for i in range(args.payments):
            payment_id = str(uuid.uuid4())
            command = InitiatePayment(
                command_id=str(uuid.uuid4()), idempotency_key=f"bench-{payment_id}", payment_id=payment_id,
                payer_account=PAYERS[i % len(PAYERS)], payee_account="acc-erin", amount=Money.of(100 + i % 50, "EUR"),
                partner="simbank", reference=None, requested_at=datetime.now(UTC))
            producer.produce(topics.commands, key=payment_id.encode(), value=serde.encode(command),
                             headers=build_headers(command, source="bench", traceparent=None))
            producer.poll(0)
        producer.flush(60)
        deadline = time.monotonic() + args.timeout_s
        while time.monotonic() < deadline:
            records = committed_records(settings.bootstrap_servers, partitions_of(settings.bootstrap_servers,
                                                                                  [topics.events]))
            events = [serde.decode(r.value()) for r in records if r.value() is not None]
            done = {e.payment_id for e in events if isinstance(e, PaymentSettled | PaymentFailed)}
            print(f"\r{len(done)}/{args.payments} payments terminal", end="", flush=True)
            if len(done) == args.payments:
                break
            time.sleep(2)
        print()
    finally:
        for process in services:
            process.stop()
    initiated = {e.payment_id: e.occurred_at for e in events if isinstance(e, PaymentInitiated)}
    settled = {e.payment_id: e.occurred_at for e in events if isinstance(e, PaymentSettled)}
    first, last = min(initiated.values()), max([*settled.values(), *initiated.values()])
    span_s = (last - first).total_seconds()
    latencies_ms = sorted((settled[p] - initiated[p]).total_seconds() * 1000 for p in settled)
    print(f"payments: {args.payments}, settled: {len(settled)}, span: {span_s:.1f}s, "
          f"throughput: {len(settled) / span_s:.0f} payments/s")
    print(f"conditions: {len(names)} services ({', '.join(names)}), 1 instance each, simulated partner latency "
          f"1 ms, no projections, {os.cpu_count()} cores, Kafka and PostgreSQL on this machine")
    cut = statistics.quantiles(latencies_ms, n=100)
    print(f"initiated->settled latency ms: p50 {cut[49]:.0f}, p95 {cut[94]:.0f}, p99 {cut[98]:.0f}, "
          f"max {latencies_ms[-1]:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
