"""One exactly-once hop, three implementations, the same broker, partitions and input: records/s and our ratio.

- **ceiling** (`benchmarks/ceiling_hop.py`): a plain exactly-once pass-through in Python with our
  confluent-kafka: read_committed, batches of up to PAYMENTS_BATCH_MAX (500) records, each produced
  unchanged, offsets sent with the group metadata, commit. The most a Python hop on this client can do.
- **peer** (`benchmarks/peer_quix.py`): the orchestrator's first hop written with Quix Streams 3.28.1
  (exactly-once, a stateful step per payment, the command decoded and validated, a PaymentInitiated-like
  event encoded and emitted), in a venv of its own (`peer_python`: Quix pins confluent-kafka<2.13).
- **ours**: the real orchestrator service alone (`payments run orchestrator`), which per InitiatePayment
  decodes and validates it, decides, emits PaymentInitiated and AssessRisk and snapshots the saga to its
  changelog (and its local RocksDB store), all in the transaction. No participant runs, so nothing else
  happens.

All three read the same N InitiatePayment commands, written before any hop starts (without transactions,
so offsets count records) to the orchestrator's input topic (payments.admitted under a fresh prefix),
exactly as the gate admits them (the command's Avro single-object value, its CloudEvents headers, keyed
and partitioned by payment id), with the project's partition count. Each hop has its own consumer group
and output topics; they run one after another, never at once.

Measured the same way for all three: the hop's consumer group's committed offsets on the input, asked
every 100 ms (AdminClient list_consumer_group_offsets), from the first answer with any committed offset
to the one with all N; records/s = the records committed between the two / the seconds between them,
so start-up, the group join and the state restore are left out alike. CPU is the hop's process's
user+system time (psutil) over the same window, per 1,000 of those records. After the hop, its outputs
are counted (read_committed). Figures only: nothing here asserts a speed.

    .venv/bin/python benchmarks/hops.py --records 50000 [--only ceiling peer ours]
"""

from __future__ import annotations

import argparse
import fcntl
import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from ops.registry import SERVICES, topology
from ops.settings import Settings
from ops.stack import LocalStack
from ops.supervisor import ServiceProcess
from payments.contracts.codec import SingleObjectSerde
from payments.contracts.envelope import build_headers
from payments.contracts.messages import InitiatePayment
from payments.contracts.topics import ADMITTED, RISK_COMMANDS
from payments.money import Money
from payments.runtime.connection import Kafka, client_config
from payments.runtime.reader import committed_records, end_offsets, partitions_of
from payments.runtime.retry import is_transient, retry_kafka
from payments.runtime.topics import Topics, TopicSpec, ensure_topics

HOPS = ("ceiling", "peer", "ours")
BENCHMARKS = Path(__file__).resolve().parent
QUIXSTREAMS_VERSION = "3.28.1"
POLL_S = 0.1  # how often each hop's committed offsets are asked
PAYERS = ["acc-alice", "acc-carol", "acc-dave", "acc-frank", "acc-heidi", "acc-judy", "acc-payer-1", "acc-bob"]
UPSTREAM = "bench-upstream"  # the ce_source of the commands (the gate forwards the upstream's envelope)
START_TIMEOUT_S = 120.0  # from a hop's start to its first commit (the peer venv's first import is slow)
STALL_TIMEOUT_S = 120.0  # no more records committed for this long: the hop is stuck
STOP_TIMEOUT_S = 30.0
ORCHESTRATOR = SERVICES["orchestrator"]


@dataclass(frozen=True)
class Window:
    """What one hop committed between its first and its last observed commit, and in all."""

    records: int
    seconds: float
    cpu_s: float
    committed: int

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_s_per_1000(self) -> float:
        return self.cpu_s * 1000 / self.records if self.records else 0.0


