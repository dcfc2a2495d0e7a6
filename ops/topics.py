"""`payments topics ensure`: create the whole topology (ops.registry.topology) as the admin.

On a secured cluster a service principal may not create topics (ops.acls), so a deployment runs this
once, with the admin's credentials, before the services start (the topics job); a service then finds
its topics and sends no CreateTopics at all. Existing topics are left alone; one of the wrong partition
count is an error (co-partitioning).
"""

from __future__ import annotations

import argparse
from typing import Any

from ops.registry import topology
from ops.settings import Settings
from payments.runtime.topics import ensure_topics


def handler(args: argparse.Namespace, settings: Settings) -> int:
    specs = topology(settings.topics, settings.partitions)
    ensure_topics(settings.kafka, specs)
    print(f"{len(specs)} topics present on {settings.kafka} ({settings.partitions} partitions each)")
    return 0


def add_parser(commands: Any) -> None:  # argparse's subparsers action: its class is private
    """Add `payments topics` to the CLI's subcommands (ops.cli.OPERATOR_COMMANDS)."""
    parser = commands.add_parser("topics", help="create every topic of the topology that is missing (as the admin)")
    parser.add_argument("action", choices=["ensure"])
    parser.set_defaults(handler=handler)
