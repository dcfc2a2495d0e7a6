"""The intake router: `payments.commands` (any partition, any client partitioner) -> `intake.requests`,
repartitioned by idempotency scope so that every command under one (client, key) meets the same
dedupe instance (the Kafka Streams repartition pattern). Stateless; exactly once like every hop.

A record that is not a command is dead-lettered (`UnexpectedMessageType`); everything else goes on
unchanged, with its original CloudEvents headers (the dedupe needs `ce_source`).
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from intake.scope import has_usable_key, scope_key, unscoped_key
from payments.contracts.base import Command
from payments.contracts.envelope import Envelope
from payments.contracts.messages import Message
from payments.contracts.topics import COMMANDS, INTAKE_REQUESTS
from payments.runtime.logic import Decision, Incoming, InputRejected, NoState, Outgoing


class IntakeRouterLogic(NoState):
    service: ClassVar[str] = "intake"
    input_topics: ClassVar[tuple[str, ...]] = (COMMANDS,)
    output_topics: ClassVar[tuple[str, ...]] = (INTAKE_REQUESTS,)

    def key_of(self, message: Message, envelope: Envelope) -> str:
        return message.payment_id  # upstream keys commands by payment id (docs/contracts.md §1)

    def decide(self, state: None, incoming: Incoming, now: datetime) -> Decision[None]:
        command = incoming.message
        if not isinstance(command, Command):
            raise InputRejected("UnexpectedMessageType", "unexpected_message_type",
                                f"{type(command).__name__} is not a command; {COMMANDS} takes InitiatePayment, "
                                "CancelPayment and RefundPayment")
        key = (scope_key(incoming.envelope.source, command.idempotency_key) if has_usable_key(command)
               else unscoped_key(command.payment_id))
        return Decision(None, (Outgoing(INTAKE_REQUESTS, key, command, envelope=incoming.envelope),))
