"""One partner gateway instance against the simulated partner over HTTP: partner calls/s and CPU per call.

Feeds N `SubmitToPartner` commands straight into `partner.commands` (as the orchestrator would), runs
only the partner simulator and one gateway, and measures from the first reply to the last (the replies'
Kafka timestamps). The same run is made at each latency; the first (1 ms) is the baseline: what the
gateway does when the partner costs nothing. CPU is the process's user+system time over the run,
divided by the calls. Figures only: nothing here asserts a speed.

    .venv/bin/python benchmarks/partner_gateway.py --calls 20000 --latencies 1 200,250
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
from confluent_kafka import Producer

from ops.registry import topology
from ops.settings import Settings
from ops.stack import LocalStack
from ops.supervisor import ServiceProcess, free_port, start_all
from payments.contracts.codec import SingleObjectSerde
from payments.contracts.envelope import build_headers
from payments.contracts.participants import SubmitToPartner
from payments.contracts.topics import PARTNER_COMMANDS, PARTNER_REPLIES
from payments.money import Money
from payments.runtime.connection import client_config
from payments.runtime.reader import committed_records, partitions_of
from payments.runtime.topics import Topics, ensure_topics


@dataclass(frozen=True)
class Run:
    latency: str
    calls: int
    span_s: float
    gateway_cpu_ms: float  # per call
    sim_cpu_ms: float
    peak_in_flight: int

    @property
    def rate(self) -> float:
        return self.calls / self.span_s


def cpu_s(process: ServiceProcess) -> float:
    assert process.process is not None
    times = psutil.Process(process.process.pid).cpu_times()
    return float(times.user + times.system)


def run_once(settings: Settings, calls: int, latency: str, in_flight: int, timeout_s: float) -> Run:
    topics = Topics(prefix=f"gw{uuid.uuid4().hex[:6]}.")
    ensure_topics(settings.kafka, topology(topics, settings.partitions))
    log_dir = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    port = free_port()
    env = {"KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "PAYMENTS_TOPIC_PREFIX": topics.prefix,
           "PAYMENTS_PARTNER_LATENCY_MS": latency, "PAYMENTS_PARTNER_DECLINE_RATE": "0",
           "PAYMENTS_PARTNER_TIMEOUT_RATE": "0", "PAYMENTS_PARTNER_DATA_DIR": str(log_dir / "partner"),
           "PAYMENTS_PARTNER_SIM_PORT": str(port), "PAYMENTS_PARTNER_MAX_IN_FLIGHT": str(in_flight)}
    sim, gateway = start_all([ServiceProcess([name], log_dir=log_dir, env=env) for name in ("partner-sim", "partner")])
    serde = SingleObjectSerde()
    producer = Producer(client_config(settings.kafka, {"linger.ms": 5}))
    replies_topic = topics.name(PARTNER_REPLIES)
    try:
        cpu_before = cpu_s(gateway), cpu_s(sim)
        now = datetime.now(UTC)
        for _ in range(calls):
            payment_id = str(uuid.uuid4())
            command = SubmitToPartner(payment_id=payment_id, command_id=str(uuid.uuid4()), issued_at=now,
                                      partner="simbank", submission_id=f"bench-{payment_id}",
                                      amount=Money.of(1000, "EUR"), payer_account="acc-alice", payee_account="acc-bob",
                                      expires_at=now + timedelta(minutes=30))
            producer.produce(topics.name(PARTNER_COMMANDS), key=payment_id.encode(), value=serde.encode(command),
                             headers=build_headers(command, source="bench", traceparent=None))
            producer.poll(0)
        producer.flush(60)
        deadline = time.monotonic() + timeout_s
        stamps: list[int] = []
        while time.monotonic() < deadline:
            records = committed_records(settings.kafka, partitions_of(settings.kafka, [replies_topic]))
            stamps = [r.timestamp()[1] for r in records if r.value() is not None]
            print(f"\r  partner latency {latency} ms: {len(stamps)}/{calls} replies", end="", flush=True)
            if len(stamps) >= calls:
                break
            time.sleep(1)
        print()
        cpu_after = cpu_s(gateway), cpu_s(sim)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sim/stats", timeout=10) as response:
            peak = int(json.loads(response.read())["max_in_progress"])
    finally:
        gateway.stop()
        sim.stop()
    span_s = (max(stamps) - min(stamps)) / 1000
    return Run(latency, len(stamps), span_s, (cpu_after[0] - cpu_before[0]) * 1000 / calls,
               (cpu_after[1] - cpu_before[1]) * 1000 / calls, peak)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--latencies", nargs="+", default=["1", "200,250"],
                        help="simulated partner latencies, 'median' or 'median,p99' in ms; the first is the baseline")
    parser.add_argument("--in-flight", type=int, default=512, help="PAYMENTS_PARTNER_MAX_IN_FLIGHT")
    parser.add_argument("--timeout-s", type=float, default=600)
    args = parser.parse_args()
    settings = Settings.load()
    LocalStack.of(settings).up()
    runs = [run_once(settings, args.calls, latency, args.in_flight, args.timeout_s) for latency in args.latencies]
    baseline = runs[0]
    print(f"\none partner gateway, {args.calls} submissions, at most {args.in_flight} calls in flight; the partner "
          f"simulator on the same machine ({os.cpu_count()} cores, Kafka too)")
    print(f"{'partner latency ms (median,p99)':>32} {'calls/s':>8} {'vs baseline':>12} {'peak in flight':>15} "
          f"{'gateway CPU ms/call':>20} {'simulator CPU ms/call':>22}")
    for run in runs:
        print(f"{run.latency:>32} {run.rate:>8.0f} {run.rate / baseline.rate:>11.0%} {run.peak_in_flight:>15} "
              f"{run.gateway_cpu_ms:>20.2f} {run.sim_cpu_ms:>22.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
