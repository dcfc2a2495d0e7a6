"""What the HTTP intake is given: built from the settings by the composition root (ops.http_intake)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from intake.errors import IntakeConfigError
from payments.runtime.connection import KafkaConnection
from payments.runtime.topics import Topics

FORBIDDEN_ALGORITHMS = frozenset({"none"})  # and every HMAC algorithm (HS*): see OAuthConfig


@dataclass(frozen=True)
class OAuthConfig:
    issuer: str
    jwks_url: str
    audience: str = "payments-api"
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    leeway_s: int = 30
    jwks_refetch_min_s: float = 10.0  # an unknown `kid` fetches the JWKS again, at most this often
    # Keys held longer than this are fetched again at the next request, so a key the issuer withdrew (a
    # rotation's end, a compromise) stops verifying within this long. An unreachable issuer keeps the keys.
    jwks_max_age_s: float = 300.0
    jwks_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.issuer:
            raise IntakeConfigError("PAYMENTS_OAUTH_ISSUER must be set: tokens of which issuer are accepted?")
        if not self.jwks_url.startswith(("http://", "https://")):
            raise IntakeConfigError(f"PAYMENTS_OAUTH_JWKS_URL must be an http(s) URL, got {self.jwks_url!r}")
        refused = [a for a in self.algorithms if a.lower() in FORBIDDEN_ALGORITHMS or a.upper().startswith("HS")]
        if refused or not self.algorithms:
            # A shared-secret algorithm would let anyone holding the public JWKS mint tokens (key confusion).
            raise IntakeConfigError(f"PAYMENTS_OAUTH_ALGORITHMS: {refused or 'empty'} cannot be accepted; "
                                    "use asymmetric algorithms such as RS256, ES256")
        if self.leeway_s < 0:
            raise IntakeConfigError(f"PAYMENTS_OAUTH_LEEWAY_S must be >= 0, got {self.leeway_s}")


@dataclass(frozen=True)
class RateConfig:
    per_s: float = 50.0
    burst: int = 100
    clients_max: int = 100_000  # buckets kept in memory; full (idle) buckets are dropped first

    def __post_init__(self) -> None:
        if self.per_s <= 0 or self.burst < 1:
            raise IntakeConfigError(f"rate limit: need rate > 0 and burst >= 1, got {self.per_s}/s, {self.burst}")


@dataclass(frozen=True)
class HttpIntakeConfig:
    kafka: KafkaConnection
    database_url: str
    topics: Topics
    oauth: OAuthConfig
    rate: RateConfig = field(default_factory=RateConfig)
    host: str = "127.0.0.1"
    port: int = 18680
    body_bytes_max: int = 64 * 1024
    idempotency_window: timedelta = timedelta(hours=24)
    in_progress_lease: timedelta = timedelta(seconds=30)  # a claim older than this was abandoned (a crash)
    delivery_timeout_s: float = 10.0  # Kafka's acknowledgement of one command; after it, 503
    db_pool_max: int = 10
    db_timeout_s: float = 5.0  # getting a connection, and each statement
    instance_id: str = "0"

    def __post_init__(self) -> None:
        if self.body_bytes_max < 1:
            raise IntakeConfigError(f"PAYMENTS_HTTP_BODY_BYTES_MAX must be positive, got {self.body_bytes_max}")
        if self.idempotency_window <= timedelta(0):
            raise IntakeConfigError(f"the idempotency window must be positive, got {self.idempotency_window}")
