"""State that does not grow with history: restore time, resident memory and changelog bytes per change.

Writes a history straight to the changelogs, as the services themselves would have written it (no saga
run needed), then starts the real orchestrator and funds services on it and measures:

  * orchestrator: `--history` payments finished long ago (each a snapshot, then the tombstone its
    retention timer wrote) plus `--retained` settled payments still inside their refund window;
  * funds: `--hot-accounts` accounts, each with `--holds` finished holds and twice as many answers
    inside the retention, written as parts (docs/participants.md);
  * restore: seconds from process start to `partitions_restored` (all partitions). The first start is a
    fresh machine: no local state store, the changelog is read from its start (and the stores written).
    Then a SIGKILL and a restart on the same machine: the local stores (payments.runtime.store) hold
    what was committed, and only the changelog's tail is read;
  * resident memory (RSS) after the restore, against the same service restored from empty changelogs;
  * changelog bytes per funds change: `--changes` reserve/commit commands on one hot account, the bytes
    (keys + values) they added to the funds changelog, divided by the commands.

Figures only: nothing here asserts a speed or a size.

    .venv/bin/python benchmarks/state_history.py --history 1000000 --retained 100000
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
from confluent_kafka import Message, Producer

from consumers.funds.accounts import Account, Balance, Hold
from consumers.funds.logic import ANSWER, FINISHED, FundsAnswer, FundsState
from ops.registry import topology
from ops.settings import Settings
from ops.stack import LocalStack
from ops.supervisor import ServiceProcess
from orchestrator.saga import OrchestratorLogic
from orchestrator.state import fold
from payments.contracts.codec import SingleObjectSerde
from payments.contracts.envelope import build_headers
from payments.contracts.events import PaymentInitiated, PaymentSettled
from payments.contracts.participants import CommitFunds, ReserveFunds
from payments.contracts.topics import FUNDS_COMMANDS, FUNDS_REPLIES
from payments.money import Money
from payments.runtime.connection import client_config
from payments.runtime.logic import part_key
from payments.runtime.reader import committed_records, end_offsets, partitions_of
from payments.runtime.topics import Topics, ensure_topics

PLACEHOLDER = "00000000-0000-4000-8000-000000000000"


@dataclass(frozen=True)
class Restore:
    seconds: float  # from just before the process started to its partitions_restored line
    rss_mb: float
    keys: int
    records: int = 0  # changelog records the restore read


def settled_template(settled_at: datetime) -> bytes:
    """A settled saga's snapshot, exactly as the orchestrator encodes it, with a placeholder payment id."""
    common = {"payment_id": PLACEHOLDER, "causation_id": "bench"}
    amount = Money.of(12_345, "EUR")
    state = fold([
        PaymentInitiated(**common, event_id=str(uuid.uuid4()), seq=1, occurred_at=settled_at - timedelta(seconds=2),
                         payer_account="acc-alice", payee_account="acc-bob", amount=amount, partner="simbank",
                         reference="invoice 42", idempotency_key=f"idem-{PLACEHOLDER}", request_hash="0" * 64),
        PaymentSettled(**common, event_id=str(uuid.uuid4()), seq=2, occurred_at=settled_at, amount=amount,
                       partner="simbank", partner_reference="SIM-123456", payer_account="acc-alice",
                       payee_account="acc-bob"),
    ])
    assert state is not None
    return OrchestratorLogic().encode_state(state)


def producer(settings: Settings) -> Producer:
    return Producer(client_config(settings.kafka, {
        "partitioner": "murmur2_random", "linger.ms": 50, "batch.num.messages": 10_000, "compression.type": "lz4",
        "queue.buffering.max.messages": 500_000, "enable.idempotence": True}))


def produce(out: Producer, topic: str, key: str, value: bytes | None) -> None:
    while True:
        try:
            out.produce(topic, key=key.encode(), value=value)
            return
        except BufferError:
            out.poll(0.1)


def write_orchestrator_history(settings: Settings, topics: Topics, history: int, retained: int) -> None:
    topic = topics.changelog("orchestrator")
    now = datetime.now(UTC)
    old, recent = settled_template(now - timedelta(days=200)), settled_template(now - timedelta(days=1))
    out = producer(settings)
    started = time.monotonic()
    for n in range(history):  # finished long ago: the snapshot, then the tombstone of its retention timer
        pid = str(uuid.uuid4())
        produce(out, topic, pid, old.replace(PLACEHOLDER.encode(), pid.encode()))
        produce(out, topic, pid, None)
        if n % 100_000 == 0:
            out.poll(0)
            print(f"\r  orchestrator history: {n}/{history}", end="", flush=True)
    for _ in range(retained):
        pid = str(uuid.uuid4())
        produce(out, topic, pid, recent.replace(PLACEHOLDER.encode(), pid.encode()))
    out.flush(300)
    print(f"\r  orchestrator history: {history} finished + {retained} retained in "
          f"{time.monotonic() - started:.0f}s")


