"""The chaos run's fault schedule: a pure function of a seed, so the same seed gives the same run's faults.

Two kinds of fault:
- process kills (SIGKILL of one service or projection instance; its supervisor starts it again) land at
  seeded times anywhere in the traffic window, over any other fault;
- cluster faults (the partition leader broker killed and restarted, a broker or PostgreSQL stopped with
  SIGSTOP for longer than the session and transaction timeouts, PostgreSQL killed and restarted, the
  partner down) take turns: each gets its own slot, in a seeded order, so the cluster never loses two
  brokers at once (with replication factor 3 and min.insync.replicas 2 that would stop every write,
  which is an outage, not a fault the system is expected to ride through). A broker fault also waits,
  when it is due, until every replica is back in sync (tests/chaos/run.py): a broker still catching up
  counts as lost. The times here are therefore "not before".

The schedule is printed before the run and written beside its report.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

PROCESS_KILL = "process SIGKILL"
LEADER_KILL = "leader broker SIGKILL"
BROKER_STALL = "broker SIGSTOP"
POSTGRES_STALL = "PostgreSQL SIGSTOP"
POSTGRES_RESTART = "PostgreSQL SIGKILL and restart"
PARTNER_OUTAGE = "partner outage"
CLUSTER_KINDS = (LEADER_KILL, BROKER_STALL, POSTGRES_STALL, POSTGRES_RESTART, PARTNER_OUTAGE)
KINDS = (PROCESS_KILL, *CLUSTER_KINDS)

# How long each cluster fault lasts (seconds, drawn per fault). A stall outlasts the 10 s session and
# transaction timeouts (payments.runtime.config), so the group evicts members and open transactions abort.
DURATION_S = {
    LEADER_KILL: (3.0, 8.0),  # down before the restart begins
    BROKER_STALL: (12.0, 16.0),
    POSTGRES_STALL: (11.0, 14.0),
    POSTGRES_RESTART: (1.0, 4.0),  # down before the restart begins
    PARTNER_OUTAGE: (5.0, 12.0),  # the simulator answers 503 to every call
}
RECOVERY_S = 4.0  # at least this between one cluster fault's end and the next one's start


@dataclass(frozen=True)
class Fault:
    at_s: float  # seconds after the traffic starts
    kind: str
    target: str  # a process ("orchestrator#b"), a broker ("node 2", "leader of partition 3"), or ""
    duration_s: float = 0.0

    def describe(self) -> str:
        lasting = f" for {self.duration_s:.1f}s" if self.duration_s else ""
        target = f" {self.target}" if self.target else ""
        return f"{self.at_s:7.1f}s  {self.kind}{target}{lasting}"


@dataclass(frozen=True)
class FaultCounts:
    process_kills: int = 50
    leader_kills: int = 3
    broker_stalls: int = 2
    postgres_stalls: int = 1
    postgres_restarts: int = 1
    partner_outages: int = 1

    def cluster(self) -> list[str]:
        return ([LEADER_KILL] * self.leader_kills + [BROKER_STALL] * self.broker_stalls
                + [POSTGRES_STALL] * self.postgres_stalls + [POSTGRES_RESTART] * self.postgres_restarts
                + [PARTNER_OUTAGE] * self.partner_outages)


def plan(seed: int, traffic_s: float, processes: list[str], counts: FaultCounts, *, brokers: int = 3,
         partitions: int = 6) -> list[Fault]:
    """The faults of a run, in time order. Cluster faults start in the first 10% of the traffic window
    and follow each other in seeded order, each in an equal share of the window (longer if its fault
    and recovery do not fit: the schedule then runs past the traffic, into the drain)."""
    if traffic_s <= 0:
        raise ValueError("the traffic window must be positive")
    if counts.process_kills and not processes:
        raise ValueError("process kills need processes to kill")
    rng = random.Random(seed)
    # Rounded to 0.1 s, but never past the traffic window (a draw in its last 0.05 s rounded up past it).
    faults = [Fault(min(round(rng.uniform(0.0, traffic_s), 1), traffic_s), PROCESS_KILL, rng.choice(processes))
              for _ in range(counts.process_kills)]
    cluster = counts.cluster()
    rng.shuffle(cluster)
    share = 0.85 * traffic_s / max(1, len(cluster))
    at = 0.1 * traffic_s
    for kind in cluster:
        low, high = DURATION_S[kind]
        duration = round(rng.uniform(low, high), 1)
        if kind == LEADER_KILL:
            target = f"leader of partition {rng.randrange(partitions)}"
        elif kind == BROKER_STALL:
            target = f"node {rng.randint(1, brokers)}"
        else:
            target = ""
        start = round(at + rng.uniform(0.0, max(0.0, share - duration - RECOVERY_S) * 0.5), 1)
        faults.append(Fault(start, kind, target, duration))
        # A killed broker takes about 10 s to start again and catch up: count it as part of the fault.
        busy = duration + (12.0 if kind == LEADER_KILL else 0.0) + RECOVERY_S
        at = max(at + share, start + busy)
    return sorted(faults, key=lambda f: (f.at_s, f.kind, f.target))


def by_kind(faults: list[Fault]) -> Counter[str]:
    return Counter(f.kind for f in faults)
