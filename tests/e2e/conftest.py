"""One pipeline of every registered service and projection, shared by the e2e tests (each test uses its own
payment ids, so they do not interfere), on its own topics and database.

The risk service runs as a deployment would while a new model is rolled out: the v1 model decides, and a
model trained on synthetic traffic (tests/conftest.py, `risk_model`) scores every payment in shadow (decides
nothing, records its score)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.registry import process_args
from tests.e2e.pipeline import Pipeline, fresh_database, start_pipeline


@pytest.fixture(scope="package")
def pipeline(kafka_bootstrap: str, postgres_server_url: str, risk_model: tuple[Path, str]) -> Iterator[Pipeline]:
    for database_url in fresh_database(postgres_server_url, "e2e"):
        yield from start_pipeline(kafka_bootstrap, database_url, process_args(),
                                  PAYMENTS_RISK_MODELS_DIR=str(risk_model[0]), PAYMENTS_RISK_CANDIDATE=risk_model[1])
