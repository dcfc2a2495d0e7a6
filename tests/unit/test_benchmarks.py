"""The benchmarks take their processes from the registry and their topic names from the contracts, so a
new participant is benchmarked, and a renamed topic cannot leave a benchmark reading an empty one."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from payments.contracts import topics

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_pipeline_benchmark_runs_every_registered_process() -> None:
    """benchmarks/pipeline.py starts `process_args()` (ops.registry): a participant or projection added
    to the registry is benchmarked without a change there. The e2e harness test checks the processes it
    reports; this checks the source takes them from the registry and nowhere else."""
    source = (BENCHMARKS / "pipeline.py").read_text()
    assert "ServiceProcess(args, log_dir=log_dir, env=env) for args in process_args()" in source
    assert "ServiceProcess([" not in source, "a process named by hand"


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