def hot_account(name: str, holds: int, now: datetime) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The head and the parts of an account with `holds` committed holds and their answers."""
    amount = Money.of(100, "EUR")
    opening = 10**15
    balance = Balance(opening=opening, available=opening - holds * 100, held=0, debited=holds * 100)
    head = FundsState(account=Account(account=name, balances={"EUR": balance})).model_dump_json(
        exclude_defaults=True).encode()
    parts: list[tuple[str, bytes]] = []
    for n in range(holds):
        at = now - timedelta(seconds=holds - n)
        hold_id, payment_id = str(uuid.uuid4()), str(uuid.uuid4())
        hold = Hold(payment_id=payment_id, amount=amount, status="COMMITTED", finished_at=at)
        parts.append((FINISHED + hold_id, hold.model_dump_json().encode()))
        for kind, outcome in (("reserve", "RESERVED"), ("commit", "COMMITTED")):
            answer = FundsAnswer(kind=kind, payment_id=payment_id, hold_id=hold_id, outcome=outcome, at=at)
            parts.append((ANSWER + str(uuid.uuid4()), answer.model_dump_json().encode()))
    return head, parts


def write_funds_history(settings: Settings, topics: Topics, accounts: list[str], holds: int) -> None:
    topic = topics.changelog("funds")
    out = producer(settings)
    started = time.monotonic()
    now = datetime.now(UTC)
    for account in accounts:
        head, parts = hot_account(account, holds, now)
        landed: list[int | None] = []  # the head goes where the account's key goes (murmur2), as the service does

        def delivered(_error: object, record: Message, into: list[int | None] = landed) -> None:
            into.append(record.partition())

        out.produce(topic, key=account.encode(), value=head, on_delivery=delivered)
        out.flush(60)
        assert landed and landed[0] is not None
        for part, data in parts:  # a part's key differs from the account's: it is written to the head's partition
            while True:
                try:
                    out.produce(topic, key=part_key(account, part).encode(), value=data, partition=landed[0])
                    break
                except BufferError:
                    out.poll(0.1)
        out.poll(0)
    out.flush(300)
    print(f"  funds history: {len(accounts)} accounts x {holds} finished holds and {2 * holds} answers in "
          f"{time.monotonic() - started:.0f}s")


def _restores(service: ServiceProcess) -> list[dict[str, object]]:
    return [json.loads(line) for line in service.log_tail(50_000_000).splitlines()
            if '"event": "partitions_restored"' in line]


def restored(service: ServiceProcess, timeout_s: float, started: float, earlier: int = 0) -> Restore:
    """Wait for the service's restore to finish (a `partitions_restored` line after the `earlier` ones its log
    already had: a restarted process appends to the same log); seconds from `started` (just before the
    process started) to then, keys restored, changelog records read, and RSS."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = _restores(service)
        if len(lines) > earlier:
            seconds = time.monotonic() - started
            last = lines[-1]
            time.sleep(1)  # let the heap settle after decoding
            assert service.process is not None
            rss = psutil.Process(service.process.pid).memory_info().rss / 2**20
            return Restore(seconds, rss, int(last["keys"]), int(last["records"]))  # type: ignore[call-overload]
        if not service.alive():
            raise RuntimeError(service.log_tail())
        time.sleep(0.2)
    raise TimeoutError(f"{service.args} did not restore in {timeout_s}s:\n{service.log_tail()}")


