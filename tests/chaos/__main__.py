"""`python -m tests.chaos` (`make chaos`): the seeded chaos run on a three-broker cluster; prints its table.

Exit code 0 when every check holds, 1 when one fails (its payments' timelines are in the run folder).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from tests.chaos.run import ChaosConfig, run
from tests.chaos.schedule import FaultCounts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1, help="the same seed gives the same faults and traffic")
    parser.add_argument("--payments", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=60.0, help="InitiatePayment per second")
    parser.add_argument("--instances", type=int, default=2,
                        help="instances of the orchestrator and of each participant")
    parser.add_argument("--process-kills", type=int, default=50)
    parser.add_argument("--leader-kills", type=int, default=3)
    parser.add_argument("--broker-stalls", type=int, default=2)
    parser.add_argument("--postgres-stalls", type=int, default=1)
    parser.add_argument("--postgres-restarts", type=int, default=1)
    parser.add_argument("--partner-outages", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="run folder (default .chaos-results/<time>-seed<seed>)")
    args = parser.parse_args(argv)
    if args.payments <= 0 or args.rate <= 0 or args.instances <= 0:
        parser.error("--payments, --rate and --instances must be positive")
    counts = FaultCounts(process_kills=args.process_kills, leader_kills=args.leader_kills,
                         broker_stalls=args.broker_stalls, postgres_stalls=args.postgres_stalls,
                         postgres_restarts=args.postgres_restarts, partner_outages=args.partner_outages)
    # SIGTERM (a CI timeout, kill) unwinds like ^C, so the run's cluster, database and processes are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = run(ChaosConfig(seed=args.seed, payments=args.payments, rate=args.rate, instances=args.instances,
                             counts=counts, out_dir=args.out),
                 log=lambda line: print(line, flush=True))
    print()
    print(report.table())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
