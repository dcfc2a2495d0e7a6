"""Load generator for the pipeline benchmark: publishes payments and times them, by its own clock.

A separate process from the pipeline it loads (benchmarks/pipeline.py starts it), publishing
`InitiatePayment` commands to the commands topic like an upstream system with its own Kafka client on
librdkafka's defaults, and watching, in threads of its own:

- the settlement events (`payments.settlements`, read_committed, from the ends they had before the first
  publish): the first arrival of each payment's event;
- the status row (`payment_status` in PostgreSQL): the first poll that finds it in a final status;
- the ledger (`journal_entries`): the first poll that finds the payment's `PaymentSettled` entry.

Every time is `time.monotonic()` in this process: the latency of a payment is from when it was due to be
published to when this process saw it arrive, never the events' own timestamps.

Two modes:
- max (`--payments N`, no `--rate`): all N at once, as fast as the producer takes them; the pipeline's
  rate is N over first publish -> last payment visible (see `summarize`).
- open loop (`--rate R --payments N`): payment i is due at start + i/R whatever happened to the ones
  before it (the generator never waits for the pipeline). A payment published late (the generator
  itself behind) is still timed from when it was due, so a slow generator cannot hide latency
  (coordinated omission); how far behind it fell is reported as `publish_behind_max_ms`.

Status and ledger polls query only the payments not seen yet, every `--poll-ms` (25 ms by default:
the latency figures for PostgreSQL are up to that much late). Writes one JSON document to `--out`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition

from payments.contracts.codec import SingleObjectSerde
from payments.contracts.envelope import build_headers
from payments.contracts.messages import InitiatePayment
from payments.money import Money
from payments.runtime.connection import client_config
from payments.runtime.reader import end_offsets, partitions_of
from payments.runtime.topics import Topics

# Accounts in the funds seed (consumers/funds/seed-accounts.json) with room for millions of small payments.
PAYERS = ("acc-alice", "acc-carol", "acc-dave", "acc-frank", "acc-heidi", "acc-judy", "acc-payer-1", "acc-bob")
FINAL = ("SETTLED", "FAILED", "CANCELLED", "REJECTED")
CHUNK = 5_000  # payment ids per status/ledger query


def command(i: int, run: str) -> InitiatePayment:
    payment_id = str(uuid.uuid4())
    return InitiatePayment(
        command_id=str(uuid.uuid4()), idempotency_key=f"{run}-{i}", payment_id=payment_id,
        payer_account=PAYERS[i % len(PAYERS)], payee_account="acc-erin", amount=Money.of(100 + i % 50, "EUR"),
        partner="simbank", reference=None, requested_at=datetime.now(UTC))


class Arrivals:
    """First-seen times by payment id, written by one watcher thread, read at the end."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}
        self.status: dict[str, str] = {}
        self.queries = 0
        self.lock = threading.Lock()

    def seen(self, payment_id: str, now: float, status: str = "") -> None:
        with self.lock:
            if payment_id not in self.at:
                self.at[payment_id] = now
                self.status[payment_id] = status


def watch_settlements(bootstrap: str, topic: str, arrivals: Arrivals, stop: threading.Event,
                      ready: threading.Event) -> None:
    partitions = partitions_of(bootstrap, [topic])
    ends = end_offsets(bootstrap, partitions)
    consumer = Consumer(client_config(bootstrap, {"group.id": f"loadgen-{uuid.uuid4().hex}",
                                                  "isolation.level": "read_committed", "enable.auto.commit": False,
                                                  "fetch.wait.max.ms": 10}))
    consumer.assign([TopicPartition(t, p, ends[(t, p)]) for t, p in partitions])
    ready.set()
    try:
        while not stop.is_set():
            for record in consumer.consume(1000, 0.05):
                key = record.key()
                if record.error() is None and key is not None:
                    arrivals.seen(key.decode(), time.monotonic())
    finally:
        consumer.close()


def watch_rows(database: str, query: str, pending: Callable[[], list[str]], arrivals: Arrivals, *,
               stop: threading.Event, poll_s: float) -> None:
    """Poll `query` (ids -> rows of (payment_id, status)) for the payments not seen yet. Each query is a
    transaction of its own (autocommit), counted in `arrivals.queries` so the pipeline's count excludes it."""
    with psycopg.connect(database, autocommit=True) as conn:
        while not stop.is_set():
            began = time.monotonic()
            waiting = pending()
            for start in range(0, len(waiting), CHUNK):
                arrivals.queries += 1
                for payment_id, status in conn.execute(query, (waiting[start:start + CHUNK],)).fetchall():
                    arrivals.seen(str(payment_id), time.monotonic(), str(status))
            stop.wait(max(0.0, poll_s - (time.monotonic() - began)))


STATUS_QUERY = ("SELECT payment_id, status FROM payment_status WHERE payment_id = ANY(%s) "
                f"AND status IN ({', '.join(repr(s) for s in FINAL)})")
LEDGER_QUERY = ("SELECT DISTINCT payment_id, kind FROM journal_entries WHERE payment_id = ANY(%s) "
                "AND kind = 'PaymentSettled'")


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    cut = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else [ordered[0]] * 99
    return {"p50": cut[49], "p95": cut[94], "p99": cut[98], "max": ordered[-1], "count": len(ordered)}


