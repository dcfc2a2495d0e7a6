"""The root of every error the intake (router, gate, idempotency service) raises on purpose.

An exception from a Logic's `decide` dead-letters the record (`ProcessingError`, the class named in
`dlq_detail`) and the partition moves on; from `fire_timers` it is logged (`timer_failed`) and the
timer fires again later; from a config object, the process stops at start with the message. Bad
input the intake recognises is not one of these: it raises `payments.runtime.logic.InputRejected`,
dead-lettered with its own reason code. Assertions are kept for what no input can cause.
"""

from __future__ import annotations


class IntakeError(Exception):
    """Root of the intake's errors."""


class IntakeConfigError(IntakeError, ValueError):
    """A setting of an intake service is out of range; the message names it and the value."""


class UnknownCommandError(IntakeError):
    """A command type the intake has no request identity for (a command added to the contracts whose
    idempotency rule the intake does not know yet): the command cannot be claimed."""


class HeldCommandError(IntakeError):
    """The gate's state holds a command it cannot rebuild: a snapshot naming a record type this version
    does not know as a command (written by another version of the gate)."""
