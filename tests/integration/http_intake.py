"""The HTTP intake served by uvicorn in a thread of the test process, on real Kafka and PostgreSQL, trusting a
local issuer (tests/oauth.py): shared by the HTTP intake's integration and schema tests."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace

import httpx

from intake.http.config import HttpIntakeConfig, OAuthConfig, RateConfig
from intake.http.server import Server, build_server
from ops.supervisor import free_port
from payments.contracts.codec import SingleObjectSerde
from payments.runtime.connection import KafkaConnection
from payments.runtime.topics import Topics
from tests.oauth import Issuer
from tests.support import wait_for


@dataclass
class LiveIntake:
    url: str
    config: HttpIntakeConfig
    issuer: Issuer

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)

    def token(self, client: str | None = None, **claims: object) -> str:
        return self.issuer.token(sub=client or f"client-{uuid.uuid4().hex[:8]}", **claims)

    def auth(self, client: str | None = None, **claims: object) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(client, **claims)}"}


def intake_config(bootstrap: str, database_url: str, topics: Topics, jwks_url: str,
                  **overrides: object) -> HttpIntakeConfig:
    config = HttpIntakeConfig(
        kafka=KafkaConnection(bootstrap), database_url=database_url, topics=topics,
        oauth=OAuthConfig(issuer="https://issuer.test", jwks_url=jwks_url, jwks_refetch_min_s=0.5),
        rate=RateConfig(per_s=5.0, burst=20), port=free_port(), body_bytes_max=4096)
    return replace(config, **overrides)  # type: ignore[arg-type]


def serve(config: HttpIntakeConfig, issuer: Issuer) -> Iterator[LiveIntake]:
    server: Server = build_server(config, SingleObjectSerde())
    thread = threading.Thread(target=server.run, name="http-intake", daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), 30, "the HTTP intake to listen")
    assert server.started, "the HTTP intake did not start"
    try:
        yield LiveIntake(f"http://127.0.0.1:{config.port}", config, issuer)
    finally:
        server.should_exit = True
        thread.join(30)
