"""Base names of every topic, declared once.

Every other module refers to these constants (a message model's `TOPIC`, a service's inputs and
outputs, a projection's topics); `payments.runtime.topics.Topics` adds the deployment's prefix.
The set of topics that exist is derived from the services and projections that use them
(`ops.registry.topology`), so a topic named here but used by nobody is never created.
"""

from __future__ import annotations

from typing import Final

COMMANDS: Final = "payments.commands"  # upstream commands, any partition, any partitioner
INTAKE_COMMANDS: Final = "intake.commands"  # internal: commands repartitioned by payment id (murmur2)
INTAKE_CLAIMS: Final = "intake.claims"  # internal: idempotency key claims, keyed by (client, key) scope
INTAKE_CLAIM_RESULTS: Final = "intake.claim-results"  # internal: answers to claims, keyed by payment id
ADMITTED: Final = "payments.admitted"  # internal: admitted commands and duplicate notices, keyed by payment id
EVENTS: Final = "payments.events"  # saga events, keyed by payment id
SETTLEMENTS: Final = "payments.settlements"  # the public downstream contract
DLQ: Final = "payments.dlq"  # dead letters of every Kafka->Kafka service
DLQ_REDRIVES: Final = "payments.dlq-redrives"  # compacted audit: which dead letters were redriven (ops.dlq)

RISK_COMMANDS: Final = "risk.commands"  # keyed by payee account (the risk service's first stage)
RISK_SCORING: Final = "risk.scoring"  # internal to the risk service: its second stage, keyed by payer account
RISK_OUTCOMES: Final = "risk.outcomes"  # from the saga: failures after approval, keyed by payer account
RISK_REPLIES: Final = "risk.replies"
RISK_MODELS: Final = "risk.models"  # which risk models score: operator changes, one partition (ops.risk_models)
FUNDS_COMMANDS: Final = "funds.commands"  # keyed by account id (see docs/participants.md)
FUNDS_REPLIES: Final = "funds.replies"
PARTNER_COMMANDS: Final = "partner.commands"
PARTNER_REPLIES: Final = "partner.replies"


def changelog(service: str) -> str:
    """The compacted topic holding `service`'s state snapshots."""
    return f"{service}.changelog"
