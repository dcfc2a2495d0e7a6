"""`payments`: the operator command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="payments", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    stack = commands.add_parser("stack", help="the local Kafka + PostgreSQL stack")
    stack.add_argument("action", choices=["up", "down", "status", "fetch"])
    stack.set_defaults(handler=_stack)

    schemas = commands.add_parser("schemas", help="message schemas")
    schemas.add_argument("action", choices=["check"])
    schemas.set_defaults(handler=_schemas)
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