@dataclass(frozen=True)
class Run:
    """One run of the three hops: where their input is and what they are told."""

    settings: Settings
    topics: Topics
    records: int
    work: Path

    @property
    def bootstrap(self) -> str:  # for the hop processes' command lines and environment
        return self.settings.bootstrap_servers

    @property
    def kafka(self) -> Kafka:  # for this process's own clients
        return self.settings.kafka

    @property
    def partitions(self) -> int:
        return self.settings.partitions

    @property
    def batch(self) -> int:
        return self.settings.batch_max

    @property
    def input(self) -> str:
        return self.topics.name(ADMITTED)

    def output(self, hop: str) -> str:
        return self.topics.name(f"bench.{hop}.out")

    def group(self, hop: str) -> str:
        return self.topics.group(ORCHESTRATOR.name) if hop == "ours" else self.topics.group(f"bench-{hop}")

    def outputs(self, hop: str) -> list[str]:
        """The topics a hop writes its outputs to (the changelogs aside)."""
        if hop == "ours":
            return [self.topics.name(topic) for topic in ORCHESTRATOR.logic.output_topics]
        return [self.output(hop)]


# -- the peer's venv ------------------------------------------------------------------------------


def peer_requirements() -> list[str]:
    """Quix Streams, and the fastavro our venv decodes with (the same version: the same decode cost)."""
    return [f"quixstreams=={QUIXSTREAMS_VERSION}", f"fastavro=={importlib.metadata.version('fastavro')}"]


def peer_python(settings: Settings) -> Path:
    """The interpreter of the peer's venv, made on first use under the user cache dir and reused while its
    marker names the same requirements. Its own venv: quixstreams 3.28.1 pins confluent-kafka<2.13, the
    project runs 2.16.1."""
    home = settings.jar_cache / "bench-peer-venv"
    python, marker = home / "bin" / "python", home / ".installed"
    wanted = " ".join(peer_requirements())
    home.parent.mkdir(parents=True, exist_ok=True)
    with open(home.parent / "bench-peer-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once: one installs, the other waits and reuses it
        if marker.exists() and marker.read_text().strip() == wanted and python.exists():
            return python
        print(f"making the peer's venv in {home} ({wanted}), once", flush=True)
        shutil.rmtree(home, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(home)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        *peer_requirements()], check=True)
        marker.write_text(wanted + "\n")
    return python


# -- input and measurement ------------------------------------------------------------------------


def prefill(run: Run) -> None:
    """N InitiatePayment commands on the input, as the gate admits them, without transactions."""
    serde = SingleObjectSerde()
    producer = Producer(client_config(run.kafka, {"partitioner": "murmur2_random", "linger.ms": 5,
                                                  "enable.idempotence": True}))
    now = datetime.now(UTC)
    for i in range(run.records):
        payment_id = str(uuid.uuid4())
        command = InitiatePayment(
            command_id=str(uuid.uuid4()), idempotency_key=f"bench-{payment_id}", payment_id=payment_id,
            payer_account=PAYERS[i % len(PAYERS)], payee_account="acc-erin", amount=Money.of(100 + i % 50, "EUR"),
            partner="simbank", reference=None, requested_at=now)
        headers: list[tuple[str, str | bytes | None]] = [*build_headers(command, source=UPSTREAM, traceparent=None)]
        while True:
            try:
                producer.produce(run.input, key=payment_id.encode(), value=serde.encode(command), headers=headers)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("the input was not all delivered")
    written = sum(end_offsets(run.kafka, partitions_of(run.kafka, [run.input])).values())
    assert written == run.records, f"{written} records on {run.input}, expected {run.records}"


def wait_for_coordinator(run: Run, group: str) -> None:
    """Wait until the broker answers for `group`'s offsets, through a consumer, before any AdminClient asks.

    librdkafka (2.16.1 too, confluentinc/librdkafka#5040) crashes the process (a NULL dereference in
    rd_kafka_cgrp_op) when a ListConsumerGroupOffsets answer carries a coordinator error, as a new broker's
    COORDINATOR_LOAD_IN_PROGRESS: an AdminClient has no consumer group to hand it to. A consumer's
    committed() asks again through it instead. Once the group's coordinator has answered it stays put on
    one broker. The consumer never subscribes, so it never joins the group."""
    consumer = Consumer(client_config(run.kafka, {"group.id": group, "enable.auto.commit": False}))
    try:
        retry_kafka(lambda: consumer.committed([TopicPartition(run.input, p) for p in range(run.partitions)],
                                               timeout=30), f"committed offsets of {group}")
    finally:
        consumer.close()