def bytes_per_change(settings: Settings, topics: Topics, account: str, changes: int) -> float:
    """Send reserve/commit commands on `account`; the changelog bytes they added per command."""
    changelog = partitions_of(settings.kafka, [topics.changelog("funds")])
    before = end_offsets(settings.kafka, changelog)
    replies = partitions_of(settings.kafka, [topics.name(FUNDS_REPLIES)])
    replies_before = sum(end_offsets(settings.kafka, replies).values())
    serde = SingleObjectSerde()
    out = Producer(client_config(settings.kafka, {"partitioner": "murmur2_random"}))
    now = datetime.now(UTC)
    for n in range(changes // 2):
        hold, payment = str(uuid.uuid4()), str(uuid.uuid4())
        for command in (ReserveFunds(payment_id=payment, command_id=str(uuid.uuid4()), issued_at=now, account=account,
                                     amount=Money.of(100, "EUR"), hold_id=hold),
                        CommitFunds(payment_id=payment, command_id=str(uuid.uuid4()), issued_at=now, account=account,
                                    hold_id=hold, payee_account="acc-bob")):
            out.produce(topics.name(FUNDS_COMMANDS), key=account.encode(), value=serde.encode(command),
                        headers=[*build_headers(command, source="bench", traceparent=None)])
        if n % 100 == 0:
            out.poll(0)
    out.flush(60)
    deadline = time.monotonic() + 300
    while sum(end_offsets(settings.kafka, replies).values()) - replies_before < changes:
        if time.monotonic() > deadline:
            raise TimeoutError("the funds service did not answer every command")
        time.sleep(0.5)
    added = sum(len(r.key() or b"") + len(r.value() or b"")
                for r in committed_records(settings.kafka, changelog, starts=before))
    return added / changes


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--history", type=int, default=1_000_000, help="orchestrator: payments finished long ago")
    parser.add_argument("--retained", type=int, default=100_000, help="orchestrator: settled, inside the refund window")
    parser.add_argument("--hot-accounts", type=int, default=50)
    parser.add_argument("--holds", type=int, default=10_000, help="finished holds per hot account")
    parser.add_argument("--changes", type=int, default=2_000, help="funds commands on one hot account")
    parser.add_argument("--timeout-s", type=float, default=900)
    args = parser.parse_args()
    settings = Settings.load()
    LocalStack.of(settings).up()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-state-"))

    def start(topics: Topics, name: str) -> ServiceProcess:
        env = {"KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "PAYMENTS_TOPIC_PREFIX": topics.prefix,
               "PAYMENTS_STATE_DIR": str(log_dir / "state")}  # a restart of the same instance finds its stores
        return ServiceProcess([name], log_dir=log_dir / topics.prefix, env=env).start()

    empty = Topics(prefix=f"st{uuid.uuid4().hex[:6]}e.")
    full = Topics(prefix=f"st{uuid.uuid4().hex[:6]}f.")
    for topics in (empty, full):
        ensure_topics(settings.kafka, topology(topics, settings.partitions))
        (log_dir / topics.prefix).mkdir(parents=True)
    accounts = [f"acc-hot-{n:02d}" for n in range(args.hot_accounts)]
    write_orchestrator_history(settings, full, args.history, args.retained)
    write_funds_history(settings, full, accounts, args.holds)

    results: dict[str, list[Restore]] = {}
    for name in ("orchestrator", "funds"):
        started = time.monotonic()
        baseline = start(empty, name)
        results[f"{name} empty"] = [restored(baseline, args.timeout_s, started)]
        baseline.stop()
        started = time.monotonic()
        service = start(full, name)
        first = restored(service, args.timeout_s, started)
        per_change = bytes_per_change(settings, full, accounts[0], args.changes) if name == "funds" else None
        service.kill()
        service.process = None
        earlier = len(_restores(service))
        started = time.monotonic()
        service.start()
        results[name] = [first, restored(service, args.timeout_s, started, earlier)]
        service.stop()
        if per_change is not None:
            results["bytes"] = [Restore(per_change, 0, 0)]

    print(f"\nstate restored from the changelogs, one instance, {settings.partitions} partitions; "
          f"{os.cpu_count()} cores, Kafka on this machine; first start: a fresh machine (no local store), "
          f"after SIGKILL: the same machine (its local stores)")
    print(f"  orchestrator history: {args.history:,} payments finished long ago (snapshot + tombstone each), "
          f"{args.retained:,} settled inside the refund window")
    print(f"  funds history: {args.hot_accounts} accounts x {args.holds:,} finished holds and "
          f"{2 * args.holds:,} answers inside the retention")
    print("seconds: from process start to partitions_restored (Python start-up and group join included)")
    print(f"{'service':>14} {'changelog':>10} {'keys restored':>14} {'fresh s':>8} {'records read':>13} "
          f"{'after SIGKILL s':>16} {'records read':>13} {'RSS MB':>8} {'RSS after kill':>15}")
    for name in ("orchestrator", "funds"):
        (empty_run,), (first, again) = results[f"{name} empty"], results[name]
        print(f"{name:>14} {'empty':>10} {empty_run.keys:>14,} {empty_run.seconds:>8.1f} {empty_run.records:>13,} "
              f"{'':>16} {'':>13} {empty_run.rss_mb:>8.0f}")
        print(f"{name:>14} {'history':>10} {first.keys:>14,} {first.seconds:>8.1f} {first.records:>13,} "
              f"{again.seconds:>16.1f} {again.records:>13,} {first.rss_mb:>8.0f} {again.rss_mb:>15.0f}")
    orchestrator_mb = results["orchestrator"][0].rss_mb - results["orchestrator empty"][0].rss_mb
    if args.retained:
        print(f"orchestrator: {orchestrator_mb * 100_000 / args.retained:.0f} MB per 100k retained sagas")
    print(f"funds: {results['bytes'][0].seconds:,.0f} changelog bytes per change on an account with "
          f"{args.holds:,} finished holds ({args.changes} reserve/commit commands)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
