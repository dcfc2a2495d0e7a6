from __future__ import annotations

import json
from pathlib import Path

from intake.http.openapi import document, render

CHECKED_IN = Path(__file__).resolve().parents[4] / "docs" / "openapi.json"


def test_the_checked_in_openapi_document_is_the_generated_one() -> None:
    # Regenerate with: PYTHONPATH=. .venv/bin/python -m intake.http.openapi > docs/openapi.json
    assert CHECKED_IN.read_text() == render()


def test_the_document_describes_bearer_auth_the_idempotency_key_and_problems() -> None:
    spec = document()
    assert spec["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": spec["components"]["securitySchemes"]["HTTPBearer"]["description"]}
    initiate = spec["paths"]["/v1/payments"]["post"]
    assert [p["name"] for p in initiate["parameters"]] == ["Idempotency-Key"]
    assert initiate["responses"]["422"]["content"] == {
        "application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemBody"}}}
    assert "HTTPValidationError" not in json.dumps(spec)
