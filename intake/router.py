"""The intake router: `payments.commands` (any partition, any client partitioner) -> `intake.commands`,
repartitioned by payment id with murmur2, so every later hop is co-partitioned with the saga (the
Kafka Streams repartition pattern). Stateless; exactly once like every hop.

A record that is not a command is dead-lettered (`UnexpectedMessageType`); a command goes on
unchanged, with its original CloudEvents headers (the gate needs `ce_source` for its key claim), and
stamped with its record's timestamp, the client's publish time (`payments_published_at`, internal).
Commands of one payment keep the order in which they arrived on their source partition.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import ClassVar

from payments.contracts.base import Command
from payments.contracts.envelope import Envelope
from payments.contracts.messages import Message
from payments.contracts.topics import COMMANDS, INTAKE_COMMANDS
from payments.runtime.logic import Decision, Incoming, InputRejected, NoState, Outgoing


class IntakeRouterLogic(NoState):
    service: ClassVar[str] = "intake"
    input_topics: ClassVar[tuple[str, ...]] = (COMMANDS,)
    output_topics: ClassVar[tuple[str, ...]] = (INTAKE_COMMANDS,)

    def key_of(self, message: Message, envelope: Envelope) -> str:
        return message.payment_id  # upstream keys commands by payment id (docs/contracts.md §1)

    def decide(self, state: None, incoming: Incoming, now: datetime) -> Decision[None]:
        command = incoming.message
        if not isinstance(command, Command):
            raise InputRejected("UnexpectedMessageType", "unexpected_message_type",
                                f"{type(command).__name__} is not a command; {COMMANDS} takes InitiatePayment, "
                                "CancelPayment and RefundPayment")
        # Stamped with its record's timestamp (the client's publish time): publish-to-outcome latency counts
        # from it. Whatever the upstream headers said about it is not taken.
        published = (datetime.fromtimestamp(incoming.timestamp_ms / 1000, UTC)
                     if incoming.timestamp_ms is not None and incoming.timestamp_ms > 0 else None)
        envelope = replace(incoming.envelope, published_at=published)
        return Decision(None, (Outgoing(INTAKE_COMMANDS, command.payment_id, command, envelope=envelope),))
