"""How the gateway calls a partner: concurrently, bounded in time, and never guessing (a `Performer`).

Per call (a PendingCall recorded by consumers.partner.logic; the call runner makes up to
`max_in_flight` at once, on one pooled HTTP session):
  * calls for one submission id are made one after another (a query waits for the submission);
  * no attempt starts while the partner's breaker is open or its Retry-After holds, nor after the
    call's `expires_at` (the saga's window): a submission not sent by then is answered ERROR /
    PARTNER_UNAVAILABLE, a query PENDING;
  * a submission is retried only after an attempt the partner certainly did not process (429, 503,
    connection refused), with jittered exponential backoff that honours Retry-After. After an attempt
    that may have reached it (timeout, dropped connection, other 5xx) it is answered ERROR (TIMEOUT or
    the partner's code) at once: the saga queries before any resubmission (docs/saga.md);
  * a query is retried on any transient failure until `expires_at`, and so is one the partner answers
    PENDING (it has the submission and has not decided it): with the same backoff, never read as
    NOT_FOUND; still pending at `expires_at`, a query is answered PENDING (the saga asks again);
  * a *recovered* submission (recorded by an owner that died or lost the partition) is first asked
    about: the partner's outcome if it has one (waiting out PENDING as above: the dead owner's request
    is still being processed), a submission only if it says NOT_FOUND, and ERROR / TIMEOUT if neither
    is learnt by `expires_at` (the saga then queries);
  * a submission the partner answers PENDING (a partner that decides later) is asked about in the
    same way, and never sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final, Literal

import aiohttp
import structlog

from consumers.partner.breaker import NEVER, Breaker, BreakerConfig, Throttle, Transition
from consumers.partner.client import HttpResult, PartnerApi
from consumers.partner.logic import (
    PARTNER_NOT_CONFIGURED,
    PARTNER_UNAVAILABLE,
    TIMEOUT,
    PartnerAnswer,
    PendingCall,
)
from payments.runtime import metrics, tracing
from payments.runtime.logic import Call

log = structlog.get_logger(__name__)
BREAKER_LEVELS: Final = {"closed": 0, "half_open": 1, "open": 2}  # the breaker-state gauge's values

WAIT_SLICE_S: Final = 1.0  # a waiting call re-checks breaker, throttle and expiry at least this often


@dataclass(frozen=True)
class CallerConfig:
    endpoints: dict[str, str]  # partner name -> base URL of its API
    max_in_flight: int = 512
    timeout_s: float = 10.0  # one HTTP request, end to end
    connect_timeout_s: float = 2.0
    retry_base_s: float = 0.2
    retry_cap_s: float = 5.0
    retry_after_max_s: float = 60.0
    breaker: BreakerConfig = field(default_factory=BreakerConfig)

    def __post_init__(self) -> None:
        assert self.max_in_flight > 0 and self.timeout_s > 0 and 0 < self.connect_timeout_s <= self.timeout_s
        assert 0 < self.retry_base_s <= self.retry_cap_s


def backoff_s(attempt: int, config: CallerConfig, rng: random.Random, retry_after: float | None = None) -> float:
    """Full jitter, uniform in [0, min(cap, base * 2**(attempt-1))]; at least Retry-After (plus up to 20 %
    of it, so waiting calls do not all come back at once), capped by retry_after_max_s."""
    jitter = rng.uniform(0, min(config.retry_cap_s, config.retry_base_s * 2 ** min(attempt - 1, 20)))
    if retry_after is None:
        return jitter
    bounded = min(retry_after, config.retry_after_max_s)
    return bounded + rng.uniform(0, 0.2 * bounded)


class _Partner:
    """One partner: its API, breaker and throttle, and an event that wakes waiting calls on a change."""

    def __init__(self, api: PartnerApi, config: CallerConfig) -> None:
        self.api = api
        self.breaker = Breaker(config.breaker, time.monotonic)
        self.throttle = Throttle(time.monotonic)
        self.changed = asyncio.Event()

    def note(self, transition: Transition | None) -> None:
        if transition is None:
            return
        calls, failures = self.breaker.counts()
        event = {"open": "partner_breaker_opened", "half_open": "partner_breaker_half_open",
                 "closed": "partner_breaker_closed"}[transition[1]]
        log.warning(event, partner=self.api.name, previous=transition[0], calls=calls, failures=failures,
                    times_opened=self.breaker.opened)
        self._wake()

    def _wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()


class PartnerCaller:
    """The partner gateway's `Performer` (payments.runtime.calls)."""

    def __init__(self, config: CallerConfig, *, clock: Callable[[], datetime] | None = None,
                 seed: int | None = None) -> None:
        self.config = config
        self._clock = clock or (lambda: datetime.now(UTC))
        self._rng = random.Random(seed)
        self._session: aiohttp.ClientSession | None = None
        self._partners: dict[str, _Partner] = {}
        self._busy: dict[str, asyncio.Lock] = {}  # per submission id
        self._users: dict[str, int] = {}

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.config.max_in_flight, limit_per_host=0, keepalive_timeout=30)
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s, sock_connect=self.config.connect_timeout_s)
        self._session = aiohttp.ClientSession(connector=connector, timeout=timeout, raise_for_status=False)
        self._partners = {name: _Partner(PartnerApi(name, url, self._session), self.config)
                          for name, url in self.config.endpoints.items()}
        partners = self._partners
        metrics.GAUGES.register(metrics.BREAKER_STATE, "partner", lambda: [
            (BREAKER_LEVELS[one.breaker.state], {"partner": name}) for name, one in dict(partners).items()])

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def breaker_state(self, partner: str) -> tuple[str, int]:
        """The partner's breaker: its state and how often it opened since start."""
        breaker = self._partners[partner].breaker
        return breaker.state, breaker.opened

    async def perform(self, call: Call, recovered: bool) -> PartnerAnswer:
        pending = call.request
        assert isinstance(pending, PendingCall), f"not a partner call: {type(pending).__name__}"
        partner = self._partners.get(pending.partner)
        if partner is None:
            log.error("partner_not_configured", partner=pending.partner, known=sorted(self._partners),
                      submission_id=pending.submission_id)
            return pending.unanswered(PARTNER_NOT_CONFIGURED)
        sid = pending.submission_id
        lock = self._busy.setdefault(sid, asyncio.Lock())
        self._users[sid] = self._users.get(sid, 0) + 1
        try:
            async with lock:
                with tracing.under(pending.traceparent if tracing.enabled() else None):
                    if pending.kind == "query":
                        return await self._query_call(partner, pending)
                    return await self._submit_call(partner, pending, recovered)
        finally:
            self._users[sid] -= 1
            if not self._users[sid]:
                del self._users[sid], self._busy[sid]

    # -- the two kinds of call -------------------------------------------------------------------

    async def _query_call(self, partner: _Partner, pending: PendingCall) -> PartnerAnswer:
        found = await self._ask(partner, pending)
        if isinstance(found, HttpResult):
            return PartnerAnswer(kind="query", submission_id=pending.submission_id, code=found.body["status"],
                                 partner_reference=found.body.get("partner_reference"))
        return PartnerAnswer(kind="query", submission_id=pending.submission_id,
                             code="NOT_FOUND" if found == "not_found" else "PENDING")

    async def _submit_call(self, partner: _Partner, pending: PendingCall, recovered: bool) -> PartnerAnswer:
        if recovered:  # an earlier owner may have sent it: ask first, never guess
            found = await self._ask(partner, pending)
            if isinstance(found, HttpResult):
                log.info("partner_submission_recovered", partner=partner.api.name,
                         submission_id=pending.submission_id, status=found.body["status"])
                return self._submit_answer(pending, found)
            if found == "unknown":
                return pending.unanswered(TIMEOUT)
        return await self._submit(partner, pending, maybe_sent=recovered)

    async def _submit(self, partner: _Partner, pending: PendingCall, *, maybe_sent: bool) -> PartnerAnswer:
        amount, payer, payee = pending.amount, pending.payer_account, pending.payee_account
        assert amount is not None and payer is not None and payee is not None, "a submission names its terms"
        attempt = 0
        while await self._admitted(partner, pending):
            attempt += 1
            result = await self._attempt(partner, "submit", partner.api.submit(
                pending.submission_id, amount.amount_minor, amount.currency, payer, payee))
            if result.kind == "answer":
                return self._submit_answer(pending, result)
            if result.kind == "pending":  # taken, to be decided: ask until it is, never send it again
                found = await self._ask(partner, pending)
                return (self._submit_answer(pending, found) if isinstance(found, HttpResult)
                        else pending.unanswered(TIMEOUT))
            if result.kind == "rejected":
                log.error("partner_rejected_submission", partner=partner.api.name, detail=result.detail,
                          code=result.code, submission_id=pending.submission_id)
                return PartnerAnswer(kind="submit", submission_id=pending.submission_id, code="ERROR",
                                     reason_code=result.code or "PARTNER_REJECTED")
            if result.kind == "unknown":  # it may have been processed: the saga asks before resubmitting
                log.warning("partner_outcome_unknown", partner=partner.api.name, detail=result.detail,
                            submission_id=pending.submission_id)
                return PartnerAnswer(kind="submit", submission_id=pending.submission_id, code="ERROR",
                                     reason_code=result.code or TIMEOUT)
            await self._pause(partner, pending, attempt, result)  # not processed: try again
        return pending.unanswered(TIMEOUT if maybe_sent else PARTNER_UNAVAILABLE)

    async def _ask(self, partner: _Partner, pending: PendingCall) -> HttpResult | Literal["not_found", "unknown"]:
        """What the partner knows about the submission: its decided transfer, not_found, or unknown by
        expires_at. PENDING is asked again after a backoff: the submission exists, its outcome is to come."""
        attempt, seen = 0, False
        while await self._admitted(partner, pending):
            attempt += 1
            result = await self._attempt(partner, "query", partner.api.query(pending.submission_id))
            if result.kind == "answer":
                return result
            if result.kind == "not_found":  # after PENDING the partner had it: that is no licence to submit
                return "unknown" if seen else "not_found"
            seen = seen or result.kind == "pending"
            if result.kind == "rejected":
                log.error("partner_rejected_query", partner=partner.api.name, detail=result.detail,
                          submission_id=pending.submission_id)
                return "unknown"
            await self._pause(partner, pending, attempt, result)
        return "unknown"

    # -- one attempt, and the waits around it -----------------------------------------------------

    async def _attempt(self, partner: _Partner, operation: str,
                       request: Coroutine[object, object, HttpResult]) -> HttpResult:
        started = time.monotonic()
        try:
            result = await request
        except asyncio.CancelledError:
            partner.breaker.released()
            raise
        metrics.PARTNER_CALL.record(time.monotonic() - started, {"partner": partner.api.name,
                                                                 "operation": operation, "result": result.kind})
        verdict = result.breaker_verdict
        if verdict == "success":
            partner.note(partner.breaker.succeeded())
        elif verdict == "failure":
            partner.note(partner.breaker.failed())
        else:
            partner.breaker.released()
        if result.kind == "throttled":
            partner.throttle.hold(min(result.retry_after_s or 1.0, self.config.retry_after_max_s))
        return result

    async def _pause(self, partner: _Partner, pending: PendingCall, attempt: int, result: HttpResult) -> None:
        delay = backoff_s(attempt, self.config, self._rng, result.retry_after_s)
        left = (pending.expires_at - self._clock()).total_seconds()
        log.info("partner_call_retry", partner=partner.api.name, kind=pending.kind, result=result.kind,
                 detail=result.detail, attempt=attempt, retry_in_s=round(delay, 3),
                 submission_id=pending.submission_id)
        await asyncio.sleep(max(0.0, min(delay, left)))

    async def _admitted(self, partner: _Partner, pending: PendingCall) -> bool:
        """Wait until the breaker and the throttle let a call start; False once `expires_at` has passed."""
        while True:
            left = (pending.expires_at - self._clock()).total_seconds()
            if left <= 0:
                return False
            wait = max(partner.throttle.wait_s(), partner.breaker.wait_s())
            if wait <= 0:
                allowed, transition = partner.breaker.acquire()
                partner.note(transition)
                if allowed:
                    return True
                wait = partner.breaker.wait_s()
            changed = partner.changed
            timeout = min(left, WAIT_SLICE_S if wait == NEVER else wait, WAIT_SLICE_S)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=max(timeout, 0.001))

    @staticmethod
    def _submit_answer(pending: PendingCall, result: HttpResult) -> PartnerAnswer:
        body = result.body
        return PartnerAnswer(kind="submit", submission_id=pending.submission_id, code=body["status"],
                             partner_reference=body.get("partner_reference"), reason_code=body.get("reason_code"))
