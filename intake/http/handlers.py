"""Errors as RFC 9457 problems: ours (`Problem`, auth, unavailable dependencies) and FastAPI's own."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from intake.http.auth import AuthError, IssuerUnavailable
from intake.http.database import StoreUnavailable
from intake.http.problems import PROBLEM_JSON, Problem
from intake.http.producer import KafkaUnavailable

log = structlog.get_logger(__name__)
UNAVAILABLE_RETRY_S = "1"


def problem_response(problem: Problem) -> Response:
    return Response(problem.render(), status_code=problem.status, media_type=PROBLEM_JSON, headers=problem.headers)


def _validation_problem(error: RequestValidationError) -> Problem:
    items = list(error.errors())
    if any(item.get("type") == "json_invalid" for item in items):
        return Problem(400, "malformed-json", "the body is not valid JSON")
    for item in items:
        location = [str(part).lower() for part in item.get("loc", ())]
        if location[:2] == ["header", "idempotency-key"]:
            missing = item.get("type") == "missing"
            return Problem(400, "idempotency-key-missing" if missing else "idempotency-key-invalid",
                           "an Idempotency-Key header is required" if missing
                           else "the Idempotency-Key must be 1 to 255 visible ASCII characters")
        if location[:1] == ["path"]:
            return Problem(404, "payment-not-found", "a payment id is a UUID")
    errors = [{"loc": [str(part) for part in item.get("loc", ())], "msg": str(item.get("msg")),
               "type": str(item.get("type"))} for item in items]
    return Problem(422, "invalid-request", "the request is not valid: see errors", errors=errors)


def install_error_handlers(app: FastAPI) -> None:
    async def on_problem(_request: Request, error: Exception) -> Response:
        assert isinstance(error, Problem)
        return problem_response(error)

    async def on_auth(_request: Request, error: Exception) -> Response:
        assert isinstance(error, AuthError)
        kind = {"invalid_token": "invalid-token", "insufficient_scope": "insufficient-scope"}.get(
            error.error or "", "token-required")
        return problem_response(Problem(error.status, kind, error.description,
                                        headers={"WWW-Authenticate": error.www_authenticate()}))

    async def on_validation(_request: Request, error: Exception) -> Response:
        assert isinstance(error, RequestValidationError)
        return problem_response(_validation_problem(error))

    async def on_http(_request: Request, error: Exception) -> Response:
        assert isinstance(error, StarletteHTTPException)
        detail = {404: "no such resource", 405: "this resource does not take that method"}.get(
            error.status_code, str(error.detail))
        return problem_response(Problem(error.status_code, None, detail, headers=error.headers))

    async def on_unavailable(_request: Request, error: Exception) -> Response:
        what = {StoreUnavailable: "PostgreSQL", KafkaUnavailable: "Kafka", IssuerUnavailable: "the token issuer"}
        name = next((label for kind, label in what.items() if isinstance(error, kind)), "a dependency")
        log.warning("dependency_unavailable", dependency=name, error=str(error))
        return problem_response(Problem(503, "unavailable", f"{name} is unavailable; nothing was done: retry",
                                        headers={"Retry-After": UNAVAILABLE_RETRY_S}))

    async def on_bug(_request: Request, error: Exception) -> Response:
        log.error("request_failed", error=repr(error), exc_info=error)
        return problem_response(Problem(500, None, "the request failed on our side"))

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(AuthError, on_auth)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    for unavailable in (StoreUnavailable, KafkaUnavailable, IssuerUnavailable):
        app.add_exception_handler(unavailable, on_unavailable)
    app.add_exception_handler(Exception, on_bug)
