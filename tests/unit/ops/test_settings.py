"""The settings object: one read of the environment, typed, with errors that name the variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ops.errors import ConfigError
from ops.settings import Settings, env_names

DOCS = Path(__file__).resolve().parents[3] / "docs" / "operations.md"


def test_defaults_point_at_the_local_stack() -> None:
    settings = Settings.load({})
    assert settings.bootstrap_servers == "127.0.0.1:19092"
    assert settings.database == "postgresql://postgres@127.0.0.1:15432/payments"
    assert (settings.partitions, settings.batch_max, settings.topic_prefix) == (6, 500, "")
    assert settings.saga().time_scale == 1.0
    assert settings.stack_home == (Path.cwd() / ".stack").resolve()


def test_variables_are_read_by_their_documented_names() -> None:
    settings = Settings.load({
        "KAFKA_BOOTSTRAP_SERVERS": "kafka-1:9092", "DATABASE_URL": "postgresql://db/x",
        "PAYMENTS_TOPIC_PREFIX": "p.", "PAYMENTS_INSTANCE_ID": "pod-7", "PAYMENTS_PARTITIONS": "12",
        "PAYMENTS_BATCH_MAX": "50", "PAYMENTS_SAGA_TIME_SCALE": "0.05", "PAYMENTS_KAFKA_PORT": "29092"})
    assert settings.bootstrap_servers == "kafka-1:9092" and settings.database == "postgresql://db/x"
    assert (settings.topics.commands, settings.instance_id, settings.partitions) == ("p.payments.commands", "pod-7", 12)
    assert settings.processor().batch_records_max == 50
    assert settings.saga().time_scale == 0.05
    assert Settings.load({"PAYMENTS_KAFKA_PORT": "29092"}).bootstrap_servers == "127.0.0.1:29092"


@pytest.mark.parametrize(("variable", "value"), [
    ("PAYMENTS_BATCH_MAX", "zero"), ("PAYMENTS_BATCH_MAX", "0"), ("PAYMENTS_SAGA_TIME_SCALE", "2"),
    ("PAYMENTS_PARTNER_DECLINE_RATE", "1.5"), ("PAYMENTS_KAFKA_PORT", "70000"), ("PAYMENTS_LOG_LEVEL", "LOUD"),
])
def test_an_invalid_value_is_a_config_error_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{variable}={value!r}")):
        Settings.load({variable: value})


def test_simulator_settings_defaults_knobs_and_refusals(tmp_path: Path) -> None:
    default = Settings.load({"PAYMENTS_PARTNER_DATA_DIR": str(tmp_path)}).simulator()
    assert (default.decline_rate, default.error_rate, default.timeout_rate, default.latency_median_ms,
            default.latency_p99_ms, default.data_dir) == (0.1, 0.0, 0.05, 20.0, 100.0, tmp_path)
    custom = Settings.load({"PAYMENTS_PARTNER_DECLINE_RATE": "0.2", "PAYMENTS_PARTNER_ERROR_RATE": "0.1",
                            "PAYMENTS_PARTNER_TIMEOUT_RATE": "0", "PAYMENTS_PARTNER_LATENCY_MS": "5,50",
                            "PAYMENTS_PARTNER_SEED": "9"}).simulator()
    assert (custom.decline_rate, custom.error_rate, custom.latency_p99_ms, custom.seed) == (0.2, 0.1, 50.0, 9)
    assert custom.data_dir == Settings.load({}).stack_home / "partner"
    with pytest.raises(ConfigError, match="sum to at most 1"):
        Settings.load({"PAYMENTS_PARTNER_DECLINE_RATE": "0.9", "PAYMENTS_PARTNER_TIMEOUT_RATE": "0.2"}).simulator()
    with pytest.raises(ConfigError, match="median,p99"):
        Settings.load({"PAYMENTS_PARTNER_LATENCY_MS": "fast"}).simulator()
    with pytest.raises(ConfigError, match="PAYMENTS_PARTNER_SEED"):
        Settings.load({"PAYMENTS_PARTNER_SEED": "seven"})


def test_docs_operations_lists_exactly_the_variables_the_settings_read() -> None:
    table = DOCS.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = {name for line in table.splitlines() if line.startswith("| `")
                  for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1])}
    assert documented == set(env_names().values())


def test_the_jar_cache_follows_the_settings_given_not_the_process_environment(tmp_path: Path) -> None:
    assert Settings.load({"XDG_CACHE_HOME": str(tmp_path)}).jar_cache == tmp_path / "payments-orchestrator"
    assert Settings.load({"XDG_CACHE_HOME": "relative/dir"}).jar_cache == Path.home() / ".cache/payments-orchestrator"
    chosen = Settings.load({"PAYMENTS_CACHE_DIR": str(tmp_path / "c"), "XDG_CACHE_HOME": "/x"})
    assert chosen.jar_cache == tmp_path / "c"
