"""The routes: what each request must carry (token, scope, rate, JSON), the commands they send, the read."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import structlog
from fastapi import Depends, Header, Path, Request, Response
from fastapi.routing import APIRoute, APIRouter
from fastapi.security import HTTPBearer

from intake.http.auth import Principal, require_scope
from intake.http.database import StoreUnavailable
from intake.http.idempotency import Verdict, derived_id, fingerprint
from intake.http.models import (
    IDEMPOTENCY_KEY_PATTERN,
    Accepted,
    Body,
    CancelPaymentRequest,
    InitiatePaymentRequest,
    PaymentView,
    RefundPaymentRequest,
)
from intake.http.problems import PROBLEM_JSON, TITLES, Problem
from intake.http.ratelimit import retry_after_header
from intake.http.services import services_of
from intake.http.status import read_payment
from payments.contracts.base import Command
from payments.contracts.commands import CancelPayment, InitiatePayment, RefundPayment
from payments.money import Money
from payments.runtime import tracing

log = structlog.get_logger(__name__)
WRITE, READ = "payments:write", "payments:read"

# -- steps 3 and 4 of intake.http.app: authentication, scope, rate, content type ---------------------


class GuardedRoute(APIRoute):
    """A route whose requests must carry a token with `scope`, within the client's rate; a POST also JSON."""

    scope: str = READ

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        scope = self.scope

        async def guarded(request: Request) -> Response:
            services = services_of(request)
            principal = await services.auth.authenticate(request.headers.get("authorization"))
            require_scope(principal, scope)
            wait_s = services.limiter.take(principal.client, services.clock())
            if wait_s > 0:
                raise Problem(429, "rate-limited", f"client {principal.client!r} is over its request rate",
                              headers={"Retry-After": retry_after_header(wait_s)})
            if request.method == "POST":
                media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
                if media_type != "application/json" and not media_type.endswith("+json"):
                    raise Problem(415, "unsupported-media-type", "the body must be application/json")
            request.state.principal = principal
            return await handler(request)

        return guarded


class WriteRoute(GuardedRoute):
    scope = WRITE


# -- the OpenAPI description of what can go wrong ---------------------------------------------------

_HEADER_DOCS = {
    "Retry-After": {"description": "seconds to wait before asking again", "schema": {"type": "integer"}},
    "WWW-Authenticate": {"description": "the bearer challenge (RFC 6750)", "schema": {"type": "string"}},
}
_PROBLEM_HEADERS = {401: "WWW-Authenticate", 403: "WWW-Authenticate", 409: "Retry-After", 429: "Retry-After",
                    503: "Retry-After"}
