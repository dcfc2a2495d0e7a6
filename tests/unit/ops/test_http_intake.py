"""`payments run http-intake`'s configuration from the settings."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ops.errors import ConfigError
from ops.http_intake import config_of
from ops.settings import Settings

OAUTH = {"PAYMENTS_OAUTH_ISSUER": "https://login.example", "PAYMENTS_OAUTH_JWKS_URL": "https://login.example/jwks"}


def test_the_settings_make_the_intake_config() -> None:
    config = config_of(Settings.load({**OAUTH, "PAYMENTS_HTTP_PORT": "9000", "PAYMENTS_HTTP_RATE_BURST": "7",
                                      "PAYMENTS_OAUTH_ALGORITHMS": " ES256 , RS256", "PAYMENTS_TOPIC_PREFIX": "x.",
                                      "PAYMENTS_IDEMPOTENCY_WINDOW_S": "60", "KAFKA_BOOTSTRAP_SERVERS": "k:9092"}))
    assert (config.port, config.rate.burst, config.oauth.algorithms, config.topics.commands) == (
        9000, 7, ("ES256", "RS256"), "x.payments.commands")
    assert (config.idempotency_window, config.kafka.bootstrap_servers, config.oauth.audience) == (
        timedelta(seconds=60), "k:9092", "payments-api")


@pytest.mark.parametrize(("environ", "names"), [
    ({}, "PAYMENTS_OAUTH_ISSUER"),
    ({"PAYMENTS_OAUTH_ISSUER": "https://login.example"}, "PAYMENTS_OAUTH_JWKS_URL"),
    ({**OAUTH, "PAYMENTS_OAUTH_ALGORITHMS": "RS256,HS256"}, "PAYMENTS_OAUTH_ALGORITHMS"),
    ({**OAUTH, "PAYMENTS_OAUTH_JWKS_URL": "file:///etc/jwks"}, "PAYMENTS_OAUTH_JWKS_URL"),
])
def test_a_missing_or_refused_setting_is_a_config_error_naming_it(environ: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        config_of(Settings.load(environ))
