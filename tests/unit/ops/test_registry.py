"""The registry declares each service and projection once; topology, CLI and replay derive from it."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path

from ops.cli import build_parser
from ops.registry import CORE_MIGRATIONS, GATEWAYS, PROJECTIONS, SERVICES, SIMULATORS, process_args, topology
from ops.settings import Settings
from payments.contracts.messages import MESSAGE_TYPES
from payments.contracts.topics import DLQ
from payments.runtime.topics import Topics

TOPICS = Topics("x.")


def test_topology_holds_every_topic_a_service_or_projection_uses_and_every_message_topic() -> None:
    specs = {spec.name: spec for spec in topology(TOPICS, 6)}
    for service in SERVICES.values():
        for base in (*service.logic.input_topics, *service.logic.output_topics):
            assert TOPICS.name(base) in specs, (service.name, base)
        changelog = specs[TOPICS.changelog(service.name)]
        assert changelog.compacted
    for projection in PROJECTIONS.values():
        assert all(TOPICS.name(base) in specs for base in projection.projection().topics)
    assert {TOPICS.name(cls.TOPIC) for cls in MESSAGE_TYPES.values()} <= set(specs)
    assert TOPICS.name(DLQ) in specs
    reads = {TOPICS.name(base) for service in SERVICES.values() for base in service.reads}
    assert reads and reads <= set(specs)  # the risk models
    assert {spec.partitions for name, spec in specs.items() if name not in reads} == {6}  # co-partitioned
    assert {specs[name].partitions for name in reads} == {1}  # one order of changes


def test_every_service_builds_its_logic_from_the_settings(tmp_path: Path) -> None:
    settings = Settings.load({"PAYMENTS_PARTNER_DATA_DIR": str(tmp_path), "PAYMENTS_SAGA_TIME_SCALE": "0.5"})
    for name, spec in SERVICES.items():
        if spec.reads:  # it reads its configuration from Kafka at start: tests/integration/test_risk_models.py
            continue
        logic = spec.build(settings)
        assert (logic.service, logic.input_topics, logic.output_topics) == (
            name, spec.logic.input_topics, spec.logic.output_topics)
    assert SERVICES["orchestrator"].build(settings).config.time_scale == 0.5  # type: ignore[attr-defined]


def test_every_migration_belongs_to_the_core_or_to_exactly_one_projection() -> None:
    files = sorted(entry.name for entry in resources.files("projections.migrations").iterdir()
                   if entry.name.endswith(".sql"))
    owners: dict[str, list[str]] = {name: [] for name in files}
    for name in CORE_MIGRATIONS:
        owners[name].append("core")
    for projection in PROJECTIONS.values():
        for name in projection.migrations:
            owners[name].append(projection.name)
    assert {name: found for name, found in owners.items() if len(found) != 1} == {}


def test_the_command_line_offers_every_registered_service_and_projection() -> None:
    parser = build_parser()
    run = parser._subparsers._group_actions[0].choices["run"]  # type: ignore[union-attr]
    assert run.get_default("handler") is not None
    choices = next(action.choices for action in run._actions if action.dest == "service")
    assert list(choices) == [*SERVICES, *SIMULATORS, *GATEWAYS, "projection"]
    assert all(f"projection {name}" in run.epilog for name in PROJECTIONS)
    assert all(name in run.epilog for name in SIMULATORS)
    assert process_args() == ([[name] for name in SIMULATORS] + [[name] for name in SERVICES]
                              + [["projection", name] for name in PROJECTIONS])


def test_only_a_service_that_calls_out_has_a_performer_and_it_has_every_partner_endpoint() -> None:
    settings = Settings.load({"PAYMENTS_PARTNERS": "simbank,otherbank",
                              "PAYMENTS_PARTNER_ENDPOINTS": "otherbank=https://bank.example/api",
                              "PAYMENTS_PARTNER_MAX_IN_FLIGHT": "64"})
    callers = {name for name, spec in SERVICES.items() if spec.performer is not None}
    assert callers == {"partner"}
    performer = SERVICES["partner"].performer
    assert performer is not None
    caller, limit = performer(settings)
    assert limit == 64
    assert caller.config.endpoints == {"simbank": "http://127.0.0.1:18650",  # type: ignore[attr-defined]
                                       "otherbank": "https://bank.example/api"}


def test_a_service_process_loads_onnxruntime_only_to_serve_a_trained_model() -> None:
    """Every process imports the registry; onnxruntime and numpy (about 30 MB) are for a risk service that
    scores with a trained model, and load when it loads one."""
    code = "import sys, ops.launch, ops.registry; print('onnxruntime' in sys.modules or 'numpy' in sys.modules)"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert found.stdout.strip() == "False", found.stderr
