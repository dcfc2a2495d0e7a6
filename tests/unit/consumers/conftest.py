"""The risk tests' trained model: the session's (tests/conftest.py), by its manifest path."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def trained(risk_model: tuple[Path, str]) -> Path:
    """The manifest of the session's model, in its models directory."""
    return risk_model[0] / f"{risk_model[1]}.json"
