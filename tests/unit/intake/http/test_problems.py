from __future__ import annotations

import json

from intake.http.problems import Problem


def test_a_problem_renders_as_rfc_9457() -> None:
    body = json.loads(Problem(422, "idempotency-key-reused", "use a new key").render())
    assert body == {"type": "urn:payments:problem:idempotency-key-reused", "title": "Unprocessable Content",
                    "status": 422, "detail": "use a new key"}


def test_a_problem_without_a_kind_is_about_blank_and_keeps_its_errors() -> None:
    body = json.loads(Problem(404, None, "no such resource", errors=[{"loc": ["body"], "msg": "m"}]).render())
    assert (body["type"], body["title"]) == ("about:blank", "Not Found")
    assert body["errors"] == [{"loc": ["body"], "msg": "m"}]
