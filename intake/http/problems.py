"""RFC 9457 problem details: every 4xx and 5xx the HTTP intake sends is `application/problem+json`.

A `Problem` is raised anywhere below the routes and rendered by the application's handler; FastAPI's
own errors (validation, unknown route, wrong method) are mapped onto problems by `app`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "urn:payments:problem:"  # a name, not a link: docs/http-intake.md lists every kind

TITLES: Mapping[int, str] = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    409: "Conflict", 413: "Content Too Large", 415: "Unsupported Media Type", 422: "Unprocessable Content",
    429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable",
}


class ProblemBody(BaseModel):
    """The body of every error response (RFC 9457)."""

    type: str = Field(description="a URI naming the kind of problem; `about:blank` when the status says it all")
    title: str = Field(description="short summary of the kind of problem")
    status: int = Field(ge=400, le=599, description="the HTTP status code")
    detail: str = Field(description="what went wrong with this request")
    errors: list[dict[str, Any]] | None = Field(
        None, description="validation errors: where (`loc`) and what (`msg`), when the request was invalid")


class Problem(Exception):
    """An error response: raise it anywhere under a route."""

    def __init__(self, status: int, kind: str | None, detail: str, *, headers: Mapping[str, str] | None = None,
                 errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind  # a slug of docs/http-intake.md's problem list; None: about:blank
        self.detail = detail
        self.headers = dict(headers or {})
        self.errors = errors

    def body(self) -> ProblemBody:
        return ProblemBody(type=TYPE_BASE + self.kind if self.kind else "about:blank",
                           title=TITLES.get(self.status, "Error"), status=self.status, detail=self.detail,
                           errors=self.errors)

    def render(self) -> bytes:
        return json.dumps(self.body().model_dump(exclude_none=True), separators=(",", ":")).encode()
