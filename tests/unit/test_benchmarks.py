"""The benchmarks take their processes from the registry and their topic names from the contracts, so a
new participant is benchmarked, and a renamed topic cannot leave a benchmark reading an empty one."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from ops.registry import SERVICES, SIMULATORS
from payments.contracts import topics

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_throughput_benchmark_runs_the_simulators_and_every_service_on_the_payment_path() -> None:
    bench = load("e2e_throughput")
    assert (*SIMULATORS, *bench.SERVICES) == bench.PROCESSES
    assert bench.SERVICES == ("intake", "gate", "idempotency", "orchestrator", "risk", "funds", "partner")
    for name, spec in SERVICES.items():  # left out: only a service whose outputs no other service reads
        readers = {other for other, theirs in SERVICES.items() if other != name
                   and set(theirs.logic.input_topics) & set(spec.logic.output_topics)}
        assert (name in bench.SERVICES) == bool(readers), (name, readers)


@pytest.mark.parametrize("path", sorted(BENCHMARKS.glob("*.py")), ids=lambda path: path.name)
def test_a_benchmark_names_no_topic_by_a_literal(path: Path) -> None:
    names = {value for key, value in vars(topics).items() if key.isupper() and isinstance(value, str)}
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    literals = [node.value for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and node.value in names and id(node) not in docstrings]
    assert literals == [], f"use the constants of payments.contracts.topics in {path.name}"
