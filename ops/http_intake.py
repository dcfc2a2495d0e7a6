"""`payments run http-intake`: the HTTP intake (intake.http) wired to the settings.

Reads no environment itself: `config_of` turns the settings into the intake's config. At start the
database is migrated (waiting for it like a projection does: the Idempotency-Key store is a table of
`payments db migrate`), then uvicorn serves until SIGTERM, letting requests in flight finish.
"""

from __future__ import annotations

import sys
import threading
from datetime import timedelta

from intake.errors import IntakeConfigError
from intake.http.config import HttpIntakeConfig, OAuthConfig, RateConfig
from intake.http.server import build_server
from ops.errors import ConfigError
from ops.settings import Settings
from payments.observability import configure_logging
from payments.runtime.service import EXIT_CONFIG, EXIT_OK, install_signal_handlers
from payments.telemetry import configure_tracing
from projections.migrate import migrate_when_available

NAME = "http-intake"


def config_of(settings: Settings) -> HttpIntakeConfig:
    """The intake's config; ConfigError names the variable that is missing or wrong."""
    if not settings.oauth_issuer:
        raise ConfigError("PAYMENTS_OAUTH_ISSUER is not set: the HTTP intake trusts no token without it")
    if not settings.oauth_jwks_url:
        raise ConfigError("PAYMENTS_OAUTH_JWKS_URL is not set: the issuer's keys are needed to verify tokens")
    algorithms = tuple(name.strip() for name in settings.oauth_algorithms.split(",") if name.strip())
    try:
        return HttpIntakeConfig(
            kafka=settings.kafka, database_url=settings.database, topics=settings.topics,
            oauth=OAuthConfig(issuer=settings.oauth_issuer, jwks_url=settings.oauth_jwks_url,
                              audience=settings.oauth_audience, algorithms=algorithms,
                              leeway_s=settings.oauth_leeway_s),
            rate=RateConfig(per_s=settings.http_rate_per_s, burst=settings.http_rate_burst),
            host=settings.http_host, port=settings.http_port, body_bytes_max=settings.http_body_bytes_max,
            idempotency_window=timedelta(seconds=settings.idempotency_window_s), instance_id=settings.instance_id)
    except IntakeConfigError as error:
        raise ConfigError(str(error)) from None


def run_http_intake(settings: Settings) -> int:
    """The whole life of the process; returns its exit code (docs/operations.md, exit codes)."""
    configure_logging(NAME, settings.log_level)
    configure_tracing(NAME, settings.instance_id, settings.traces_exporter, settings.traces_sample_ratio)
    try:
        config = config_of(settings)
    except ConfigError as error:
        print(f"payments run {NAME}: {error}", file=sys.stderr)
        return EXIT_CONFIG
    stop = threading.Event()
    install_signal_handlers(stop)  # until uvicorn takes SIGTERM over: a stop while migrating
    if migrate_when_available(settings.database, stop) is None:
        return EXIT_OK
    server = build_server(config, settings.serde())
    try:
        server.run()
    except SystemExit as exit_:  # uvicorn exits 1 when it cannot bind the port
        print(f"payments run {NAME}: could not listen on {config.host}:{config.port}", file=sys.stderr)
        return EXIT_CONFIG if exit_.code else EXIT_OK
    return EXIT_OK
