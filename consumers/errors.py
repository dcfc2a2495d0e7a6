"""The root of every error the saga participants raise on purpose.

Each participant's own errors derive from it (`FundsError`, `RiskModelError`, `PartnerError`, ...).
An exception from a participant's `decide` makes the processor dead-letter the command
(`ProcessingError`) and move on; an error at start (a bad model or seed file) stops the process
with a sentence naming the file and the problem.
"""

from __future__ import annotations


class ParticipantError(Exception):
    """Root of the participants' errors."""