def committed(admin: AdminClient, group: str, topic: str, partitions: int) -> int | None:
    """How many records of `topic` the group has committed (its committed offsets, added up); None when the
    broker could not say just now (a transient error, such as its coordinator loading on a new broker)."""
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in range(partitions)])
    try:
        answer = admin.list_consumer_group_offsets([request], request_timeout=10)[group].result()
    except KafkaException as error:
        if is_transient(error.args[0]):
            return None
        raise
    return sum(max(int(tp.offset), 0) for tp in answer.topic_partitions)


def cpu_s(process: psutil.Process) -> float:
    """User+system seconds of the process (an exited, unreaped child still answers)."""
    times = process.cpu_times()
    return float(times.user + times.system)


def measure(run: Run, hop: str, process: subprocess.Popen[bytes], describe: Callable[[], str]) -> Window:
    """Poll the hop's committed offsets every POLL_S until all N are committed (see the module docstring).

    The process is not reaped here (an exited child still tells its CPU time), and whether it has exited is
    seen before its commits are asked: a hop that exits once it has committed everything is measured whole."""
    admin = AdminClient(client_config(run.kafka))
    watched = psutil.Process(process.pid)
    group = run.group(hop)
    first: tuple[float, int, float] | None = None  # (when, committed, cpu) at the first answer with a commit
    started = last_progress = time.monotonic()
    last = 0
    while True:
        asked = time.monotonic()
        exited = watched.status() == psutil.STATUS_ZOMBIE
        answer = committed(admin, group, run.input, run.partitions)
        cpu = cpu_s(watched)
        if answer is None:  # no answer this time: ask again at the next tick
            time.sleep(max(0.0, asked + POLL_S - time.monotonic()))
            continue
        done = answer
        if done and first is None:
            first = (asked, done, cpu)
        if done >= run.records:
            assert first is not None
            if done > run.records:
                raise RuntimeError(f"{hop}: {done} committed of {run.records} records")
            return Window(done - first[1], asked - first[0], cpu - first[2], done)
        if exited:
            raise RuntimeError(f"{hop} exited after committing {done} of {run.records}:\n{describe()}")
        if done > last:
            last, last_progress = done, asked
        if first is None and asked - started > START_TIMEOUT_S:
            raise RuntimeError(f"{hop} committed nothing in {START_TIMEOUT_S:.0f}s:\n{describe()}")
        if asked - last_progress > STALL_TIMEOUT_S:
            raise RuntimeError(f"{hop} stuck at {done} of {run.records} for {STALL_TIMEOUT_S:.0f}s:\n{describe()}")
        time.sleep(max(0.0, asked + POLL_S - time.monotonic()))


def count_outputs(run: Run, hop: str) -> dict[str, int]:
    """The committed records on each of the hop's output topics (read in one pass)."""
    counts = dict.fromkeys(run.outputs(hop), 0)
    for record in committed_records(run.kafka, partitions_of(run.kafka, counts)):
        topic = record.topic()
        assert topic is not None
        counts[topic] += 1
    return {topic.removeprefix(run.topics.prefix): count for topic, count in counts.items()}


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    return int(process.returncode)


# -- the three hops -------------------------------------------------------------------------------


def script(run: Run, hop: str, argv: list[str]) -> Window:
    """Run a benchmark script as the hop's process, with its output in a log file."""
    log_path = run.work / f"{hop}.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        window = measure(run, hop, process, lambda: tail(log_path))
        if hop == "ceiling":  # it exits by itself once it has committed them all
            process.wait(STOP_TIMEOUT_S)
    finally:
        code = stop(process)
    if code != 0:
        raise RuntimeError(f"{hop} exited {code}:\n{tail(log_path)}")
    return window


def ceiling(run: Run) -> Window:
    argv = [sys.executable, str(BENCHMARKS / "ceiling_hop.py"), run.bootstrap, run.input, run.output("ceiling"),
            run.group("ceiling"), str(run.records), "--batch", str(run.batch)]
    return script(run, "ceiling", argv)


def peer(run: Run) -> Window:
    argv = [str(peer_python(run.settings)), str(BENCHMARKS / "peer_quix.py"), run.bootstrap, run.input,
            run.output("peer"), run.group("peer"), "--state-dir", str(run.work / "peer-state"),
            "--batch", str(run.batch)]
    return script(run, "peer", argv)


