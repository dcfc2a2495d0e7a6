"""Base classes of every message on the wire: frozen, typed, one Avro record each."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict

from payments.contracts import topics
from payments.contracts.types import Long, Str, UtcMillis

_BY_AVRO_NAME: dict[str, type[Message]] = {}


def registered_messages() -> dict[str, type[Message]]:
    """Every message model defined so far, by Avro record full name (payments.contracts.messages imports them all)."""
    return dict(_BY_AVRO_NAME)


class Message(BaseModel):
    """A frozen value that is one Avro record.

    Subclasses set `AVRO_NAME` (the record's full name, also the CloudEvents `ce_type`)
    and `TOPIC` (where it is published, a constant of `payments.contracts.topics`). The Kafka
    key is the `payment_id`, except for funds commands, which are keyed by their `account`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    AVRO_NAME: ClassVar[str]
    TOPIC: ClassVar[str]

    payment_id: Str

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """A model that declares its own AVRO_NAME registers itself: no list of models to keep by hand."""
        super().__pydantic_init_subclass__(**kwargs)
        name = cls.__dict__.get("AVRO_NAME")
        if name is not None:
            assert _BY_AVRO_NAME.setdefault(name, cls) is cls, f"two models claim the Avro record {name}"

    @property
    def message_id(self) -> str:
        """The unique id of this message (command_id / event_id / reply_id); the ce_id header."""
        raise NotImplementedError

    @property
    def idempotency_key_header(self) -> str | None:
        """Value of the optional `idempotency_key` header, for messages that carry one."""
        return None

    @property
    def message_time(self) -> datetime | None:
        """When the message's fact happened or was requested (the ce_time header), if it says."""
        return None

    def to_avro(self) -> dict[str, Any]:
        """The Avro datum for this message (fastavro's dict form)."""
        return self.model_dump(mode="python")

    @classmethod
    def from_avro(cls, datum: dict[str, Any]) -> Self:
        return cls.model_validate(datum)


class Command(Message):
    """An upstream command on payments.commands."""

    TOPIC: ClassVar[str] = topics.COMMANDS

    command_id: Str
    idempotency_key: Str

    @property
    def message_id(self) -> str:
        return self.command_id

    @property
    def idempotency_key_header(self) -> str | None:
        return self.idempotency_key


class SagaEvent(Message):
    """A fact decided by the orchestrator, on payments.events."""

    TOPIC: ClassVar[str] = topics.EVENTS

    event_id: Str
    seq: Long
    occurred_at: UtcMillis
    causation_id: Str

    @property
    def message_id(self) -> str:
        return self.event_id

    @property
    def message_time(self) -> datetime | None:
        return self.occurred_at


class ParticipantCommand(Message):
    """A command from the orchestrator to a participant (risk, funds, partner)."""

    command_id: Str
    issued_at: UtcMillis

    @property
    def message_id(self) -> str:
        return self.command_id

    @property
    def message_time(self) -> datetime | None:
        return self.issued_at


class ParticipantReply(Message):
    """A participant's answer to one ParticipantCommand."""

    reply_id: Str
    command_id: Str

    @property
    def message_id(self) -> str:
        return self.reply_id
