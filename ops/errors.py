"""The root of every error the operator tooling raises on purpose; the CLI prints these as one line."""

from __future__ import annotations


class OpsError(Exception):
    """Root of the operator tooling's errors."""


class ConfigError(OpsError):
    """A setting is malformed or out of range; the message names the variable."""


class StackError(OpsError):
    """The local stack could not be started, stopped or reached."""