def summarize(due: dict[str, float], settled: dict[str, float], status: dict[str, float],
              ledger: dict[str, float], *, statuses: dict[str, str], t0: float) -> dict[str, Any]:
    """Latencies (ms, from due to seen) and rates, of the payments visible in both the status row and the
    ledger. `rate_per_s`: all of them over first publish -> last one visible, the rate the pipeline
    sustained. `drain_per_s`: the middle 80% of them over the time they took to appear; it is not the
    pipeline's rate: a burst goes through the stages one after another (nothing appears for the first
    part of the run, then the last stages drain it with the cores to themselves), so it reads up to twice
    `rate_per_s`, and the open-loop sweep shows latency climbing well below it."""
    both = sorted(max(status[p], ledger[p]) for p in ledger if p in status)
    drain = 0.0
    if len(both) >= 10:
        low, high = both[len(both) // 10], both[(len(both) * 9) // 10]
        drain = ((len(both) * 9) // 10 - len(both) // 10) / (high - low) if high > low else 0.0
    series: dict[int, int] = {}
    for t in both:
        series[int((t - t0) * 2)] = series.get(int((t - t0) * 2), 0) + 1  # per half second
    outcome: dict[str, int] = {}
    for s in statuses.values():
        outcome[s] = outcome.get(s, 0) + 1
    return {
        "published": len(due), "settlement_events": len(settled), "status_final": len(status),
        "ledger_settled": len(ledger), "outcomes": outcome,
        "to_settlement_ms": percentiles([(settled[p] - due[p]) * 1000 for p in settled if p in due]),
        "to_status_ms": percentiles([(status[p] - due[p]) * 1000 for p in status if p in due]),
        "to_ledger_ms": percentiles([(ledger[p] - due[p]) * 1000 for p in ledger if p in due]),
        "rate_per_s": len(both) / (both[-1] - t0) if both else 0.0,
        "drain_per_s": drain,
        "first_visible_s": both[0] - t0 if both else None,
        "visible_per_half_s": [[k / 2, v] for k, v in sorted(series.items())],
    }


def publish(producer: Producer, topic: str, encoded: list[tuple[str, bytes, list[tuple[str, bytes]]]],
            *, rate: float, due: dict[str, float], due_lock: threading.Lock) -> tuple[float, float]:
    """Publish every command: at once, or payment i at start + i/rate (open loop). Records when each was due
    in `due`; returns the start and how far behind its schedule the generator fell at worst (s)."""
    behind_max = 0.0
    t0 = time.monotonic()
    for i, (payment_id, value, headers) in enumerate(encoded):
        if rate:
            at = t0 + i / rate
            wait = at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            else:
                behind_max = max(behind_max, -wait)
        else:
            at = time.monotonic()
        with due_lock:
            due[payment_id] = at
        while True:
            try:
                producer.produce(topic, key=payment_id.encode(), value=value, headers=headers)
                break
            except BufferError:  # the producer's queue is full: let it drain
                producer.poll(0.05)
        producer.poll(0)
    return t0, behind_max


def run(args: argparse.Namespace) -> dict[str, Any]:
    topics = Topics(prefix=args.prefix)
    serde = SingleObjectSerde()
    producer = Producer(client_config(args.bootstrap))  # an upstream client on librdkafka's defaults
    settled, status, ledger = Arrivals(), Arrivals(), Arrivals()
    due: dict[str, float] = {}
    due_lock = threading.Lock()

    def not_seen(arrivals: Arrivals) -> Callable[[], list[str]]:
        def pending() -> list[str]:
            with due_lock:
                ids = list(due)
            return [p for p in ids if p not in arrivals.at]
        return pending

    stop, ready = threading.Event(), threading.Event()
    poll_s = args.poll_ms / 1000
    watchers = [
        threading.Thread(target=watch_settlements, args=(args.bootstrap, topics.settlements, settled, stop, ready)),
        threading.Thread(target=watch_rows, args=(args.database, STATUS_QUERY, not_seen(status), status),
                         kwargs={"stop": stop, "poll_s": poll_s}),
        threading.Thread(target=watch_rows, args=(args.database, LEDGER_QUERY, not_seen(ledger), ledger),
                         kwargs={"stop": stop, "poll_s": poll_s * 4}),
    ]
    for watcher in watchers:
        watcher.daemon = True
        watcher.start()
    assert ready.wait(60), "the settlement watcher did not start"
    run_id = uuid.uuid4().hex[:8]
    made = [command(i, run_id) for i in range(args.payments)]  # before the clock starts: not the pipeline's cost
    encoded = [(m.payment_id, serde.encode(m), build_headers(m, source="loadgen", traceparent=None)) for m in made]
    t0, behind_max = publish(producer, topics.commands, encoded, rate=args.rate, due=due, due_lock=due_lock)
    published_s = time.monotonic() - t0
    assert producer.flush(120) == 0, "the load generator could not deliver every command"

    def complete() -> bool:
        """Every payment has its final status row, and each settled one its ledger entry and settlement event
        (three consumers of their own: any may be last)."""
        if len(status.at) < len(due):
            return False
        with status.lock:
            settled_ids = [p for p, s in status.status.items() if s == "SETTLED"]
        return all(p in ledger.at and p in settled.at for p in settled_ids)

    deadline = time.monotonic() + args.timeout_s
    while time.monotonic() < deadline and not complete():
        time.sleep(0.1)
    stop.set()
    for watcher in watchers:
        watcher.join(30)
    summary = summarize(due, dict(settled.at), dict(status.at), dict(ledger.at), statuses=dict(status.status),
                        t0=t0)
    summary.update({"mode": "open-loop" if args.rate else "max", "rate": args.rate, "publish_s": published_s,
                    "publish_behind_max_ms": behind_max * 1000, "poll_ms": args.poll_ms,
                    "db_queries": status.queries + ledger.queries,
                    "timed_out": len(status.at) < len(due)})
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--prefix", required=True, help="the pipeline's PAYMENTS_TOPIC_PREFIX")
    parser.add_argument("--payments", type=int, required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="payments/s (open loop); 0: all at once (max)")
    parser.add_argument("--poll-ms", type=float, default=25.0)
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.write_text(json.dumps(run(args), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
