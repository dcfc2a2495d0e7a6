"""The gate: admits each payment's commands to the saga in the order they arrived, each after its
idempotency key was claimed.

Input `intake.commands` and `intake.claim-results` (both keyed by payment id, co-partitioned with the
saga); output `intake.claims` (keyed by scope) and `payments.admitted` (keyed by payment id).

Per payment, at most one command is *claiming* at a time; commands of the same payment that arrive
meanwhile are *parked* behind it, so a cancel sent right after its initiate never overtakes it. When
the claim's result comes back, the claiming command is admitted unchanged (GRANTED, with its original
envelope) or replaced by a `DuplicateCommand` naming the original (SAME_REQUEST, KEY_REUSED); then the
parked commands go on, in order, each claiming in turn. A command without a usable key needs no
claim: it is admitted as it comes (in its place in the order) for the saga to reject.

State exists only while a claim is in flight. A claim whose result has not come back after
`claim_retry` is sent again: the idempotency service answers a re-sent claim exactly as the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

from pydantic import BaseModel

from intake.errors import HeldCommandError
from intake.scope import has_usable_key, request_hash, scope_key
from payments.contracts.base import Command
from payments.contracts.commands import RefundPayment
from payments.contracts.envelope import Envelope
from payments.contracts.intake import DuplicateCommand, KeyClaim, KeyClaimResult
from payments.contracts.messages import MESSAGE_TYPES, Message
from payments.contracts.topics import ADMITTED, INTAKE_CLAIM_RESULTS, INTAKE_CLAIMS, INTAKE_COMMANDS
from payments.runtime.logic import STATE_CONFIG, Decision, Incoming, InputRejected, JsonState, Outgoing


@dataclass(frozen=True)
class GateConfig:
    claim_retry: timedelta = timedelta(seconds=10)


class Held(BaseModel):
    """A command as the gate received it: the model (as JSON) and its envelope's attributes."""

    model_config = STATE_CONFIG

    avro_name: str
    body: str
    ce_id: str
    ce_source: str
    ce_time: datetime
    traceparent: str | None = None
    content_type: str
    published_at: datetime | None = None

    @classmethod
    def of(cls, command: Command, envelope: Envelope) -> Held:
        return cls(avro_name=command.AVRO_NAME, body=command.model_dump_json(), ce_id=envelope.id,
                   ce_source=envelope.source, ce_time=envelope.time, traceparent=envelope.traceparent,
                   content_type=envelope.content_type, published_at=envelope.published_at)

    def command(self) -> Command:
        """The command held; HeldCommandError if this version knows no command of that record type (the
        state was written by another version: `of` only ever holds commands)."""
        model = MESSAGE_TYPES.get(self.avro_name)
        if model is None or not issubclass(model, Command):
            raise HeldCommandError(f"the gate holds a {self.avro_name} record, which is not a command this "
                                   "version knows")
        return model.model_validate_json(self.body)

    def envelope(self) -> Envelope:
        return Envelope(id=self.ce_id, type=self.avro_name, source=self.ce_source, time=self.ce_time,
                        content_type=self.content_type, traceparent=self.traceparent, published_at=self.published_at)


class GateState(BaseModel):
    model_config = STATE_CONFIG

    claiming: Held
    claim_sent_at: datetime
    parked: tuple[Held, ...] = ()


class GateLogic(JsonState[GateState]):
    state_model = GateState
    service: ClassVar[str] = "gate"
    input_topics: ClassVar[tuple[str, ...]] = (INTAKE_COMMANDS, INTAKE_CLAIM_RESULTS)
    output_topics: ClassVar[tuple[str, ...]] = (INTAKE_CLAIMS, ADMITTED)

    def __init__(self, config: GateConfig | None = None) -> None:
        self.config = config or GateConfig()

    def key_of(self, message: Message, envelope: Envelope) -> str:
        return message.payment_id

    def decide(self, state: GateState | None, incoming: Incoming, now: datetime) -> Decision[GateState]:
        message = incoming.message
        if isinstance(message, KeyClaimResult):
            return self._answered(state, message, now)
        if not isinstance(message, Command):
            raise InputRejected("UnexpectedMessageType", "unexpected_message_type",
                                f"{type(message).__name__} is neither a command nor a claim result")
        held = Held.of(message, incoming.envelope)
        if state is not None:  # a claim of this payment is in flight: keep the order
            return Decision(state.model_copy(update={"parked": (*state.parked, held)}))
        return self._release([held], now)

    def fire_timers(self, key: str, state: GateState, now: datetime) -> Decision[GateState]:
        """The claim's result is overdue (the idempotency service restarting, say): ask again."""
        if now < state.claim_sent_at + self.config.claim_retry:
            return Decision(state)
        return Decision(state.model_copy(update={"claim_sent_at": now}), (self._claim(state.claiming, now),))

    def next_deadline(self, state: GateState) -> datetime | None:
        return state.claim_sent_at + self.config.claim_retry

    # -- internals ----------------------------------------------------------------------------

    def _answered(self, state: GateState | None, result: KeyClaimResult, now: datetime) -> Decision[GateState]:
        if state is None or state.claiming.command().command_id != result.command_id:
            return Decision(state)  # a second answer to a claim already settled: nothing to do
        first = self._admit(state.claiming) if result.verdict == "GRANTED" else self._notice(state.claiming, result)
        rest = self._release(list(state.parked), now)
        return Decision(rest.state, (first, *rest.outgoing))

    def _release(self, queue: list[Held], now: datetime) -> Decision[GateState]:
        """Admit commands from the head of `queue` until one must claim its key; park the rest behind it."""
        outgoing: list[Outgoing] = []
        for index, held in enumerate(queue):
            if has_usable_key(held.command()):
                outgoing.append(self._claim(held, now))
                return Decision(GateState(claiming=held, claim_sent_at=now, parked=tuple(queue[index + 1:])),
                                tuple(outgoing))
            outgoing.append(self._admit(held))
        return Decision(None, tuple(outgoing))

    @staticmethod
    def _claim(held: Held, now: datetime) -> Outgoing:
        command = held.command()
        claim = KeyClaim(payment_id=command.payment_id, command_id=command.command_id, source=held.ce_source,
                         idempotency_key=command.idempotency_key,
                         command_type=type(command).__name__,
                         request_hash=request_hash(command),
                         refund_id=command.refund_id if isinstance(command, RefundPayment) else None,
                         claimed_at=now)
        return Outgoing(INTAKE_CLAIMS, scope_key(held.ce_source, command.idempotency_key), claim)

    @staticmethod
    def _admit(held: Held) -> Outgoing:
        command = held.command()
        return Outgoing(ADMITTED, command.payment_id, command, envelope=held.envelope())

    @staticmethod
    def _notice(held: Held, result: KeyClaimResult) -> Outgoing:
        command = held.command()
        verdict = "SAME_REQUEST" if result.verdict == "SAME_REQUEST" else "KEY_REUSED"
        notice = DuplicateCommand(
            payment_id=command.payment_id, command_id=command.command_id, idempotency_key=command.idempotency_key,
            source=held.ce_source, command_type=type(command).__name__,
            verdict=verdict, original_payment_id=result.original_payment_id,
            original_command_id=result.original_command_id,
            refund_id=command.refund_id if isinstance(command, RefundPayment) else None,
            original_refund_id=result.original_refund_id, first_seen_at=result.first_seen_at)
        return Outgoing(ADMITTED, command.payment_id, notice, envelope=held.envelope())
