"""Every setting of every process, read once from the environment at the entry point and passed down.

Nothing below the entry point reads the environment: the kernel and the apps take typed config
objects (`ProcessorConfig`, `SagaConfig`, `SimulatorConfig`, ...) built here. `docs/operations.md`
lists every variable; `tests/unit/ops/test_settings.py` checks that the list and this class agree.

Defaults point at the local stack (`payments stack up`): Kafka on 127.0.0.1:`PAYMENTS_KAFKA_PORT`,
PostgreSQL on 127.0.0.1:`PAYMENTS_POSTGRES_PORT`. `KAFKA_BOOTSTRAP_SERVERS` and `DATABASE_URL`
point everything at other servers instead.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumers.partner.breaker import BreakerConfig
from consumers.partner.caller import CallerConfig
from consumers.partner.simulator import SimulatorConfig, parse_latency
from intake.gate import GateConfig
from intake.idempotency import IdempotencyConfig
from ops.errors import ConfigError
from orchestrator.config import SagaConfig
from payments.contracts.codec import Serde, serde_for
from payments.runtime.config import ProcessorConfig
from payments.runtime.connection import KafkaConnection, KafkaSecurity, SaslMechanism, SecurityProtocol
from payments.runtime.topics import Topics
from projections.runner import RunnerConfig

LOCAL_DATABASE = "payments"
Rate = Annotated[float, Field(ge=0.0, le=1.0)]
Port = Annotated[int, Field(gt=0, lt=65536)]
Positive = Annotated[int, Field(gt=0)]


def _hostname() -> str:
    return socket.gethostname()


class Settings(BaseSettings):
    """The process's configuration. Field `x` is read from `PAYMENTS_X` unless an alias says otherwise."""

    model_config = SettingsConfigDict(env_prefix="PAYMENTS_", frozen=True, extra="ignore", populate_by_name=True)

    # -- where the servers are ------------------------------------------------------------------
    kafka_bootstrap_servers: str | None = Field(None, validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    # -- how to reach a secured Kafka (payments.runtime.connection): every client, CLI included --------
    kafka_security_protocol: SecurityProtocol = Field("PLAINTEXT", validation_alias="KAFKA_SECURITY_PROTOCOL")
    kafka_sasl_mechanism: SaslMechanism = Field("SCRAM-SHA-512", validation_alias="KAFKA_SASL_MECHANISM")
    kafka_sasl_username: str | None = Field(None, validation_alias="KAFKA_SASL_USERNAME")
    kafka_sasl_password: SecretStr | None = Field(None, validation_alias="KAFKA_SASL_PASSWORD")
    kafka_ssl_ca_location: str | None = Field(None, validation_alias="KAFKA_SSL_CA_LOCATION")
    kafka_ssl_certificate_location: str | None = Field(None, validation_alias="KAFKA_SSL_CERTIFICATE_LOCATION")
    kafka_ssl_key_location: str | None = Field(None, validation_alias="KAFKA_SSL_KEY_LOCATION")
    kafka_ssl_key_password: SecretStr | None = Field(None, validation_alias="KAFKA_SSL_KEY_PASSWORD")
    kafka_ssl_endpoint_identification: Literal["https", "none"] = Field(
        "https", validation_alias="KAFKA_SSL_ENDPOINT_IDENTIFICATION")
    database_url: str | None = Field(None, validation_alias="DATABASE_URL")
    schema_registry_url: str | None = Field(None, validation_alias="SCHEMA_REGISTRY_URL")
    # -- identity and topics ----------------------------------------------------------------------
    # Must be unique per live instance of a service (it names the transactional id); a pod's hostname is.
    instance_id: str = Field(default_factory=_hostname, min_length=1)
    topic_prefix: str = ""
    partitions: Positive = 6
    schemas_dir: Path | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # -- the exactly-once loops -------------------------------------------------------------------
    health_port: Annotated[int, Field(ge=0, lt=65536)] = 0  # /healthz, /readyz and /metrics; 0: not served
    traces_exporter: Literal["none", "console", "otlp"] = "none"  # where spans go (payments.telemetry)
    traces_sample_ratio: Rate = 1.0  # share of the traces that start in this process that are kept
    stuck_after_s: Positive = 300  # a payment not terminal and unchanged this long counts as stuck (a metric)
    batch_max: Positive = 500
    batch_budget_ms: Positive = 4_000
    batch_wait_ms: Positive = 25
    projection_batch_max: Positive = 1_000
    # -- the saga and its participants ------------------------------------------------------------
    saga_time_scale: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    partners: str = "simbank"  # comma-separated: the partner names an InitiatePayment may carry
    idempotency_window_s: Positive = 86_400
    refund_window_s: Positive = 90 * 86_400
    retention_s: Positive = 7 * 86_400
    clock_skew_s: Positive = 300
    claim_retry_ms: Positive = 10_000
    risk_model_file: Path | None = None  # the v1 logistic regression's file (default: the packaged one)
    risk_rules_file: Path | None = None  # limits and block lists, applied before any model (default: packaged)
    risk_models_dir: Path | None = None  # trained artifacts, <version>.json + <version>.onnx (docs/risk.md)
    # Until an operator records a change on risk.models (`payments risk promote`), these score:
    risk_model: Annotated[str, Field(min_length=1)] = "risk-model-v1"
    risk_candidate: str | None = None  # a model scoring in shadow beside it
    funds_seed_file: Path | None = None
    partner_decline_rate: Rate = 0.1
    partner_error_rate: Rate = 0.0
    partner_timeout_rate: Rate = 0.05
    partner_throttle_rate: Rate = 0.0  # share of the simulator's transfer requests answered 429 (Retry-After: 1)
    partner_latency_ms: str = "20"  # "median" or "median,p99"
    partner_seed: int = 7
    partner_data_dir: Path | None = None
    partner_sim_port: Port = 18650  # where `payments run partner-sim` listens: every partner's default endpoint
    partner_endpoints: str = ""  # "name=https://...,name=..." overrides the simulator for the partners named
    partner_max_in_flight: Positive = 512  # at least a batch (PAYMENTS_BATCH_MAX) of submissions at once
    partner_timeout_ms: Positive = 10_000
    partner_breaker_open_ms: Positive = 2_000
    # Local state stores (payments.runtime.store): one RocksDB folder per owned changelog partition.
    state_dir: Path | None = None
    # -- the HTTP intake (intake.http): OAuth2 bearer JWTs, verified against the issuer's JWKS ---------
    http_host: str = "127.0.0.1"  # a container sets 0.0.0.0
    http_port: Port = 18680
    http_body_bytes_max: Positive = 64 * 1024  # a larger request body is refused with 413
    http_rate_per_s: Annotated[float, Field(gt=0.0)] = 50.0  # per client (the token's subject): the refill
    http_rate_burst: Positive = 100  # and the bucket
    oauth_issuer: str | None = None  # the `iss` every token must carry; the HTTP intake refuses to start without
    oauth_audience: str = "payments-api"  # the `aud` every token must carry
    oauth_jwks_url: str | None = None  # the issuer's JWKS; fetched again when a token names an unknown key
    oauth_algorithms: str = "RS256,ES256"  # comma-separated allow-list; "none" and HMAC are never accepted
    oauth_leeway_s: Annotated[int, Field(ge=0, le=300)] = 30  # clock skew allowed on exp and nbf
    # -- the local stack ----------------------------------------------------------------------------
    stack_dir: Path | None = None
    kafka_port: Port = 19092
    postgres_port: Port = 15432
    cache_dir: Path | None = None
    xdg_cache_home: Path | None = Field(None, validation_alias="XDG_CACHE_HOME")  # the XDG base directory

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read the settings (from `environ` instead of the process environment when given).

        Raises ConfigError naming the variable and the problem, never a pydantic traceback.
        """
        try:
            if environ is None:
                return cls()
            values = {name: environ[env] for name, env in env_names().items() if env in environ}
            return cls.model_validate(values)
        except ValidationError as error:
            raise ConfigError(describe(error)) from None

    # -- derived values -----------------------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap_servers or f"127.0.0.1:{self.kafka_port}"

    @property
    def kafka(self) -> KafkaConnection:
        """The bootstrap servers with their security: what every Kafka client of the process is built from."""
        def secret(value: SecretStr | None) -> str | None:
            return value.get_secret_value() if value is not None else None
        try:
            security = KafkaSecurity(
                protocol=self.kafka_security_protocol, sasl_mechanism=self.kafka_sasl_mechanism,
                sasl_username=self.kafka_sasl_username, sasl_password=secret(self.kafka_sasl_password),
                ssl_ca_location=self.kafka_ssl_ca_location,
                ssl_certificate_location=self.kafka_ssl_certificate_location,
                ssl_key_location=self.kafka_ssl_key_location, ssl_key_password=secret(self.kafka_ssl_key_password),
                ssl_endpoint_identification=self.kafka_ssl_endpoint_identification)
        except ValueError as error:
            raise ConfigError(f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}: {error}") from None
        return KafkaConnection(self.bootstrap_servers, security)

    @property
    def database(self) -> str:
        return self.database_url or f"postgresql://postgres@127.0.0.1:{self.postgres_port}/{LOCAL_DATABASE}"

    @property
    def stack_home(self) -> Path:
        """Data directories of the local stack (gitignored `.stack/` in the working directory by default)."""
        return (self.stack_dir or Path.cwd() / ".stack").resolve()

    @property
    def state_home(self) -> Path:
        """Where the services keep their local state stores (`<stack dir>/state` by default)."""
        return (self.state_dir or self.stack_home / "state").resolve()

    @property
    def jar_cache(self) -> Path:
        """Downloaded Kafka jars: outside git, shared by every clone on the machine."""
        if self.cache_dir is not None:
            return self.cache_dir
        # The XDG spec: a relative XDG_CACHE_HOME is invalid and ignored.
        xdg = self.xdg_cache_home if self.xdg_cache_home and self.xdg_cache_home.is_absolute() else None
        return (xdg or Path.home() / ".cache") / "payments-orchestrator"

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    def serde(self) -> Serde:
        return serde_for(self.schema_registry_url, schemas_dir=self.schemas_dir)

    def processor(self) -> ProcessorConfig:
        return ProcessorConfig(batch_records_max=self.batch_max, batch_time_budget_ms=self.batch_budget_ms,
                               poll_timeout_ms=self.batch_wait_ms)

    def runner(self) -> RunnerConfig:
        return RunnerConfig(batch_records_max=self.projection_batch_max, poll_timeout_ms=self.batch_wait_ms)

    def saga(self) -> SagaConfig:
        return SagaConfig(time_scale=self.saga_time_scale, partners=self.partner_names(),
                          refund_window=self.refund_window, retention=self.retention,
                          clock_skew=timedelta(seconds=self.clock_skew_s))

    @property
    def refund_window(self) -> timedelta:
        return timedelta(seconds=self.refund_window_s)

    @property
    def retention(self) -> timedelta:
        return timedelta(seconds=self.retention_s)

    def idempotency(self) -> IdempotencyConfig:
        return IdempotencyConfig(window=timedelta(seconds=self.idempotency_window_s))

    def gate(self) -> GateConfig:
        return GateConfig(claim_retry=timedelta(milliseconds=self.claim_retry_ms))

    def partner_names(self) -> frozenset[str]:
        names = frozenset(name.strip() for name in self.partners.split(",") if name.strip())
        if not names:
            raise ConfigError(f"PAYMENTS_PARTNERS={self.partners!r}: name at least one partner")
        return names

    def caller(self) -> CallerConfig:
        """The partner gateway's HTTP calls: an endpoint for every partner in PAYMENTS_PARTNERS."""
        endpoints = dict.fromkeys(self.partner_names(), f"http://127.0.0.1:{self.partner_sim_port}")
        for item in filter(None, (part.strip() for part in self.partner_endpoints.split(","))):
            name, sep, url = item.partition("=")
            if not sep or not name.strip() or not url.strip().startswith(("http://", "https://")):
                raise ConfigError(f"PAYMENTS_PARTNER_ENDPOINTS: {item!r} is not name=http(s)://host[:port]")
            endpoints[name.strip()] = url.strip()
        timeout_s = self.partner_timeout_ms / 1000
        return CallerConfig(endpoints=endpoints, max_in_flight=self.partner_max_in_flight, timeout_s=timeout_s,
                            connect_timeout_s=min(2.0, timeout_s),
                            breaker=BreakerConfig(open_s=self.partner_breaker_open_ms / 1000,
                                                  open_max_s=max(30.0, self.partner_breaker_open_ms / 1000)))

    def simulator(self) -> SimulatorConfig:
        try:
            median, p99 = parse_latency(self.partner_latency_ms)
            return SimulatorConfig(
                decline_rate=self.partner_decline_rate, error_rate=self.partner_error_rate,
                timeout_rate=self.partner_timeout_rate, throttle_rate=self.partner_throttle_rate,
                latency_median_ms=median, latency_p99_ms=p99, seed=self.partner_seed,
                data_dir=self.partner_data_dir or self.stack_home / "partner")
        except ValueError as error:
            raise ConfigError(f"PAYMENTS_PARTNER_*: {error}") from None


def env_names() -> dict[str, str]:
    """Field name -> the environment variable it is read from."""
    names = {}
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names[name] = alias if isinstance(alias, str) else f"PAYMENTS_{name.upper()}"
    return names


def describe(error: ValidationError) -> str:
    """One line per invalid variable, named as the operator set it."""
    names = env_names()
    problems = []
    for item in error.errors(include_url=False):
        field = str(item["loc"][0]) if item["loc"] else "?"
        problems.append(f"{names.get(field, field)}={item.get('input')!r}: {item['msg']}")
    return "invalid configuration: " + "; ".join(problems)
