"""The partner's HTTP API as the gateway sees it: one request, one classified result. No retries here.

The API (docs/participants.md, "Partner API"; the simulator serves it, a real partner's adapter maps
onto it): `POST /v1/transfers` with `Idempotency-Key: <submission_id>` submits, `GET
/v1/transfers/{submission_id}` asks. What matters about a failed request is whether it may have
reached the partner, because only then is the outcome unknown:

    answer       2xx: the transfer's status (ACCEPTED or DECLINED)
    pending      2xx with status PENDING: the partner has the submission and has not decided it yet;
                 ask again later (it is neither an outcome nor NOT_FOUND)
    not_found    404 on a query: the partner has no such submission
    rejected     another 4xx: the partner refused the request itself (its error code is passed on)
    throttled    429: not processed; wait Retry-After
    unavailable  503: not processed; wait (Retry-After if given)
    refused      the connection could not be made: not sent
    unknown      a timeout after sending, a dropped connection, another 5xx, an unreadable answer:
                 it MAY have been processed
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final, Literal
from urllib.parse import quote

import aiohttp
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from consumers.errors import ParticipantError
from payments.runtime import tracing

Kind = Literal["answer", "pending", "not_found", "rejected", "throttled", "unavailable", "refused", "unknown"]
NOT_PROCESSED: Final = frozenset({"throttled", "unavailable", "refused"})


class PartnerError(ParticipantError):
    """Root of the partner gateway's and the simulator's errors."""


@dataclass(frozen=True)
class HttpResult:
    kind: Kind
    body: dict[str, Any] = field(default_factory=dict)
    retry_after_s: float | None = None
    detail: str = ""

    @property
    def code(self) -> str | None:
        """The partner's error code (`error` in the body), if it gave one."""
        value = self.body.get("error")
        return value if isinstance(value, str) else None

    @property
    def breaker_verdict(self) -> Literal["success", "failure", "neutral"]:
        if self.kind in ("answer", "pending", "not_found", "rejected"):
            return "success"  # the partner is up (and may have said no)
        return "neutral" if self.kind == "throttled" else "failure"


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delay-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def classify(status: int, body: dict[str, Any], retry_after: str | None, *,  # noqa: PLR0911 - one per class
             query: bool) -> HttpResult:
    """The result of a response that arrived."""
    wait = retry_after_s(retry_after)
    if 200 <= status < 300:
        if body.get("status") == "PENDING":
            return HttpResult("pending", body, wait, f"HTTP {status} PENDING")
        if body.get("status") not in ("ACCEPTED", "DECLINED"):
            return HttpResult("unknown", body, detail=f"HTTP {status} without a transfer status")
        return HttpResult("answer", body)
    if status == 404 and query:
        return HttpResult("not_found", body)
    if status == 429:
        return HttpResult("throttled", body, wait, f"HTTP 429 (Retry-After {retry_after})")
    if status == 503:
        return HttpResult("unavailable", body, wait, "HTTP 503")
    if 400 <= status < 500:
        return HttpResult("rejected", body, detail=f"HTTP {status}")
    return HttpResult("unknown", body, detail=f"HTTP {status}")


class PartnerApi:
    """One partner's base URL over a shared, pooled aiohttp session."""

    def __init__(self, name: str, base_url: str, session: aiohttp.ClientSession) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._session = session

    async def submit(self, submission_id: str, amount_minor: int, currency: str, payer: str,
                     payee: str) -> HttpResult:
        body = {"amount_minor": amount_minor, "currency": currency, "payer": payer, "payee": payee}
        return await self._request("POST", f"{self.base_url}/v1/transfers", query=False,
                                   headers={"Idempotency-Key": submission_id}, json_body=body)

    async def query(self, submission_id: str) -> HttpResult:
        return await self._request("GET", f"{self.base_url}/v1/transfers/{quote(submission_id, safe='')}",
                                   query=True)

    async def _request(self, method: str, url: str, *, query: bool, headers: dict[str, str] | None = None,
                       json_body: dict[str, Any] | None = None) -> HttpResult:
        if not tracing.enabled():
            return await self._exchange(method, url, query=query, headers=headers, json_body=json_body)
        headers = dict(headers or {})
        with tracing.http_client(method, url, self.base_url.split("://", 1)[-1].split("/", 1)[0], headers) as span:
            span.set_attribute("payments.partner", self.name)
            result = await self._exchange(method, url, query=query, headers=headers, json_body=json_body)
            span.set_attribute("payments.partner.result", result.kind)
            if result.kind in ("refused", "unknown"):
                span.set_status(StatusCode.ERROR, result.detail)
            return result

    async def _exchange(self, method: str, url: str, *, query: bool, headers: dict[str, str] | None,
                        json_body: dict[str, Any] | None) -> HttpResult:
        try:
            async with self._session.request(method, url, headers=headers, json=json_body) as response:
                raw = await response.read()
                status, retry_after = response.status, response.headers.get("Retry-After")
                trace.get_current_span().set_attribute("http.response.status_code", status)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as error:
            return HttpResult("refused", detail=f"{type(error).__name__}: {error}")  # never left this host
        except (aiohttp.ClientError, TimeoutError) as error:
            return HttpResult("unknown", detail=f"{type(error).__name__}: {error}" if str(error) else
                              type(error).__name__)
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            return HttpResult("unknown", detail=f"HTTP {status} with a body that is not a JSON object")
        return classify(status, parsed, retry_after, query=query)
