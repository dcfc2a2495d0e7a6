"""Field types shared by the message models, each tied to the Avro type that carries it.

The models validate TYPES only (see `payments.contracts.validation` for business rules), so
a decodable-but-wrong value such as a negative amount or an empty idempotency key reaches
the orchestrator and is rejected with a reason code rather than failing to decode.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Final

from pydantic import AfterValidator, AwareDatetime, Field, StrictFloat, StrictInt, StrictStr
from pydantic.types import Strict

INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1


@dataclass(frozen=True)
class AvroHint:
    """Marks which Avro primitive/logical type carries an annotated Python field."""

    avro_type: str


def _utc_millis(value: datetime) -> datetime:
    # The wire carries milliseconds (timestamp-millis); normalising here makes a decoded
    # message compare equal to the one that was encoded.
    utc = value.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond - utc.microsecond % 1000)


Str = StrictStr
Long = Annotated[StrictInt, Field(ge=INT64_MIN, le=INT64_MAX), AvroHint("long")]
Int = Annotated[StrictInt, Field(ge=INT32_MIN, le=INT32_MAX), AvroHint("int")]
# A model input (risk features), never money: money is an integer of minor units (payments.money).
Double = Annotated[StrictFloat, Field(allow_inf_nan=False), AvroHint("double")]
UtcMillis = Annotated[AwareDatetime, Strict(), AfterValidator(_utc_millis), AvroHint("timestamp-millis")]
"""A timezone-aware datetime, normalised to UTC at millisecond precision."""
