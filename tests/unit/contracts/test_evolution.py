from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from payments.contracts.evolution import check_compatibility, main, sample_datum
from payments.contracts.schema_store import SchemaStore, default_schemas_dir, default_store

NAME = "test.evo.Thing"


def base_schema() -> dict[str, Any]:
    return {
        "type": "record",
        "name": "Thing",
        "namespace": "test.evo",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "count", "type": "long"},
            {"name": "note", "type": ["null", "string"], "default": None},
        ],
    }


def write_versions(root: Path, *schemas: dict[str, Any]) -> Path:
    folder = root / NAME
    folder.mkdir(parents=True)
    for number, schema in enumerate(schemas, start=1):
        (folder / f"v{number}.avsc").write_text(json.dumps(schema))
    return root


def test_current_schemas_are_full_compatible() -> None:
    assert check_compatibility(default_store()) == []


def test_current_schemas_have_a_pair_to_check() -> None:
    assert len(default_store().versions("payments.commands.InitiatePayment")) >= 2


def test_main_on_current_schemas_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--schemas-dir", str(default_schemas_dir())]) == 0
    out = capsys.readouterr().out
    assert "ok   payments.commands.InitiatePayment v1 -> v2 (backward and forward)" in out
    assert "0 incompatibilities" in out


def test_adding_an_optional_field_with_default_is_compatible(tmp_path: Path) -> None:
    new = base_schema()
    new["fields"].append({"name": "tags", "type": {"type": "array", "items": "string"}, "default": []})
    assert check_compatibility(SchemaStore(write_versions(tmp_path, base_schema(), new))) == []


def test_new_required_field_without_default_is_backward_incompatible(tmp_path: Path) -> None:
    new = base_schema()
    new["fields"].append({"name": "currency", "type": "string"})
    problems = check_compatibility(SchemaStore(write_versions(tmp_path, base_schema(), new)))
    assert [(p.record, p.old_version, p.new_version, p.direction) for p in problems] == [(NAME, 1, 2, "backward")]
    assert "currency" in problems[0].error
    assert problems[0].message.startswith(f"{NAME} v1 -> v2: BACKWARD incompatible (v2 reader cannot read v1 data)")


def test_changing_a_field_type_is_incompatible_both_ways(tmp_path: Path) -> None:
    new = copy.deepcopy(base_schema())
    new["fields"][1]["type"] = "string"
    problems = check_compatibility(SchemaStore(write_versions(tmp_path, base_schema(), new)))
    assert {p.direction for p in problems} == {"backward", "forward"}
    assert all(p.record == NAME for p in problems)


def test_removing_a_field_without_default_is_forward_incompatible(tmp_path: Path) -> None:
    new = base_schema()
    del new["fields"][1]
    problems = check_compatibility(SchemaStore(write_versions(tmp_path, base_schema(), new)))
    assert [p.direction for p in problems] == ["forward"]
    assert "count" in problems[0].message


def test_main_reports_incompatibility_and_exits_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new = base_schema()
    new["fields"].append({"name": "currency", "type": "string"})
    write_versions(tmp_path, base_schema(), new)
    assert main(["--schemas-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"FAIL {NAME} v1 -> v2: BACKWARD incompatible" in out
    assert "1 incompatibility" in out


def test_main_exits_two_when_schemas_do_not_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--schemas-dir", str(tmp_path / "absent")]) == 2
    assert "schemas_dir_missing" in capsys.readouterr().err


def test_sample_datum_covers_both_sides_of_optional_fields() -> None:
    schema = default_store().latest("payments.funds.FundsReservationResult").parsed
    assert sample_datum(schema, 0)["available"] is None
    assert sample_datum(schema, 1)["available"] == {"amount_minor": 7, "currency": "sample"}
