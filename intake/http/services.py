"""What the routes use: the authenticator, the rate limiter, the idempotency store, the producer, the pool."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx
import structlog
from fastapi import Request
from psycopg_pool import AsyncConnectionPool

from intake.http.auth import Authenticator, IssuerUnavailable, KeySet, http_fetcher
from intake.http.config import HttpIntakeConfig
from intake.http.database import make_pool
from intake.http.idempotency import IdempotencyStore
from intake.http.producer import CommandProducer
from intake.http.ratelimit import RateLimiter
from payments.contracts.codec import Serde

log = structlog.get_logger(__name__)

@dataclass
class Services:
    """What the routes use; made by the lifespan (or a test) and closed with the application."""

    auth: Authenticator
    limiter: RateLimiter
    store: IdempotencyStore
    producer: CommandProducer
    pool: AsyncConnectionPool
    clock: Callable[[], float] = time.monotonic
    closers: tuple[Callable[[], Awaitable[None]], ...] = ()

    @classmethod
    async def start(cls, config: HttpIntakeConfig, serde: Serde) -> Services:
        pool = make_pool(config.database_url, size_max=config.db_pool_max, timeout_s=config.db_timeout_s)
        await pool.open(wait=False)  # the database down at start: 503s until it is back
        http = httpx.AsyncClient()
        keys = KeySet(config.oauth, http_fetcher(config.oauth, http))
        try:
            await keys.refresh()
        except IssuerUnavailable as error:
            log.warning("jwks_unavailable", error=str(error))  # fetched again for the first token
        producer = CommandProducer(config.kafka, config.topics.commands, serde,
                                   delivery_timeout_s=config.delivery_timeout_s,
                                   client_id=f"http-intake-{config.instance_id}")

        async def close() -> None:
            await asyncio.to_thread(producer.close)
            await http.aclose()
            await pool.close()

        return cls(Authenticator(config.oauth, keys), RateLimiter(config.rate),
                   IdempotencyStore(pool, config.idempotency_window, config.in_progress_lease), producer, pool,
                   closers=(close,))


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services
