"""Typed contract errors. Every failure to decode a record is a `ContractError` subclass
carrying a machine-readable `reason`, so a consumer can dead-letter it with that reason."""

from __future__ import annotations

from payments.errors import PaymentsError


class ContractError(PaymentsError):
    """Root of every error of the message-contracts layer."""

    reason: str = "contract_error"

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class SchemaStoreError(ContractError):
    """The schemas directory is missing, a file does not parse, or its name/version is inconsistent."""


class UndecodableRecordError(ContractError):
    """The bytes are not a well-formed record of the format (bad magic, truncated, bad Avro body)."""


class UnknownSchemaError(ContractError):
    """The writer schema (fingerprint or registry schema id) is not known."""


class UnknownMessageTypeError(ContractError):
    """The record's name has no message model, or a model has no schema."""


class InvalidMessageError(ContractError):
    """The record decodes but does not validate against its pydantic model."""


class EncodeError(ContractError):
    """A message could not be encoded with its schema."""


class MissingHeaderError(ContractError):
    """A required CloudEvents header is absent or not UTF-8."""


class InvalidHeaderError(ContractError):
    """A CloudEvents header is present but its value is malformed."""
