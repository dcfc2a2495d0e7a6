"""The FastAPI application of the HTTP intake: its lifespan, middleware, routes, error handlers, OpenAPI.

What a request meets, in order (the first that fails answers):
  1. the body limit (`body_bytes_max`: a larger Content-Length, or more bytes than it, is 413 before the
     body is read whole);
  2. routing (404 problem for an unknown path, 405 for another method);
  3. authentication (401, `WWW-Authenticate: Bearer ...`), the route's scope (403), the client's rate (429);
  4. for a POST, `Content-Type: application/json` (415), then JSON (400), a path id that is no UUID (404),
     the Idempotency-Key header (400), the body's shape (422);
  5. the idempotency store (a replayed answer, 422 for a key reused with another request, 409 while the
     first request under the key is still being made), then Kafka (202 once the command is acknowledged).
PostgreSQL, Kafka or the issuer's JWKS unavailable: 503 with Retry-After. Anything else is a bug: 500.
"""


from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from intake.http.config import HttpIntakeConfig
from intake.http.database import StoreUnavailable
from intake.http.handlers import install_error_handlers
from intake.http.idempotency import IdempotencyStore
from intake.http.middleware import BodyLimit
from intake.http.problems import ProblemBody
from intake.http.routes import reads, writes
from intake.http.services import Services
from payments.contracts.codec import Serde

EXPIRE_EVERY_S = 60.0  # how often keys past their window are deleted
API_VERSION = "1.0.0"
log = structlog.get_logger(__name__)

DESCRIPTION = """Commands to the payment saga over HTTPS, for upstream systems that cannot produce to Kafka
(docs/http-intake.md). Every error is an RFC 9457 problem (`application/problem+json`)."""


def create_app(config: HttpIntakeConfig, serde: Serde,
               services: Callable[[], Awaitable[Services]] | None = None) -> FastAPI:
    """The application; its lifespan makes the Services (`services`, else from `config`) and closes them."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        made = await (services() if services is not None else Services.start(config, serde))
        app.state.services = made
        expiry = asyncio.create_task(_expire_forever(made.store))
        try:
            yield
        finally:
            expiry.cancel()
            for close in made.closers:
                await close()

    app = FastAPI(title="Payments HTTP intake", version=API_VERSION, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.include_router(writes)
    app.include_router(reads)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """Liveness for probes (no token): the event loop answers. Kafka or PostgreSQL down shows as 503s."""
        return {"status": "ok"}
    install_error_handlers(app)
    app.add_middleware(BodyLimit, bytes_max=config.body_bytes_max)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, description=app.description,
                                   routes=app.routes)
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            # FastAPI's own 422 (HTTPValidationError) where a route declares none: never sent (problems are).
            for operations in document["paths"].values():
                for operation in operations.values():
                    if "HTTPValidationError" in json.dumps(operation["responses"].get("422", {})):
                        del operation["responses"]["422"]
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            schemas["ProblemBody"] = ProblemBody.model_json_schema(ref_template="#/components/schemas/{model}")
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _expire_forever(store: IdempotencyStore) -> None:
    while True:
        await asyncio.sleep(EXPIRE_EVERY_S)
        try:
            forgotten = await store.expire()
        except StoreUnavailable:
            continue
        if forgotten:
            log.info("idempotency_keys_expired", keys=forgotten)