_PROBLEM_DESCRIPTIONS = {
    400: "malformed JSON, or a missing or malformed Idempotency-Key header",
    401: "no bearer token, or one that is not valid",
    403: "the token lacks the scope this needs",
    404: "no such payment",
    409: "the first request under this Idempotency-Key is still being made: retry after Retry-After",
    413: "the body is larger than the service accepts",
    415: "the body is not application/json",
    422: "the request is not valid, or its Idempotency-Key was used for another request",
    429: "this client is over its request rate: retry after Retry-After",
    503: "Kafka, PostgreSQL or the token issuer is unavailable: retry after Retry-After",
}


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    responses: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {
            "description": _PROBLEM_DESCRIPTIONS[code],
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/ProblemBody"}}}}
        if code in _PROBLEM_HEADERS:
            name = _PROBLEM_HEADERS[code]
            entry["headers"] = {name: _HEADER_DOCS[name]}
        responses[code] = entry
    return responses


ACCEPTED_RESPONSE: dict[int | str, dict[str, Any]] = {202: {
    "description": "accepted: Kafka holds the command (a replay under the same Idempotency-Key answers the same)",
    "headers": {"Location": {"description": "the payment: GET it to follow its saga", "schema": {"type": "string"}},
                "Idempotent-Replayed": {"description": "`true` when this is the stored answer to an earlier request",
                                        "schema": {"type": "string"}}}}}
WRITE_PROBLEMS = problem_responses(400, 401, 403, 404, 409, 413, 415, 422, 429, 503)
READ_PROBLEMS = problem_responses(401, 403, 404, 429, 503)

IdempotencyKey = Annotated[str, Header(
    alias="Idempotency-Key", pattern=IDEMPOTENCY_KEY_PATTERN,
    description="1 to 255 visible ASCII characters, new for each request and the same for its retries: a retry "
                "gets the first request's answer (docs/contracts.md §2a). Scoped to the client of the token.")]
PaymentId = Annotated[UUID, Path(description="the payment's id")]
bearer = HTTPBearer(bearerFormat="JWT", auto_error=False,
                    description=f"an OAuth2 access token (JWT) of the configured issuer; {WRITE} to send commands, "
                                f"{READ} to read payments")


# -- step 5: the routes -----------------------------------------------------------------------------

writes = APIRouter(route_class=WriteRoute, dependencies=[Depends(bearer)], tags=["commands"])
reads = APIRouter(route_class=GuardedRoute, dependencies=[Depends(bearer)], tags=["payments"])


def source_of(principal: Principal) -> str:
    """The command's `ce_source`: the idempotency scope of docs/contracts.md §2a is (source, key)."""
    return f"http:{principal.client}"


def accepted_response(status: int, body: dict[str, Any], *, replayed: bool) -> Response:
    """The answer to a command, byte for byte the same when replayed (keys sorted: jsonb keeps no order)."""
    headers = {"Location": f"/v1/payments/{body['payment_id']}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    content = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    return Response(content, status_code=status, headers=headers, media_type="application/json")


async def idempotent(request: Request, key: str, operation: str, payment_id: str, body: Body, *,
                     build: Callable[[str], Command], refund_id: str | None = None) -> Response:
    """Make the request under `key` once (module docstring, step 5); `build(command_id)` makes its command."""
    services, principal = services_of(request), request.state.principal
    request_hash = fingerprint(operation, payment_id, body)
    outcome = await services.store.begin(principal.client, key, request_hash, operation, payment_id)
    if outcome.verdict is Verdict.REPLAY:
        assert outcome.status is not None and outcome.body is not None
        return accepted_response(outcome.status, outcome.body, replayed=True)
    if outcome.verdict is Verdict.MISMATCH:
        raise Problem(422, "idempotency-key-reused",
                      "this Idempotency-Key was used for another request: use a new key for a new request")
    if outcome.verdict is Verdict.IN_PROGRESS:
        raise Problem(409, "request-in-progress", "the first request under this Idempotency-Key is still being made",
                      headers={"Retry-After": "1"})
    command = build(derived_id(principal.client, key, "command"))
    try:
        await services.producer.send(command, source=source_of(principal),
                                     traceparent=_traceparent(request, services.producer.topic, command))
    except BaseException:
        with contextlib.suppress(StoreUnavailable):  # else the claim's lease runs out and a retry takes it over
            await services.store.abandon(principal.client, key, request_hash)
        raise
    answer = Accepted(payment_id=payment_id, command_id=command.command_id, refund_id=refund_id)
    stored = answer.model_dump(mode="json", exclude_none=True)
    try:
        await services.store.complete(principal.client, key, request_hash, 202, stored)
    except StoreUnavailable as error:
        # Kafka holds the command: it is accepted. A retry waits out the lease, then re-sends the same command.
        log.warning("idempotency_answer_not_stored", client=principal.client, error=str(error))
    return accepted_response(202, stored, replayed=False)


def _traceparent(request: Request, topic: str, command: Command) -> str | None:
    """The command's `traceparent`: a PRODUCER span under the caller's W3C trace context (when tracing is on),
    else the caller's context as it came; a malformed one is dropped."""
    incoming = request.headers.get("traceparent")
    if tracing.context_of(incoming) is None:
        incoming = None
    if not tracing.enabled():
        return incoming
    with tracing.under(incoming):
        return tracing.sent(topic, command.payment_id, command.command_id, command.payment_id)


def _now() -> datetime:
    return datetime.now(UTC)


@writes.post("/v1/payments", status_code=202, response_model=Accepted, summary="Initiate a payment",
             responses={**ACCEPTED_RESPONSE, **WRITE_PROBLEMS})
async def initiate_payment(body: InitiatePaymentRequest, request: Request, idempotency_key: IdempotencyKey) -> Response:
    """Sends `InitiatePayment`. The payment's id is derived from the client and the Idempotency-Key."""
    payment_id = derived_id(request.state.principal.client, idempotency_key, "payment")

    def build(command_id: str) -> Command:
        return InitiatePayment(
            payment_id=payment_id, command_id=command_id, idempotency_key=idempotency_key,
            payer_account=body.payer_account, payee_account=body.payee_account,
            amount=Money(amount_minor=body.amount.amount_minor, currency=body.amount.currency),
            partner=body.partner, reference=body.reference, requested_at=_now(), metadata=dict(body.metadata))

    return await idempotent(request, idempotency_key, "initiate", payment_id, body, build=build)


@writes.post("/v1/payments/{payment_id}/cancel", status_code=202, response_model=Accepted, summary="Cancel a payment",
             responses={**ACCEPTED_RESPONSE, **WRITE_PROBLEMS})
async def cancel_payment(payment_id: PaymentId, body: CancelPaymentRequest, request: Request,
                         idempotency_key: IdempotencyKey) -> Response:
    """Sends `CancelPayment`: the saga cancels the payment if it is not past the point of no return."""
    def build(command_id: str) -> Command:
        return CancelPayment(payment_id=str(payment_id), command_id=command_id, idempotency_key=idempotency_key,
                             reason=body.reason)

    return await idempotent(request, idempotency_key, "cancel", str(payment_id), body, build=build)


@writes.post("/v1/payments/{payment_id}/refunds", status_code=202, response_model=Accepted, summary="Refund a payment",
             responses={**ACCEPTED_RESPONSE, **WRITE_PROBLEMS})
async def refund_payment(payment_id: PaymentId, body: RefundPaymentRequest, request: Request,
                         idempotency_key: IdempotencyKey) -> Response:
    """Sends `RefundPayment` for a settled payment; `refund_id` is derived from the Idempotency-Key when absent."""
    refund_id = str(body.refund_id) if body.refund_id else derived_id(
        request.state.principal.client, idempotency_key, "refund")

    def build(command_id: str) -> Command:
        return RefundPayment(payment_id=str(payment_id), command_id=command_id, idempotency_key=idempotency_key,
                             refund_id=refund_id,
                             amount=Money(amount_minor=body.amount.amount_minor, currency=body.amount.currency),
                             reason=body.reason)

    return await idempotent(request, idempotency_key, "refund", str(payment_id), body, build=build,
                            refund_id=refund_id)


@reads.get("/v1/payments/{payment_id}", response_model=PaymentView, summary="Read a payment",
           responses=READ_PROBLEMS)
async def get_payment(payment_id: PaymentId, request: Request) -> PaymentView:
    """The payment as the payment-status read model holds it, with its timeline of saga events."""
    services = services_of(request)
    view = await read_payment(services.pool, str(payment_id))
    if view is not None:
        return view
    if await services.store.accepted(str(payment_id)):
        return PaymentView(payment_id=str(payment_id), status="ACCEPTED")
    raise Problem(404, "payment-not-found", f"no payment {payment_id}")




assert set(_PROBLEM_DESCRIPTIONS) <= set(TITLES)