def ours(run: Run) -> Window:
    env = {"KAFKA_BOOTSTRAP_SERVERS": run.bootstrap, "DATABASE_URL": run.settings.database,
           "PAYMENTS_TOPIC_PREFIX": run.topics.prefix, "PAYMENTS_PARTITIONS": str(run.partitions),
           "PAYMENTS_BATCH_MAX": str(run.batch), "PAYMENTS_STATE_DIR": str(run.work / "ours-state")}
    service = ServiceProcess([ORCHESTRATOR.name], log_dir=run.work, env=env).start()
    assert service.process is not None
    try:
        window = measure(run, "ours", service.process, service.log_tail)
    finally:
        code = service.stop()
    if code != 0:
        raise RuntimeError(f"the orchestrator exited {code}:\n{service.log_tail()}")
    return window


RUNNERS: dict[str, Callable[[Run], Window]] = {"ceiling": ceiling, "peer": peer, "ours": ours}


def run_hops(settings: Settings, records: int, which: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Prefill N records, then run each hop of `which` on them in turn. Per hop: committed (all of its
    committed records: N), records (those committed in the measured window, after the first commit seen),
    seconds, records_per_s, cpu_s_per_1000, outputs (committed records per output topic, the prefix left
    off), input, group and output_topics (full names). The batch size is `settings.batch_max`."""
    unknown = [hop for hop in which if hop not in RUNNERS]
    if unknown:
        raise ValueError(f"no such hop: {', '.join(unknown)} (one of {', '.join(HOPS)})")
    if "peer" in which:
        peer_python(settings)  # made before anything is timed
    run = Run(settings, Topics(prefix=f"hops{uuid.uuid4().hex[:6]}."), records,
              Path(tempfile.mkdtemp(prefix="bench-hops-")))
    specs = topology(run.topics, run.partitions)
    specs += [TopicSpec(run.output(hop), run.partitions) for hop in ("ceiling", "peer")]
    ensure_topics(run.kafka, specs)
    prefill(run)
    results: dict[str, dict[str, Any]] = {}
    for hop in which:
        wait_for_coordinator(run, run.group(hop))
        window = RUNNERS[hop](run)
        results[hop] = {"committed": window.committed, "records": window.records, "seconds": window.seconds,
                        "records_per_s": window.records_per_s, "cpu_s_per_1000": window.cpu_s_per_1000,
                        "outputs": count_outputs(run, hop), "input": run.input, "group": run.group(hop),
                        "output_topics": run.outputs(hop)}
    shutil.rmtree(run.work, ignore_errors=True)  # kept when a hop failed: its log is there
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    parser.add_argument("--only", nargs="+", choices=HOPS, default=list(HOPS), help="the hops to run, in order")
    args = parser.parse_args()
    settings = Settings.load()
    LocalStack.of(settings).up()
    results = run_hops(settings, args.records, args.only)
    print(f"\none exactly-once hop: {args.records} InitiatePayment records prefilled on {settings.partitions} "
          f"partitions; batches of up to {settings.batch_max} records per transaction; 1 broker (KRaft) on this "
          f"machine, {os.cpu_count()} cores; hops run one after another")
    print(f"{'hop':>8} {'records':>8} {'seconds':>8} {'records/s':>10} {'CPU s/1000':>11}  outputs (committed)")
    for hop, result in results.items():
        outputs = ", ".join(f"{topic} {count}" for topic, count in result["outputs"].items())
        print(f"{hop:>8} {result['records']:>8} {result['seconds']:>8.2f} {result['records_per_s']:>10.0f} "
              f"{result['cpu_s_per_1000']:>11.3f}  {outputs}")
    if "ours" in results:
        for other in ("ceiling", "peer"):
            if other in results:
                print(f"ours / {other}: {results['ours']['records_per_s'] / results[other]['records_per_s']:.0%}")
        retried = results["ours"]["outputs"].get(RISK_COMMANDS, 0) - args.records
        if retried:
            print(f"note: {retried} AssessRisk commands beyond one per payment: the orchestrator ran past a risk "
                  "reply window (30 s) and its timers fired, which the window includes")
    print("ceiling: pass-through, 1 output per record; peer (Quix Streams "
          f"{QUIXSTREAMS_VERSION}, its own confluent-kafka): decode, validate, state, 1 event per record, "
          "checkpoint every batch or 0.5 s; ours: decode, validate, decide, 2 outputs and 1 snapshot per record")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
