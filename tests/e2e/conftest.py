"""One pipeline of every registered service and projection, shared by the e2e tests (each test uses its own
payment ids, so they do not interfere), on its own topics and database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ops.registry import process_args
from tests.e2e.pipeline import Pipeline, fresh_database, start_pipeline


@pytest.fixture(scope="package")
def pipeline(kafka_bootstrap: str, postgres_server_url: str) -> Iterator[Pipeline]:
    for database_url in fresh_database(postgres_server_url, "e2e"):
        yield from start_pipeline(kafka_bootstrap, database_url, process_args())
