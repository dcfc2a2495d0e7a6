"""The HTTP intake as its own process (`payments run http-intake`) in front of the shared pipeline: a payment
POSTed with a token of a local issuer is settled, as GET shows, then refunded."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ops.supervisor import ServiceProcess, free_port
from tests.e2e.pipeline import Pipeline
from tests.oauth import Issuer
from tests.support import service, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def http_intake(pipeline: Pipeline) -> Iterator[tuple[str, Issuer]]:
    issuer = Issuer("https://issuer.e2e")
    issuer.add_rsa()
    port = free_port()
    env = {"PAYMENTS_OAUTH_ISSUER": issuer.issuer, "PAYMENTS_OAUTH_JWKS_URL": issuer.serve(),
           "PAYMENTS_HTTP_PORT": str(port)}
    process: ServiceProcess = service(["http-intake"], bootstrap=pipeline.bootstrap, database_url=pipeline.database_url,
                                      topics=pipeline.topics, log_dir=Path(tempfile.mkdtemp(prefix="http-intake-")),
                                      extra_env=env)
    process.start().wait_ready()
    yield f"http://127.0.0.1:{port}", issuer
    assert process.stop() == 0, process.log_tail()
    issuer.stop()


def status_of(http: httpx.Client, location: str, headers: dict[str, str]) -> dict[str, Any]:
    response = http.get(location, headers=headers)
    assert response.status_code == 200, response.text
    view: dict[str, Any] = response.json()
    return view


def test_a_payment_posted_over_http_settles_and_is_refunded(http_intake: tuple[str, Issuer]) -> None:
    url, issuer = http_intake
    headers = {"Authorization": f"Bearer {issuer.token(sub='upstream-shop')}"}
    key = f"order-{uuid.uuid4()}"
    body = {"amount": {"amount_minor": 1250, "currency": "EUR"}, "payer_account": "acc-alice",
            "payee_account": "acc-bob", "partner": "simbank", "reference": "order over HTTP"}
    with httpx.Client(base_url=url, timeout=30) as http:
        accepted = http.post("/v1/payments", json=body, headers={**headers, "Idempotency-Key": key})
        assert accepted.status_code == 202, accepted.text
        location = accepted.headers["location"]
        settled = wait_for(lambda: (view := status_of(http, location, headers))["status"] == "SETTLED" and view,
                           60, "the payment settled")
        assert settled["amount"] == {"amount_minor": 1250, "currency": "EUR"}
        assert "PaymentSettled" in [entry["event_type"] for entry in settled["timeline"]]

        refund = http.post(f"{location}/refunds", json={"amount": {"amount_minor": 1250, "currency": "EUR"},
                                                        "reason": "returned"},
                           headers={**headers, "Idempotency-Key": f"{key}-refund"})
        assert refund.status_code == 202, refund.text
        wait_for(lambda: status_of(http, location, headers)["status"] == "REFUNDED", 30, "the refund")
