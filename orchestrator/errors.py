"""The root of every error the orchestrator raises on purpose."""

from __future__ import annotations


class OrchestratorError(Exception):
    """Root of the orchestrator's errors."""
