"""The whole pipeline, measured: every service, the settlement publisher and all three projections, loaded
by a separate load-generator process (benchmarks/loadgen.py), on the local stack (`make bench`).

Phases, all in one run, on one broker and one PostgreSQL server of this machine:
1. warm-up: a few payments through, not counted;
2. max rate: `--payments` published at once; payments/s from the first publish to the last payment
   visible in both `payment_status` and the ledger (loadgen.summarize);
3. open loop: for each fraction of that rate (`--fractions`), payments due at a fixed rate for
   `--seconds`; latency from due to the settlement event (read_committed) and to the status row;
4. with `--profile`: the max-rate phase once more with py-spy sampling every service (flame graphs;
   py-spy costs CPU too, so these figures are not the benchmark's);
5. the hops (benchmarks/hops.py, `--hops`): the exactly-once pass-through ceiling, a Quix Streams peer
   and our orchestrator's first hop, one after another with the pipeline stopped, on the same broker and
   partition count; our records/s as a ratio of each.

Per phase: CPU seconds per process, Kafka offsets per payment (records plus transaction markers, over
every topic of the run) and PostgreSQL transactions committed per payment (the run's own database;
the load generator's polls subtracted). Peak RSS per process (VmHWM). Figures only: nothing asserts a
speed. Writes results.json, summary.md and PNG plots to `--results` (default .bench-results/<time>/,
outside git), and prints the summary.

    .venv/bin/python benchmarks/pipeline.py --payments 4000 --fractions 0.1 0.25 0.5 0.75 0.9 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from psycopg import conninfo

from ops.registry import PROJECTIONS, SERVICES, process_args, topology
from ops.settings import Settings
from ops.stack import LocalStack
from ops.supervisor import ServiceProcess, free_port, start_all
from payments.runtime.connection import client_config
from payments.runtime.reader import end_offsets
from payments.runtime.topics import Topics, ensure_topics

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Pipeline:
    settings: Settings
    topics: Topics
    database: str
    processes: list[ServiceProcess]
    log_dir: Path
    topic_partitions: dict[str, int] = field(default_factory=dict)  # every topic of the run: its partition count
    admin: AdminClient | None = None  # one client for every offsets question of the run

    def name(self, process: ServiceProcess) -> str:
        return "-".join(process.args)

    def pids(self) -> dict[str, int]:
        return {self.name(p): p.process.pid for p in self.processes if p.process is not None}


def _cpu_s(pid: int) -> float:
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(times.user + times.system)


def _peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _offsets(pipeline: Pipeline) -> int:
    partitions = [(t, p) for t, count in pipeline.topic_partitions.items() for p in range(count)]
    return sum(end_offsets(pipeline.settings.kafka, partitions, committed_only=False,
                           admin=pipeline.admin).values())


def _xact_commits(pipeline: Pipeline) -> int:
    with psycopg.connect(pipeline.database, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()
    assert row is not None
    return int(row[0])


def create_database(settings: Settings) -> str:
    """A database of its own for this run: its rows and its transaction count are the run's only."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(settings.database, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return conninfo.make_conninfo(settings.database, dbname=name)


