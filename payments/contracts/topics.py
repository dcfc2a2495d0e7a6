"""Base names of every topic, declared once.

Every other module refers to these constants (a message model's `TOPIC`, a service's inputs and
outputs, a projection's topics); `payments.runtime.topics.Topics` adds the deployment's prefix.
The set of topics that exist is derived from the services and projections that use them
(`ops.registry.topology`), so a topic named here but used by nobody is never created.
"""

from __future__ import annotations

from typing import Final

COMMANDS: Final = "payments.commands"  # upstream commands, any partition, any partitioner
INTAKE_REQUESTS: Final = "intake.requests"  # internal: commands repartitioned by idempotency scope
ADMITTED: Final = "payments.admitted"  # internal: admitted commands and duplicate notices, keyed by payment id
EVENTS: Final = "payments.events"  # saga events, keyed by payment id
SETTLEMENTS: Final = "payments.settlements"  # the public downstream contract
DLQ: Final = "payments.dlq"  # dead letters of every Kafka->Kafka service

RISK_COMMANDS: Final = "risk.commands"
RISK_REPLIES: Final = "risk.replies"
FUNDS_COMMANDS: Final = "funds.commands"  # keyed by account id (see docs/participants.md)
FUNDS_REPLIES: Final = "funds.replies"
PARTNER_COMMANDS: Final = "partner.commands"
PARTNER_REPLIES: Final = "partner.replies"


def changelog(service: str) -> str:
    """The compacted topic holding `service`'s state snapshots."""
    return f"{service}.changelog"
