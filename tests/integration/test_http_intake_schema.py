"""Schemathesis against the live HTTP intake, over HTTP, from the OpenAPI document it serves: generated
requests (valid and invalid) never get a 5xx, and every answer conforms to the document (status code,
content type, headers, body schema). Bounded: ~30 examples per operation."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from payments.runtime.topics import Topics
from tests.e2e.pipeline import fresh_database
from tests.integration.http_intake import LiveIntake, intake_config, serve
from tests.oauth import Issuer
from tests.support import setup_topics

pytestmark = pytest.mark.integration
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@pytest.fixture(scope="module")
def live(kafka_bootstrap: str, postgres_server_url: str) -> Iterator[LiveIntake]:
    issuer = Issuer("https://issuer.test")
    issuer.add_rsa("k1")
    topics = Topics(prefix=f"t{uuid.uuid4().hex[:10]}.")
    setup_topics(kafka_bootstrap, topics)
    for database_url in fresh_database(postgres_server_url, "http_schema"):
        config = intake_config(kafka_bootstrap, database_url, topics, issuer.serve())
        yield from serve(config, issuer)
    issuer.stop()


OPERATIONS = ["POST /v1/payments", "POST /v1/payments/{payment_id}/cancel", "POST /v1/payments/{payment_id}/refunds",
              "GET /v1/payments/{payment_id}"]


def generate(operation: Any, mode: GenerationMode, live: LiveIntake, seen: Counter[int]) -> Callable[[], None]:
    """A Hypothesis test of one operation: each generated case is sent to the live service and checked."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=30 if mode is GenerationMode.POSITIVE else 15, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck), database=None)
    def check(case: schemathesis.Case) -> None:
        # A client of its own per case: the rate limit is per client; the schema is what is under test.
        response = case.call_and_validate(headers=live.auth(), checks=CHECKS, timeout=30)
        seen[response.status_code] += 1

    return check  # type: ignore[no-any-return]


# Not `schemathesis.pytest.from_fixture` + `@schema.parametrize()`: that loader reads pytest internals pytest 9
# no longer has (`request.node._nodeid`); the schema's own Hypothesis strategies are the same generator.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_generated_requests_get_documented_answers_and_never_a_server_error(live: LiveIntake,
                                                                           mode: GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    found = (result.ok() for result in schema.get_all_operations())
    operations = {f"{op.method.upper()} {op.path}": op for op in found}
    assert sorted(operations) == sorted(OPERATIONS)
    statuses: dict[str, Counter[int]] = {name: Counter() for name in OPERATIONS}
    for name in OPERATIONS:
        generate(operations[name], mode, live, statuses[name])()
    # Valid requests were made, not only refused. (Not every valid one is 202: JSON Schema counts 1.0 as an
    # integer, and the intake takes only integer literals as minor units: docs/http-intake.md.)
    if mode is GenerationMode.POSITIVE:
        assert all(statuses[name][202] for name in OPERATIONS if name.startswith("POST")), statuses
    else:
        assert all(max(counts, default=0) < 500 for counts in statuses.values()), statuses