def drop_database(settings: Settings, database: str) -> None:
    name = conninfo.conninfo_to_dict(database)["dbname"]
    with psycopg.connect(settings.database, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def start_pipeline(settings: Settings, partner_latency: str, log_dir: Path) -> Pipeline:
    topics = Topics(prefix=f"bench{uuid.uuid4().hex[:6]}.")
    specs = topology(topics, settings.partitions)
    ensure_topics(settings.kafka, specs)
    database = create_database(settings)
    env = {"KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "DATABASE_URL": database,
           "PAYMENTS_TOPIC_PREFIX": topics.prefix, "PAYMENTS_PARTNER_LATENCY_MS": partner_latency,
           "PAYMENTS_PARTNER_DECLINE_RATE": "0", "PAYMENTS_PARTNER_TIMEOUT_RATE": "0",
           "PAYMENTS_PARTNER_DATA_DIR": str(log_dir / "partner"), "PAYMENTS_PARTNER_SIM_PORT": str(free_port()),
           "PAYMENTS_STATE_DIR": str(log_dir / "state")}
    processes = start_all([ServiceProcess(args, log_dir=log_dir, env=env) for args in process_args()])
    return Pipeline(settings, topics, database, processes, log_dir, {spec.name: spec.partitions for spec in specs},
                    AdminClient(client_config(settings.kafka)))


class LagSampler:
    """Every second, the input lag of each service (its group's committed offsets against the ends of its
    input topics) and of each projection (its offsets stored in PostgreSQL): the stage where records wait is
    the bottleneck."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.admin = AdminClient(client_config(pipeline.settings.kafka))
        self.askers: dict[str, Consumer] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LagSampler:
        self.started = time.monotonic()
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(30)
        for asker in self.askers.values():
            asker.close()

    def _run(self) -> None:
        with psycopg.connect(self.pipeline.database, autocommit=True) as conn:
            while not self.stop.wait(1.0):
                try:
                    self.samples.append({"t": round(time.monotonic() - self.started, 1), **self._sample(conn)})
                except Exception as error:
                    print(f"  lag sample failed: {error}", flush=True)

    def _sample(self, conn: psycopg.Connection[Any]) -> dict[str, int]:
        settings, topics = self.pipeline.settings, self.pipeline.topics
        n = settings.partitions
        lag: dict[str, int] = {}
        wanted = {name: [TopicPartition(topics.name(t), p) for t in spec.logic.input_topics for p in range(n)]
                  for name, spec in SERVICES.items()}
        ends = end_offsets(settings.kafka, [(tp.topic, tp.partition) for tps in wanted.values()
                                                        for tp in tps], admin=self.admin)
        for name, tps in wanted.items():
            # A consumer of the group that never joins it, only asks: AdminClient.list_consumer_group_offsets
            # crashes the process on a coordinator error (confluentinc/librdkafka#5040).
            if name not in self.askers:
                self.askers[name] = Consumer(client_config(settings.kafka, {"group.id": topics.group(name),
                                                                            "enable.auto.commit": False}))
            committed = self.askers[name].committed(tps, timeout=10)
            lag[name] = sum(max(0, ends[(tp.topic, tp.partition)] - max(tp.offset, 0)) for tp in committed)
        # The ends before the positions, as for the services above: read the other way round, whatever
        # was written while the ends were being asked for would count as lag.
        parts = {name: [(topics.name(t), p) for t in spec.projection().topics for p in range(n)]
                 for name, spec in PROJECTIONS.items()}
        theirs = end_offsets(settings.kafka, [tp for tps in parts.values() for tp in tps], admin=self.admin)
        stored = conn.execute("SELECT projection, topic, partition, next_offset FROM projection_offsets").fetchall()
        for name, tps in parts.items():
            mine = {(str(t), int(p)): int(o) for proj, t, p, o in stored if proj == name}
            lag[f"projection-{name}"] = sum(max(0, theirs[tp] - mine.get(tp, 0)) for tp in tps)
        return lag


def load(pipeline: Pipeline, payments: int, rate: float, out: Path, timeout_s: float) -> dict[str, Any]:
    """Run the load generator as its own process; counters around it: CPU, offsets, transactions."""
    pids = pipeline.pids()
    cpu_before = {name: _cpu_s(pid) for name, pid in pids.items()}
    offsets_before, xacts_before = _offsets(pipeline), _xact_commits(pipeline)
    started = time.monotonic()
    with LagSampler(pipeline) as lags:
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "loadgen.py"),
                        "--bootstrap", pipeline.settings.bootstrap_servers, "--database", pipeline.database,
                        "--prefix", pipeline.topics.prefix, "--payments", str(payments), "--rate", str(rate),
                        "--timeout-s", str(timeout_s), "--out", str(out)], check=True, cwd=ROOT)
    wall_s = time.monotonic() - started
    time.sleep(1.5)  # PostgreSQL publishes a backend's transaction counts at most once a second
    result: dict[str, Any] = json.loads(out.read_text())
    result["wall_s"] = wall_s
    result["lag"] = lags.samples
    result["lag_max"] = {name: max((s.get(name, 0) for s in lags.samples), default=0) for name in
                         [*SERVICES, *(f"projection-{p}" for p in PROJECTIONS)]}
    result["cpu_s"] = {name: _cpu_s(pid) - cpu_before[name] for name, pid in pids.items()}
    result["kafka_offsets_per_payment"] = (_offsets(pipeline) - offsets_before) / payments
    result["pg_transactions_per_payment"] = (_xact_commits(pipeline) - xacts_before
                                             - int(result.get("db_queries", 0))) / payments
    return result


def profile(pipeline: Pipeline, payments: int, out_dir: Path, timeout_s: float) -> list[str]:
    """py-spy on every process while a max-rate load runs; one flame graph (SVG) per process."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spy = str(Path(sys.executable).parent / "py-spy")
    spies = {name: subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", "50", "--nonblocking",
                                     "--output", str(out_dir / f"{name}.svg")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for name, pid in pipeline.pids().items()}
    try:
        load(pipeline, payments, 0.0, out_dir / "load.json", timeout_s)
    finally:
        for spy in spies.values():
            spy.send_signal(signal.SIGINT)  # py-spy writes its flame graph when interrupted
        for spy in spies.values():
            try:
                spy.wait(60)
            except subprocess.TimeoutExpired:
                spy.kill()
    return sorted(str(p.relative_to(out_dir.parent)) for p in out_dir.glob("*.svg"))


def plots(results: dict[str, Any], out: Path) -> list[str]:
    import matplotlib  # noqa: PLC0415 - only when plotting

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    written = []
    sweep = results["open_loop"]
    if sweep:
        figure, axes = plt.subplots(figsize=(7, 4.5))
        rates = [r["rate"] for r in sweep]
        for key, label in (("to_settlement_ms", "settlement event"), ("to_status_ms", "status row")):
            for cut, style in (("p50", "--"), ("p99", "-")):
                axes.plot(rates, [r[key].get(cut, float("nan")) for r in sweep], style, marker="o",
                          label=f"{label} {cut}")
        axes.set_xlabel("arrival rate (payments/s, open loop)")
        axes.set_ylabel("latency from publish (ms)")
        axes.set_yscale("log")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
        axes.set_title(results["conditions"]["short"], fontsize=8)
        figure.tight_layout()
        figure.savefig(out / "latency_vs_rate.png", dpi=120)
        plt.close(figure)
        written.append("latency_vs_rate.png")
    series = dict(map(tuple, results["max"]["visible_per_half_s"]))
    if series:
        figure, axes = plt.subplots(figsize=(7, 4))
        times = [i / 2 for i in range(int(max(series) * 2) + 2)]  # every half second, empty ones too
        counts = [series.get(t, 0) for t in times]
        axes.step(times, [n * 2 for n in counts], where="post", label="payments/s (half-second bins)")
        axes.set_xlabel("seconds since the first publish")
        axes.set_ylabel("payments/s visible in status + ledger")
        total = axes.twinx()
        running = [sum(counts[: i + 1]) for i in range(len(counts))]
        total.plot(times, running, color="grey", linestyle="--", label="visible so far")
        total.set_ylabel("payments visible so far")
        axes.grid(True, alpha=0.3)
        axes.set_title(f"max rate, {results['max']['published']} payments at once", fontsize=9)
        figure.tight_layout()
        figure.savefig(out / "throughput.png", dpi=120)
        plt.close(figure)
        written.append("throughput.png")
    return written


def _most_lag(step: dict[str, Any]) -> str:
    lags = step.get("lag_max") or {}
    if not lags or max(lags.values()) == 0:
        return "-"
    name = max(lags, key=lags.__getitem__)
    return f"{name} {lags[name]}"


def _cut(figures: dict[str, float], key: str) -> str:
    return f"{figures[key]:.0f}" if key in figures else "-"


def markdown(results: dict[str, Any]) -> str:
    c = results["conditions"]
    lines = [f"# Pipeline benchmark, {c['when']}", "", f"Conditions: {c['long']}", "",
             "## Max rate", ""]
    m = results["max"]
    lines += [f"- {m['published']} payments at once: **{m['rate_per_s']:.0f} payments/s** from the first publish to "
              f"the last payment visible in payment_status and the ledger (the first one after "
              f"{m['first_visible_s']:.1f} s; the middle 80% appeared at {m['drain_per_s']:.0f}/s, the drain rate "
              f"of the last stages, not the pipeline's); outcomes {m['outcomes']}",
              f"- Kafka offsets per payment (records + transaction markers, every topic): "
              f"{m['kafka_offsets_per_payment']:.1f}; PostgreSQL transactions per payment: "
              f"{m['pg_transactions_per_payment']:.2f}", ""]
    lines += ["## Open loop (latency from when each payment was due, by the load generator's clock)", "",
              "| rate/s | of max | payments | settlement p50 | p95 | p99 | max | status row p50 | p95 | p99 | max "
              "| generator behind max ms | most input lag (records) |", "|" + " --- |" * 13]
    for r in results["open_loop"]:
        s, t = r["to_settlement_ms"], r["to_status_ms"]
        lines.append(f"| {r['rate']:.0f} | {r['fraction']:.0%} | {r['published']} | {_cut(s, 'p50')} | "
                     f"{_cut(s, 'p95')} | {_cut(s, 'p99')} | {_cut(s, 'max')} | {_cut(t, 'p50')} | {_cut(t, 'p95')} | "
                     f"{_cut(t, 'p99')} | {_cut(t, 'max')} | {r['publish_behind_max_ms']:.0f} | {_most_lag(r)} |")
    lines += ["", "## Per process (max-rate phase)", "",
              "| process | CPU s | CPU ms per payment | peak RSS MB | max input lag (records) |",
              "| --- | --- | --- | --- | --- |"]
    for name, cpu in sorted(m["cpu_s"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {name} | {cpu:.1f} | {cpu * 1000 / m['published']:.2f} | "
                     f"{results['peak_rss_mb'].get(name, 0):.0f} | {m['lag_max'].get(name, '-')} |")
    total = sum(m["cpu_s"].values())
    lines.append(f"| **all** | {total:.1f} | {total * 1000 / m['published']:.2f} | |")
    hops = results.get("hops") or {}
    if hops:
        lines += ["", "## One exactly-once hop (benchmarks/hops.py; pipeline stopped)", "",
                  "| hop | records | records/s | CPU s per 1,000 |", "| --- | --- | --- | --- |"]
        for name, h in hops.items():
            lines.append(f"| {name} | {h['records']} | {h['records_per_s']:.0f} | {h['cpu_s_per_1000']:.2f} |")
        ours = hops.get("ours", {}).get("records_per_s")
        for other in ("ceiling", "peer"):
            if ours and other in hops and hops[other]["records_per_s"]:
                lines.append(f"\nours / {other}: **{ours / hops[other]['records_per_s']:.2f}x**")
    if results.get("profiles"):
        lines += ["", "## Profiles (py-spy, a separate max-rate pass)", ""]
        lines += [f"- [{p}]({p})" for p in results["profiles"]]
    return "\n".join(lines) + "\n"


def measure(pipeline: Pipeline, args: argparse.Namespace, out: Path, results: dict[str, Any]) -> None:
    """The phases on the running pipeline, into `results`: warm-up, max rate, the open-loop sweep, profiles."""
    if args.warmup:
        load(pipeline, args.warmup, 0.0, out / "warmup.json", args.timeout_s)
    print(f"max rate: {args.payments} payments at once", flush=True)
    results["max"] = load(pipeline, args.payments, 0.0, out / "max.json", args.timeout_s)
    top = results["max"]["rate_per_s"]
    print(f"  {top:.0f} payments/s, first publish to last visible", flush=True)
    results["open_loop"] = []
    for fraction in args.fractions:
        rate = max(1.0, top * fraction)
        payments = max(20, int(rate * args.seconds))
        print(f"open loop: {rate:.0f}/s ({fraction:.0%} of max) for {payments} payments", flush=True)
        step = load(pipeline, payments, rate, out / f"open-{fraction:.2f}.json", args.timeout_s)
        step["fraction"] = fraction
        results["open_loop"].append(step)
        print(f"  settlement p99 {_cut(step['to_settlement_ms'], 'p99')} ms, status row p99 "
              f"{_cut(step['to_status_ms'], 'p99')} ms", flush=True)
    if args.profile:
        print("profiling a max-rate pass with py-spy", flush=True)
        results["profiles"] = profile(pipeline, args.payments, out / "profiles", args.timeout_s)
    results["peak_rss_mb"] = {name: _peak_rss_mb(pid) for name, pid in pipeline.pids().items()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--payments", type=int, default=4000, help="the max-rate burst")
    parser.add_argument("--warmup", type=int, default=50, help="payments through first, not counted (0: none)")
    parser.add_argument("--fractions", type=float, nargs="*", default=[0.1, 0.25, 0.5, 0.75, 0.9])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each open-loop step")
    parser.add_argument("--partner-latency", default="1", help="simulated partner latency 'median[,p99]' ms")
    parser.add_argument("--hops", nargs="*", default=["ceiling", "peer", "ours"], help="hops to measure (none: '')")
    parser.add_argument("--hop-records", type=int, default=50_000)
    parser.add_argument("--profile", action="store_true", help="py-spy flame graphs of every process")
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--keep-database", action="store_true", help="leave the run's database for a look")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args(argv)
    when = datetime.now(UTC)
    out = args.results or ROOT / ".bench-results" / when.strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings.load()
    LocalStack.of(settings).up()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    pipeline = start_pipeline(settings, args.partner_latency, log_dir)
    processes = [pipeline.name(p) for p in pipeline.processes]
    short = (f"{len(processes)} processes, 1 instance each, {settings.partitions} partitions, partner "
             f"{args.partner_latency} ms, {os.cpu_count()} cores")
    results: dict[str, Any] = {"conditions": {
        "when": when.isoformat(timespec="seconds"), "short": short, "processes": processes,
        "long": (f"this machine ({os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB), one Kafka "
                 f"broker and PostgreSQL on it; {', '.join(processes)}, one instance each; {settings.partitions} "
                 f"partitions; partner simulator latency {args.partner_latency} ms, no declines; payments "
                 "published by a separate load-generator process (librdkafka defaults)."),
        "partner_latency_ms": args.partner_latency, "partitions": settings.partitions,
        "topic_prefix": pipeline.topics.prefix, "logs": str(log_dir)}}
    try:
        print(f"pipeline up ({short}); logs in {log_dir}", flush=True)
        measure(pipeline, args, out, results)
    finally:
        for process in pipeline.processes:  # all told at once, then each waited for: a clean stop takes a while
            if process.alive() and process.process is not None:
                process.process.send_signal(signal.SIGTERM)
        for process in pipeline.processes:
            process.stop()
        if not args.keep_database:
            drop_database(settings, pipeline.database)
    hops = [h for h in args.hops if h]
    if hops:
        from hops import run_hops  # noqa: PLC0415 - benchmarks/ is this script's path; a peer venv only if asked

        print(f"hops: {', '.join(hops)} ({args.hop_records} records each)", flush=True)
        results["hops"] = run_hops(settings, args.hop_records, hops)
    results["plots"] = [] if args.no_plots else plots(results, out)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    summary = markdown(results)
    (out / "summary.md").write_text(summary)
    print("\n" + summary)
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
