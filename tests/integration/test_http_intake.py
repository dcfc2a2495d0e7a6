"""The HTTP intake on real Kafka and PostgreSQL, served by uvicorn, trusting a local JWKS: what a request
gets, what lands on the commands topic, and every way a request is refused (docs/http-intake.md)."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from intake.http.idempotency import derived_id, fingerprint
from intake.http.models import InitiatePaymentRequest
from payments.contracts.commands import CancelPayment, InitiatePayment, RefundPayment
from payments.runtime.topics import Topics
from tests.e2e.pipeline import fresh_database
from tests.integration.http_intake import LiveIntake, intake_config, serve
from tests.oauth import Issuer, hs256, unsigned
from tests.support import decode_all, read_all, setup_topics

pytestmark = pytest.mark.integration
PROBLEM = "application/problem+json"
BODY: dict[str, Any] = {"amount": {"amount_minor": 1250, "currency": "EUR"}, "payer_account": "acc-payer-1",
                        "payee_account": "acc-payee-1", "partner": "simbank", "reference": "invoice 42",
                        "metadata": {"channel": "api"}}


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    issuer = Issuer("https://issuer.test")
    issuer.add_rsa("k1")
    yield issuer
    issuer.stop()


@pytest.fixture(scope="module")
def module_topics(kafka_bootstrap: str) -> Topics:
    topics = Topics(prefix=f"t{uuid.uuid4().hex[:10]}.")
    setup_topics(kafka_bootstrap, topics)
    return topics


@pytest.fixture(scope="module")
def module_database(postgres_server_url: str) -> Iterator[str]:
    yield from fresh_database(postgres_server_url, "http")


@pytest.fixture(scope="module")
def intake(kafka_bootstrap: str, module_database: str, module_topics: Topics, issuer: Issuer) -> Iterator[LiveIntake]:
    jwks_url = issuer.serve()
    yield from serve(intake_config(kafka_bootstrap, module_database, module_topics, jwks_url), issuer)


def commands(intake: LiveIntake, payment_id: str) -> list[tuple[Any, list[tuple[str, bytes]]]]:
    records = [r for r in read_all(intake.config.kafka.bootstrap_servers, intake.config.topics.commands)
               if r.key == payment_id.encode()]
    return list(zip(decode_all(records), (r.headers for r in records), strict=True))


def post(http: httpx.Client, path: str, body: object, headers: dict[str, str], key: str | None) -> httpx.Response:
    extra = {"Idempotency-Key": key} if key is not None else {}
    return http.post(path, json=body, headers={**headers, **extra})


def assert_problem(response: httpx.Response, status: int, kind: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    if kind is not None:
        assert body["type"] == f"urn:payments:problem:{kind}"
    return body


# -- the flow ----------------------------------------------------------------------------------------


def test_a_payment_is_produced_once_and_a_replay_gets_the_same_answer(intake: LiveIntake) -> None:
    client, key = f"billing-{uuid.uuid4().hex[:6]}", f"order-{uuid.uuid4()}"
    traceparent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    headers = {**intake.auth(client), "traceparent": traceparent}
    with intake.client() as http:
        first = post(http, "/v1/payments", BODY, headers, key)
        assert first.status_code == 202, first.text
        payment_id = derived_id(client, key, "payment")
        assert first.json() == {"status": "ACCEPTED", "payment_id": payment_id,
                                "command_id": derived_id(client, key, "command")}
        assert first.headers["location"] == f"/v1/payments/{payment_id}"

        again = post(http, "/v1/payments", {**BODY, "metadata": {"channel": "api"}}, headers, key)
        assert (again.status_code, again.json(), again.headers["location"]) == (202, first.json(),
                                                                                first.headers["location"])
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"

        other = post(http, "/v1/payments", {**BODY, "amount": {"amount_minor": 999, "currency": "EUR"}}, headers, key)
        assert_problem(other, 422, "idempotency-key-reused")

        # Another client's same key is another request altogether.
        elsewhere = post(http, "/v1/payments", BODY, intake.auth(), key)
        assert elsewhere.status_code == 202
        assert elsewhere.json()["payment_id"] != payment_id

        seen = http.get(first.headers["location"], headers=headers)
        assert (seen.status_code, seen.json()["status"]) == (200, "ACCEPTED")  # no projection runs here

    [(command, record_headers)] = commands(intake, payment_id)
    assert isinstance(command, InitiatePayment)
    assert (command.payment_id, command.idempotency_key, command.payer_account, command.amount.amount_minor,
            command.amount.currency, command.partner, command.reference, command.metadata) == (
        payment_id, key, "acc-payer-1", 1250, "EUR", "simbank", "invoice 42", {"channel": "api"})
    names = dict(record_headers)
    assert names["ce_source"] == f"http:{client}".encode()
    assert names["idempotency_key"] == key.encode()
    assert names["ce_type"] == b"payments.commands.InitiatePayment"
    assert names["traceparent"] == traceparent.encode()  # the caller's trace goes on (tracing is off here)


def test_a_cancel_and_a_refund_are_produced_with_their_ids(intake: LiveIntake) -> None:
    client, payment_id = f"c-{uuid.uuid4().hex[:6]}", str(uuid.uuid4())
    headers = intake.auth(client)
    with intake.client() as http:
        cancel = post(http, f"/v1/payments/{payment_id}/cancel", {"reason": "customer asked"}, headers, "cancel-1")
        refund = post(http, f"/v1/payments/{payment_id}/refunds",
                      {"amount": {"amount_minor": 500, "currency": "EUR"}, "reason": "returned"}, headers, "refund-1")
    assert (cancel.status_code, refund.status_code) == (202, 202), (cancel.text, refund.text)
    assert refund.json()["refund_id"] == derived_id(client, "refund-1", "refund")
    found = [command for command, _ in commands(intake, payment_id)]
    assert [type(c) for c in found] == [CancelPayment, RefundPayment]
    assert isinstance(found[1], RefundPayment)
    assert (found[1].refund_id, found[1].amount.amount_minor) == (refund.json()["refund_id"], 500)


def test_a_request_while_the_first_under_its_key_is_in_progress_is_409(intake: LiveIntake) -> None:
    client, key = f"c-{uuid.uuid4().hex[:6]}", "in-flight"
    payment_id = derived_id(client, key, "payment")
    request_hash = fingerprint("initiate", payment_id, InitiatePaymentRequest.model_validate(BODY))
    with psycopg.connect(intake.config.database_url, autocommit=True) as conn:
        conn.execute("""INSERT INTO http_idempotency (client, idempotency_key, request_hash, operation, payment_id,
                        state, created_at, updated_at)
                        VALUES (%s, %s, %s, 'initiate', %s, 'in_progress', now(), now())""",
                     (client, key, request_hash, payment_id))
    with intake.client() as http:
        response = post(http, "/v1/payments", BODY, intake.auth(client), key)
    assert_problem(response, 409, "request-in-progress")
    assert response.headers["retry-after"] == "1"
    assert commands(intake, payment_id) == []


def test_get_reads_the_status_and_timeline_and_404s_an_unknown_payment(intake: LiveIntake) -> None:
    payment_id, at = str(uuid.uuid4()), datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with psycopg.connect(intake.config.database_url, autocommit=True) as conn:
        conn.execute("""INSERT INTO payment_status VALUES (%s, 'SETTLED', 'a1', 'a2', 1250, 'EUR', 'simbank', 2,
                        'PaymentSettled', NULL, %s, %s)""", (payment_id, at, at))
        for seq, kind in ((1, "PaymentInitiated"), (2, "PaymentSettled")):
            conn.execute("INSERT INTO payment_timeline VALUES (%s, %s, %s, %s, %s, %s)",
                         (str(uuid.uuid4()), payment_id, seq, kind, at, Jsonb({"seq": seq})))
    with intake.client() as http:
        found = http.get(f"/v1/payments/{payment_id}", headers=intake.auth())
        missing = http.get(f"/v1/payments/{uuid.uuid4()}", headers=intake.auth())
        not_an_id = http.get("/v1/payments/nope", headers=intake.auth())
    assert found.status_code == 200, found.text
    view = found.json()
    assert (view["status"], view["amount"], view["last_event_type"]) == (
        "SETTLED", {"amount_minor": 1250, "currency": "EUR"}, "PaymentSettled")
    assert [(e["seq"], e["event_type"]) for e in view["timeline"]] == [(1, "PaymentInitiated"), (2, "PaymentSettled")]
    assert_problem(missing, 404, "payment-not-found")
    assert_problem(not_an_id, 404, "payment-not-found")


# -- tokens ------------------------------------------------------------------------------------------


def _bad_tokens(issuer: Issuer) -> dict[str, str]:
    now = int(time.time())
    return {
        "expired": issuer.token(exp=now - 120),
        "nbf in the future": issuer.token(nbf=now + 600),
        "wrong issuer": issuer.token(iss="https://evil.test"),
        "wrong audience": issuer.token(aud="another-api"),
        "alg none": unsigned(issuer.claims(), "k1"),
        "HS256 with the public key as secret": hs256(issuer.claims(), "k1", issuer.published[0]["n"]),
        "garbage": "a.b.c",
    }


@pytest.mark.parametrize("case", ["expired", "nbf in the future", "wrong issuer", "wrong audience", "alg none",
                                  "HS256 with the public key as secret", "garbage"])
def test_a_bad_token_is_401_with_a_bearer_challenge(intake: LiveIntake, case: str) -> None:
    token = _bad_tokens(intake.issuer)[case]
    with intake.client() as http:
        response = http.get(f"/v1/payments/{uuid.uuid4()}", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401, "invalid-token")
    assert response.headers["www-authenticate"].startswith('Bearer realm="payments", error="invalid_token"')


def test_no_token_is_401_and_a_missing_scope_403(intake: LiveIntake) -> None:
    with intake.client() as http:
        anonymous = http.get(f"/v1/payments/{uuid.uuid4()}")
        read_only = post(http, "/v1/payments", BODY, intake.auth(scope="payments:read"), "k")
        write_only = http.get(f"/v1/payments/{uuid.uuid4()}", headers=intake.auth(scp=["payments:write"], scope=None))
    assert_problem(anonymous, 401, "token-required")
    assert anonymous.headers["www-authenticate"] == 'Bearer realm="payments"'
    for response, scope in ((read_only, "payments:write"), (write_only, "payments:read")):
        assert_problem(response, 403, "insufficient-scope")
        assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
        assert f'scope="{scope}"' in response.headers["www-authenticate"]


def test_a_rotated_in_key_is_accepted_after_one_refetch(intake: LiveIntake) -> None:
    issuer = intake.issuer
    kid = issuer.add_rsa(publish=False)
    url = f"/v1/payments/{uuid.uuid4()}"
    with intake.client() as http:
        time.sleep(0.6)  # past the refetch interval of the test's config
        before = issuer.fetches
        unknown = http.get(url, headers={"Authorization": f"Bearer {issuer.token(kid)}"})
        assert_problem(unknown, 401, "invalid-token")
        assert issuer.fetches == before + 1  # looked for it once
        again = http.get(url, headers={"Authorization": f"Bearer {issuer.token(kid)}"})
        assert again.status_code == 401
        assert issuer.fetches == before + 1  # within the interval: no second fetch
        issuer.publish(kid)
        time.sleep(0.6)
        rotated = http.get(url, headers={"Authorization": f"Bearer {issuer.token(kid)}"})
    assert_problem(rotated, 404, "payment-not-found")  # authenticated: the payment just does not exist
    assert issuer.fetches == before + 2


# -- bad input ---------------------------------------------------------------------------------------


def test_bad_bodies_and_headers_are_problems_never_500(intake: LiveIntake) -> None:
    headers = {**intake.auth(), "Idempotency-Key": "bad-input"}
    json_headers = {**headers, "Content-Type": "application/json"}
    with intake.client() as http:
        assert_problem(http.post("/v1/payments", content=b'{"amount": ', headers=json_headers), 400, "malformed-json")
        assert_problem(http.post("/v1/payments", content=b"x" * 5000, headers=json_headers), 413, "body-too-large")
        assert_problem(http.post("/v1/payments", content=b"amount=1", headers={
            **headers, "Content-Type": "application/x-www-form-urlencoded"}), 415, "unsupported-media-type")
        for wrong in ({**BODY, "amount": {"amount_minor": "1250", "currency": "EUR"}},
                      {**BODY, "amount": {"amount_minor": 12.5, "currency": "EUR"}},
                      {**BODY, "amount": {"amount_minor": -5, "currency": "EUR"}},
                      {**BODY, "amount": {"amount_minor": 2**63, "currency": "EUR"}},
                      {**BODY, "amount": {"amount_minor": 5, "currency": "XXX"}},
                      {**BODY, "payer_account": "not an account!"},
                      {**BODY, "unexpected": 1}, [], "text"):
            body = assert_problem(http.post("/v1/payments", json=wrong, headers=headers), 422, "invalid-request")
            assert body["errors"], wrong
        assert_problem(http.post("/v1/payments", content=b"null", headers=json_headers), 422, "invalid-request")
        assert_problem(post(http, "/v1/payments", BODY, intake.auth(), None), 400, "idempotency-key-missing")
        assert_problem(post(http, "/v1/payments", BODY, intake.auth(), "has spaces"), 400, "idempotency-key-invalid")
        assert_problem(post(http, "/v1/payments", BODY, intake.auth(), "k" * 256), 400, "idempotency-key-invalid")
        assert_problem(http.get("/v1/nowhere", headers=headers), 404)
        assert http.get("/healthz").json() == {"status": "ok"}
        assert_problem(http.delete(f"/v1/payments/{uuid.uuid4()}", headers=headers), 405)


def test_a_streamed_body_over_the_limit_is_refused_without_being_read_whole(intake: LiveIntake) -> None:
    """No Content-Length (chunked): the bytes are counted as they come, and the answer comes at the limit."""
    host, port = intake.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(f"POST /v1/payments HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {intake.token()}\r\n"
                     "Idempotency-Key: stream\r\nContent-Type: application/json\r\n"
                     "Transfer-Encoding: chunked\r\n\r\n".encode())
        chunk = b"x" * 1024
        for _ in range(5):  # 5 KiB of a body that would go on forever
            conn.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        answer = conn.recv(4096).decode()
    assert answer.startswith("HTTP/1.1 413"), answer
    assert PROBLEM in answer


def test_a_client_over_its_rate_gets_429_with_retry_after(intake: LiveIntake) -> None:
    headers = intake.auth()
    with intake.client() as http:
        statuses = [http.get(f"/v1/payments/{uuid.uuid4()}", headers=headers) for _ in range(30)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, [r.status_code for r in statuses]
    assert_problem(limited[0], 429, "rate-limited")
    assert int(limited[0].headers["retry-after"]) >= 1
    with intake.client() as http:  # another client is not limited by this one
        assert http.get(f"/v1/payments/{uuid.uuid4()}", headers=intake.auth()).status_code == 404


def test_kafka_unreachable_is_503_and_frees_the_key(module_database: str, module_topics: Topics,
                                                     issuer: Issuer) -> None:
    jwks_url = issuer.serve()
    config = intake_config("127.0.0.1:9", module_database, module_topics, jwks_url, delivery_timeout_s=1.0)
    for down in serve(config, issuer):
        with down.client() as http:
            client = f"c-{uuid.uuid4().hex[:6]}"
            first = post(http, "/v1/payments", BODY, down.auth(client), "kafka-down")
            assert_problem(first, 503, "unavailable")
            assert first.headers["retry-after"] == "1"
            again = post(http, "/v1/payments", BODY, down.auth(client), "kafka-down")
            assert again.status_code == 503  # not 409: the failed attempt did not keep the key
