"""A small trained risk model shared by the risk tests (LightGBM in process: about 3 s, once per session)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from consumers.risk.synthetic import generate
from consumers.risk.training import Example, examples_of, train

START = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="session")
def risk_sample() -> tuple[list[Example], dict[str, str]]:
    traffic = generate(seed=5, customers=400, days=20, start=START, fraud_share=0.08)
    return examples_of(traffic.attempts, traffic.labels, traffic.failures), dict(traffic.labels)


@pytest.fixture(scope="session")
def trained(risk_sample: tuple[list[Example], dict[str, str]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The manifest of a model trained on `risk_sample`, in a models directory of its own."""
    out = tmp_path_factory.mktemp("models")
    manifest = train(risk_sample[0], out, seed=5)
    return out / f"{manifest.version}.json"
