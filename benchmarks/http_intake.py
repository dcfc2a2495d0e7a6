"""The HTTP intake's throughput and latency against its ceiling: an acknowledged Kafka produce per request.

Brings the local stack up (`payments stack up`), starts `payments run http-intake` as its own process,
trusting a JWKS served here, and sends `--requests` POST /v1/payments from `--concurrency` clients at
once, each with its own Idempotency-Key, as fast as the answers come. Each answer is a 202 only after
the Idempotency-Key row is in PostgreSQL and Kafka acknowledged the command (acks=all).

The baseline, measured in the same run on the same broker: an idempotent producer (acks=all) with the
same number of commands in flight at once, each awaited for its delivery report: what an intake that
did nothing but produce would reach. Prints both, their ratio, and the latency percentiles.

    .venv/bin/python benchmarks/http_intake.py --requests 3000 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import psutil
from confluent_kafka import Producer

from ops.settings import Settings
from ops.stack import LocalStack
from ops.supervisor import ServiceProcess, free_port
from payments.runtime.connection import client_config
from payments.runtime.topics import Topics, TopicSpec, ensure_topics
from tests.oauth import Issuer

BODY = {"amount": {"amount_minor": 1250, "currency": "EUR"}, "payer_account": "acc-bench-payer",
        "payee_account": "acc-bench-payee", "partner": "simbank", "reference": "bench"}


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def through_http(url: str, token: str, requests: int, concurrency: int) -> tuple[float, list[float]]:
    latencies: list[float] = []
    queue = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        async def worker() -> None:
            for _ in queue:
                started = time.perf_counter()
                response = await client.post("/v1/payments", json=BODY, headers={
                    "Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex})
                if response.status_code != 202:
                    raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")
                latencies.append(time.perf_counter() - started)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies


def through_producer(settings: Settings, topic: str, requests: int, concurrency: int) -> tuple[float, list[float]]:
    """`requests` records, `concurrency` of them unacknowledged at most, each timed to its delivery report."""
    producer = Producer(client_config(settings.kafka, {"enable.idempotence": True, "acks": "all", "linger.ms": 0}))
    value = b"x" * 400  # about an encoded InitiatePayment with its headers
    latencies: list[float] = []
    in_flight = 0

    def delivered(error: object, _message: object, started: float) -> None:
        nonlocal in_flight
        in_flight -= 1
        if error is not None:
            raise RuntimeError(f"delivery failed: {error}")
        latencies.append(time.perf_counter() - started)

    began = time.perf_counter()
    for i in range(requests):
        while in_flight >= concurrency:
            producer.poll(0.001)
        in_flight += 1
        now = time.perf_counter()
        producer.produce(topic, key=str(i).encode(), value=value,
                         on_delivery=lambda error, message, now=now: delivered(error, message, now))
        producer.poll(0)
    producer.flush(30)
    return time.perf_counter() - began, latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    settings = Settings.load()
    LocalStack.of(settings).up()
    topics = Topics(prefix=f"bench{uuid.uuid4().hex[:6]}.")
    ensure_topics(settings.kafka, [TopicSpec(topics.commands, settings.partitions)])
    issuer = Issuer("https://issuer.bench")
    issuer.add_rsa("bench")
    jwks_url = issuer.serve()
    port = free_port()
    env = {"KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "DATABASE_URL": settings.database,
           "PAYMENTS_TOPIC_PREFIX": topics.prefix, "PAYMENTS_HTTP_PORT": str(port),
           "PAYMENTS_OAUTH_ISSUER": issuer.issuer, "PAYMENTS_OAUTH_JWKS_URL": jwks_url,
           "PAYMENTS_HTTP_RATE_PER_S": "1000000", "PAYMENTS_HTTP_RATE_BURST": "1000000"}
    intake = ServiceProcess(["http-intake"], log_dir=Path(tempfile.mkdtemp(prefix="bench-http-")), env=env)
    intake.start().wait_ready()
    try:
        token = issuer.token(sub="bench-client", exp=int(time.time()) + 3600)
        asyncio.run(through_http(f"http://127.0.0.1:{port}", token, min(200, args.requests), args.concurrency))
        assert intake.process is not None
        server, here = psutil.Process(intake.process.pid), psutil.Process()
        cpu_before = (sum(server.cpu_times()[:2]), sum(here.cpu_times()[:2]))
        http_s, http_lat = asyncio.run(through_http(f"http://127.0.0.1:{port}", token, args.requests,
                                                    args.concurrency))
        server_ms = (sum(server.cpu_times()[:2]) - cpu_before[0]) * 1000 / args.requests
        client_ms = (sum(here.cpu_times()[:2]) - cpu_before[1]) * 1000 / args.requests
        base_s, base_lat = through_producer(settings, topics.commands, args.requests, args.concurrency)
    finally:
        intake.stop()
        issuer.stop()
    http_rate, base_rate = args.requests / http_s, args.requests / base_s
    print(f"\n{args.requests} requests, {args.concurrency} at once; 1 broker (KRaft) and PostgreSQL on this "
          f"machine ({os.cpu_count()} cores), the intake 1 process, the load from 1 process beside it")
    print(f"{'':>26} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for label, rate, lat in (("POST /v1/payments", http_rate, http_lat),
                             ("acknowledged produce", base_rate, base_lat)):
        print(f"{label:>26} {rate:>8.0f} {statistics.median(lat) * 1000:>8.1f} {percentile(lat, 0.99) * 1000:>8.1f}")
    print(f"HTTP intake / acknowledged produce: {http_rate / base_rate:.0%}")
    print(f"CPU per request: the intake {server_ms:.2f} ms, the load generator (httpx) {client_ms:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
