"""`payments`: the operator command line.

Settings are read once here (ops.settings) and passed to whatever runs. Service and projection names,
and their help, come from the registry (ops.registry). Every error the project raises on purpose is
printed as one line on stderr, never a traceback; exit codes: 0 ok, 1 failed, 2 bad configuration or
usage (services add their own, see payments.runtime.service).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import psycopg
from confluent_kafka import KafkaException

from consumers.errors import ParticipantError
from intake.errors import IntakeError
from ops.errors import ConfigError, OpsError
from ops.registry import GATEWAYS, PROJECTIONS, SERVICES, SIMULATORS
from ops.settings import Settings
from orchestrator.errors import OrchestratorError
from payments.errors import PaymentsError
from projections.errors import ProjectionError

EXIT_FAILED = 1
EXIT_USAGE = 2
# Operator commands that live in their own module: each has `add_parser(commands)`, which adds its
# subcommand and sets `handler(args, settings) -> int` on it.
OPERATOR_COMMANDS: tuple[str, ...] = ("ops.reconcile", "ops.dlq", "ops.inspect", "ops.topics", "ops.acls", "ops.risk")
KNOWN_ERRORS = (OpsError, PaymentsError, IntakeError, ParticipantError, OrchestratorError, ProjectionError,
                psycopg.Error, KafkaException)


def _stack(args: argparse.Namespace, settings: Settings) -> int:
    from ops.stack import LocalStack, fetch_kafka

    if args.action == "tools":  # the deployment validators (tests/deploy), built into the cache
        from ops.stack.tools import fetch_deploy_tools

        for name, path in fetch_deploy_tools(settings.jar_cache).items():
            print(f"{name}: {path}")
        return 0
    stack = LocalStack.of(settings)
    if args.action == "fetch":
        print(f"kafka jars: {fetch_kafka(settings.jar_cache)}")
    elif args.action == "up":
        stack.up()
    elif args.action == "down":
        stack.down()
    elif args.action == "purge":
        stack.purge()
    for name, state in stack.status().items():
        print(f"{name:9} {state}")
    return 0


def _schemas(args: argparse.Namespace, settings: Settings) -> int:
    from payments.contracts import evolution

    return evolution.main(["--schemas-dir", str(settings.schemas_dir)] if settings.schemas_dir else [])


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from ops.launch import run_projection, run_service, run_simulator

    if args.service in SIMULATORS:
        return run_simulator(args.service, settings)
    if args.service in GATEWAYS:
        from ops.http_intake import run_http_intake

        return run_http_intake(settings)
    if args.service != "projection":
        return run_service(args.service, settings)
    if args.name not in PROJECTIONS:
        known = ", ".join(PROJECTIONS)
        print(f"payments run projection: name one of {known} (got {args.name!r})", file=sys.stderr)
        return EXIT_USAGE
    return run_projection(args.name, settings)


def _db(args: argparse.Namespace, settings: Settings) -> int:
    from projections.migrate import migrate

    applied = migrate(settings.database)
    print("applied: " + (", ".join(applied) if applied else "nothing (up to date)"))
    return 0


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    if args.projection == "orchestrator":
        from orchestrator.replay import run_command as replay_orchestrator

        return replay_orchestrator(bootstrap=settings.kafka, topics=settings.topics,
                                   serde=settings.serde(), verify_only=args.verify, force=args.force,
                                   config=settings.saga())
    from projections.replay import run_command as replay_projection

    return replay_projection(PROJECTIONS[args.projection], bootstrap=settings.kafka,
                             database_url=settings.database, topics=settings.topics, serde=settings.serde(),
                             until_text=args.until, no_swap=args.no_swap, swap_in_schema=args.swap_in)


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from ops.status import print_status, system_status

    status = system_status(settings)
    print_status(status)
    return 0 if status.ready else EXIT_FAILED


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from ops.demo import main as demo

    return demo(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="payments", description=__doc__.splitlines()[0] if __doc__ else None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    stack = commands.add_parser("stack", help="the local Kafka + PostgreSQL stack (development and tests)")
    stack.add_argument("action", choices=["up", "down", "status", "fetch", "tools", "purge"],
                       help="fetch: Kafka's jars; tools: helm, kubeconform and schemas for tests/deploy; "
                            "purge: stop and delete all local data")
    stack.set_defaults(handler=_stack)

    schemas = commands.add_parser("schemas", help="message schemas")
    schemas.add_argument("action", choices=["check"])
    schemas.set_defaults(handler=_schemas)

    services = "\n".join([*(f"  {name:22} {spec.summary}" for name, spec in SERVICES.items()),
                          *(f"  {name:22} {summary}" for name, summary in SIMULATORS.items()),
                          *(f"  {name:22} {summary}" for name, summary in GATEWAYS.items())])
    projections = "\n".join(f"  projection {name:11} {spec.summary}" for name, spec in PROJECTIONS.items())
    run = commands.add_parser("run", help="run one service process in the foreground",
                              epilog=f"services:\n{services}\n{projections}",
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("service", choices=[*SERVICES, *SIMULATORS, *GATEWAYS, "projection"])
    run.add_argument("name", nargs="?", help=f"with `projection`: one of {', '.join(PROJECTIONS)}")
    run.set_defaults(handler=_run)

    status = commands.add_parser("status", help="is every topic and every service ready? consumer groups and lag; "
                                 "exit 0 when ready")
    status.set_defaults(handler=_status)

    demo = commands.add_parser("demo", help="run sample payments through the whole system and report")
    demo.set_defaults(handler=_demo)

    db = commands.add_parser("db", help="the read-model database")
    db.add_argument("action", choices=["migrate"])
    db.set_defaults(handler=_db)

    replay = commands.add_parser("replay", help="rebuild a projection from offset zero, verify, swap it in; "
                                 "or the orchestrator's changelog from payments.events")
    replay.add_argument("projection", choices=[*PROJECTIONS, "orchestrator"])
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

    for module in OPERATOR_COMMANDS:
        importlib.import_module(module).add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.load()
        return int(args.handler(args, settings))
    except ConfigError as error:
        print(f"payments: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KNOWN_ERRORS as error:
        print(f"payments {args.command}: {error}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
