"""uvicorn serving the HTTP intake: `payments run http-intake` (ops.http_intake) and the tests use it."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import structlog
import uvicorn

from intake.http.app import create_app
from intake.http.config import HttpIntakeConfig
from intake.http.services import Services
from payments.contracts.codec import Serde

log = structlog.get_logger(__name__)
GRACEFUL_SHUTDOWN_S = 10  # requests in flight may finish (each waits at most for Kafka's delivery timeout)
KEEP_ALIVE_S = 5
CONCURRENCY_MAX = 1_000  # connections and tasks at once; past it, 503


class Server(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:  # what `ops.supervisor` waits for: the socket is bound and the app started
            log.info("http_intake_listening", host=self.config.host, port=self.config.port)


def build_server(config: HttpIntakeConfig, serde: Serde,
                 services: Callable[[], Awaitable[Services]] | None = None) -> Server:
    """A server of the application (not started: `run()` serves until SIGTERM or `should_exit`)."""
    app = create_app(config, serde, services)
    return Server(uvicorn.Config(app, host=config.host, port=config.port, lifespan="on", log_config=None,
                                 access_log=False, server_header=False, limit_concurrency=CONCURRENCY_MAX,
                                 timeout_keep_alive=KEEP_ALIVE_S, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S))
