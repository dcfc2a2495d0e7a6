"""`payments`: the operator command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from payments.services import SERVICES
from payments.stack import LocalStack, StackError, fetch_kafka, stack_home


def _stack(args: argparse.Namespace) -> int:
    stack = LocalStack(stack_home())
    if args.action == "fetch":
        print(f"kafka jars: {fetch_kafka()}")
    elif args.action == "up":
        stack.up()
    elif args.action == "down":
        stack.down()
    for name, state in stack.status().items():
        print(f"{name:9} {state}")
    return 0


def _schemas(args: argparse.Namespace) -> int:
    from payments.contracts import evolution

    return evolution.main([])


def _run(args: argparse.Namespace) -> int:
    if args.service != "projection":
        from payments.services import entry_point

        return entry_point(args.service)()
    from projections.service import main as run_projection

    if not args.name:
        raise SystemExit("payments run projection: name the projection (e.g. payment_status)")
    return run_projection(args.name)


def _db(args: argparse.Namespace) -> int:
    from payments.config import Settings
    from projections.migrate import migrate

    applied = migrate(Settings.from_env().database_url)
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


def _replay(args: argparse.Namespace) -> int:
    if args.projection == "orchestrator":
        from orchestrator.replay import main as replay_orchestrator

        return replay_orchestrator(args)
    from projections.replay import main as replay

    return replay(args)


def _demo(args: argparse.Namespace) -> int:
    from payments.demo import main as demo

    return demo()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="payments", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    stack = commands.add_parser("stack", help="the local Kafka + PostgreSQL stack")
    stack.add_argument("action", choices=["up", "down", "status", "fetch"])
    stack.set_defaults(handler=_stack)

    schemas = commands.add_parser("schemas", help="message schemas")
    schemas.add_argument("action", choices=["check"])
    schemas.set_defaults(handler=_schemas)

    run = commands.add_parser("run", help="run one service process in the foreground")
    run.add_argument("service", choices=[*SERVICES, "projection"])
    run.add_argument("name", nargs="?", help="projection name (for `run projection`)")
    run.set_defaults(handler=_run)

    demo = commands.add_parser("demo", help="run sample payments through the whole system and report")
    demo.set_defaults(handler=_demo)

    db = commands.add_parser("db", help="the read-model database")
    db.add_argument("action", choices=["migrate"])
    db.set_defaults(handler=_db)

    replay = commands.add_parser("replay", help="rebuild a projection from offset zero, verify, swap it in; "
                                 "or the orchestrator's changelog from payments.events")
    replay.add_argument("projection", help="payment_status, ledger, settlement_report, or orchestrator")
    replay.add_argument("--until", metavar="ISO_TIMESTAMP",
                        help="rebuild the state as of this time into schema asof_<projection>_<ts>; no swap")
    replay.add_argument("--no-swap", action="store_true", help="rebuild and verify only; print the schema")
    replay.add_argument("--swap-in", metavar="SCHEMA",
                        help="swap an earlier rebuilt or retired schema in (rollback); no rebuild")
    replay.add_argument("--verify", action="store_true",
                        help="orchestrator: compare the changelog with the fold of payments.events; write nothing")
    replay.add_argument("--force", action="store_true",
                        help="orchestrator: write even while the orchestrator's consumer group has members")
    replay.set_defaults(handler=_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except StackError as error:
        print(f"payments: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
