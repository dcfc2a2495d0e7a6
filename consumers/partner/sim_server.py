"""The simulated partner as an HTTP service (`payments run partner-sim`): the API a bank would offer.

    POST /v1/transfers                        submit; header Idempotency-Key = the submission id
    GET  /v1/transfers/{submission_id}        what the partner knows about a submission
    GET  /v1/settlement-reports/{YYYY-MM-DD}  the day's settlement report (CSV)
    GET  /healthz                             200 while serving
    POST /_sim/faults                         simulator only: throttle (429), unavailable (503), slow, none
    GET  /_sim/submissions                    simulator only: per submission id, POSTs, replays, queries
    GET  /_sim/stats                          simulator only: totals, requests in progress and their peak

docs/participants.md ("Partner API") is the reference for status codes and bodies. A submission is
decided and made durable when it arrives (journal entries are fsynced in groups), then takes its
latency (the partner's processing time) before the answer leaves; meanwhile a query about it answers
200 with status PENDING, never 404. POSTs for one submission id are handled one at a time, so a
concurrent retry of the same id waits and is answered as a replay of the one transfer; a query waits
for no POST, only for one being received to be durable. A 429 (the seeded throttle rate or an
injected fault) or a 503 is answered before anything is processed.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, Final, Literal

import structlog
from aiohttp import web

from consumers.partner.simulator import (
    PENDING,
    THROTTLE_RETRY_AFTER_S,
    Journal,
    PartnerBook,
    SimulatorConfig,
    SubmitDecision,
    Transfer,
    TransferRequest,
)

log = structlog.get_logger(__name__)

IDEMPOTENCY_KEY_MAX: Final = 255
ACCOUNT_MAX: Final = 64
FAULT_MODES: Final = ("none", "throttle", "unavailable", "slow")


@dataclass
class Faults:
    """An injected fault, active until `until` (monotonic seconds); `share` of requests are affected. With
    `submissions` it affects only that many submissions (POSTs) more, queries none: a test then meets it
    however long its traffic takes to arrive."""

    mode: str = "none"
    until: float = 0.0
    retry_after_s: int = 1
    extra_latency_ms: int = 0
    share: float = 1.0
    submissions: int | None = None  # submissions still to affect (None: every request until `until`)

    def on(self) -> bool:
        return self.mode != "none" and time.monotonic() < self.until and self.submissions != 0

    def active(self, rng: random.Random, kind: Literal["submit", "query"]) -> str:
        if not self.on() or (self.submissions is not None and kind != "submit") or rng.random() >= self.share:
            return "none"
        if self.submissions is not None:
            self.submissions -= 1
        return self.mode


class GroupCommit:
    """Makes journal entries durable in groups: every waiting request shares one write and one fsync."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._waiting: list[tuple[list[dict[str, Any]], asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def commit(self, entries: tuple[dict[str, Any], ...]) -> None:
        if not entries:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((list(entries), done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        await done

    async def _write(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await loop.run_in_executor(None, self._journal.append, [e for entries, _ in batch for e in entries])
            except OSError as error:  # the answer must not go out: each waiting request fails with 500
                for _, done in batch:
                    done.set_exception(error)
                continue
            for _, done in batch:
                done.set_result(None)


class KeyLocks:
    """One asyncio lock per submission id, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def held(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def held_keys(self) -> frozenset[str]:
        """The keys someone holds or waits for now."""
        return frozenset(self._locks)


def _error(status: int, code: str, detail: str = "", headers: dict[str, str] | None = None) -> web.Response:
    body: dict[str, Any] = {"error": code}
    if detail:
        body["detail"] = detail
    return web.json_response(body, status=status, headers=headers)


def _transfer_body(transfer: Transfer) -> dict[str, Any]:
    return {"submission_id": transfer.submission_id, "status": transfer.status,
            "partner_reference": transfer.partner_reference, "reason_code": transfer.reason_code,
            "amount_minor": transfer.amount_minor, "currency": transfer.currency, "booked_on": transfer.day}


def _parse_transfer(key: str, body: Any) -> TransferRequest | str:
    """The request, or why it is invalid."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    amount, currency = body.get("amount_minor"), body.get("currency")
    payer, payee = body.get("payer"), body.get("payee")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        return "amount_minor must be a positive integer (minor units)"
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isalpha() and currency.isupper()):
        return "currency must be an ISO 4217 alphabetic code"
    for name, value in (("payer", payer), ("payee", payee)):
        if not isinstance(value, str) or not 0 < len(value) <= ACCOUNT_MAX:
            return f"{name} must be a non-empty string of at most {ACCOUNT_MAX} characters"
    assert isinstance(payer, str) and isinstance(payee, str)
    return TransferRequest(key, amount, currency, payer, payee)


class SimulatedPartnerApp:
    """The aiohttp application around one `PartnerBook`."""

    def __init__(self, book: PartnerBook, journal: Journal) -> None:
        self.book = book
        self.journal = journal
        self.faults = Faults()
        self._commits = GroupCommit(journal)
        self._posts = KeyLocks()  # held for a whole POST: one at a time per submission id
        self._receipts = KeyLocks()  # held while a POST is decided and made durable: a query waits for that only
        self._rng = random.Random(f"{book.config.seed}:faults")
        self.in_progress = 0
        self.max_in_progress = 0

    def application(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_post("/v1/transfers", self.submit)
        app.router.add_get("/v1/transfers/{submission_id}", self.query)
        app.router.add_get("/v1/settlement-reports/{day}", self.report)
        app.router.add_get("/healthz", self.health)
        app.router.add_post("/_sim/faults", self.set_faults)
        app.router.add_get("/_sim/submissions", self.submissions)
        app.router.add_get("/_sim/stats", self.stats)
        return app

    async def _counted(self, handle: Callable[[], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Count the transfer requests being handled at once (the gateway's concurrency, as the partner sees it)."""
        self.in_progress += 1
        self.max_in_progress = max(self.max_in_progress, self.in_progress)
        try:
            return await handle()
        finally:
            self.in_progress -= 1

    def _admit(self, kind: Literal["submit", "query"], submission_id: str) -> web.Response | float:
        """A response to send instead of processing the request (injected faults, the seeded throttle),
        or how long processing it takes (its latency)."""
        mode = self.faults.active(self._rng, kind)
        if mode == "throttle":
            return _error(429, "RATE_LIMITED", headers={"Retry-After": str(self.faults.retry_after_s)})
        if mode == "unavailable":
            return _error(503, "UNAVAILABLE", headers={"Retry-After": str(self.faults.retry_after_s)})
        if self.book.throttle(kind, submission_id):
            return _error(429, "RATE_LIMITED", headers={"Retry-After": str(THROTTLE_RETRY_AFTER_S)})
        extra = self.faults.extra_latency_ms / 1000 if mode == "slow" else 0.0
        return self.book.latency_s(submission_id if kind == "submit" else None) + extra

    async def submit(self, request: web.Request) -> web.StreamResponse:
        key = request.headers.get("Idempotency-Key", "")
        if not 0 < len(key) <= IDEMPOTENCY_KEY_MAX:
            return _error(400, "INVALID_REQUEST", f"the Idempotency-Key header (1-{IDEMPOTENCY_KEY_MAX} "
                                                  "characters) names the submission")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "INVALID_REQUEST", "the body must be JSON")
        parsed = _parse_transfer(key, body)
        if isinstance(parsed, str):
            return _error(400, "INVALID_REQUEST", parsed)

        async def handle() -> web.StreamResponse:
            admitted = self._admit("submit", key)  # at the door: a 429 or 503 waits for nothing
            if isinstance(admitted, web.Response):
                return admitted
            async with self._posts.held(key):
                return await self._decide(request, parsed, admitted)

        return await self._counted(handle)

    async def _decide(self, request: web.Request, transfer_request: TransferRequest,
                      latency_s: float) -> web.StreamResponse:
        decision = await self._receive(transfer_request)
        try:
            await asyncio.sleep(latency_s)  # the partner's processing time
        finally:
            if decision.kind == "recorded":  # the request is over, answered or not: queries get the outcome
                self.book.finish(transfer_request.submission_id)
        return self._answer(request, decision)

    async def _receive(self, transfer_request: TransferRequest) -> SubmitDecision:
        """Decide the POST and make it durable at its receipt, before its processing time: a query
        meanwhile finds the submission (PENDING) instead of NOT_FOUND, which would invite a second POST."""
        async with self._receipts.held(transfer_request.submission_id):
            decision = self.book.submit(transfer_request)
            try:
                await self._commits.commit(decision.journal)
            except BaseException:
                if decision.kind == "recorded":  # failing with 500: never left pending
                    self.book.finish(transfer_request.submission_id)
                raise
            return decision

    @staticmethod
    def _answer(request: web.Request, decision: SubmitDecision) -> web.StreamResponse:
        if decision.kind == "conflict":
            return _error(422, "IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used with another amount or "
                                                         "other parties")
        if decision.kind == "error":
            return _error(500, "PARTNER_INTERNAL_ERROR", "nothing was recorded; the request may be retried")
        assert decision.transfer is not None
        if decision.lost_answer:  # recorded, but the answer is lost on the way: drop the connection
            if request.transport is not None:
                request.transport.close()
            raise asyncio.CancelledError
        replayed = decision.kind == "replayed"
        return web.json_response(_transfer_body(decision.transfer), status=200 if replayed else 201,
                                 headers={"Idempotent-Replayed": "true"} if replayed else None)

    async def query(self, request: web.Request) -> web.StreamResponse:
        submission_id = request.match_info["submission_id"]

        async def handle() -> web.StreamResponse:
            admitted = self._admit("query", submission_id)
            if isinstance(admitted, web.Response):
                return admitted
            await asyncio.sleep(admitted)
            async with self._receipts.held(submission_id):  # a POST being received: wait until it is durable
                # A POST in progress is in the book from its receipt, and PENDING until answered.
                transfer = self.book.query(submission_id)
            if transfer is None:
                return _error(404, "NOT_FOUND", "the partner has no transfer with this submission id")
            if transfer == PENDING:
                return web.json_response({"submission_id": submission_id, "status": PENDING})
            return web.json_response(_transfer_body(transfer))

        return await self._counted(handle)

    async def report(self, request: web.Request) -> web.StreamResponse:
        try:
            day = date.fromisoformat(request.match_info["day"])
        except ValueError:
            return _error(400, "INVALID_REQUEST", "the day is YYYY-MM-DD")
        text, _ = self.book.report_csv(day)
        return web.Response(text=text, content_type="text/csv")

    async def health(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    async def set_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            mode = str(body.get("mode", "none"))
            counted = body.get("submissions")
            submissions = None if counted is None else int(counted)
            # With a count and no time, the fault lasts until that many submissions have met it.
            seconds = float(body.get("seconds", 0 if submissions is None else math.inf))
            faults = Faults(mode=mode, until=time.monotonic() + seconds,
                            retry_after_s=int(body.get("retry_after_s", 1)),
                            extra_latency_ms=int(body.get("extra_latency_ms", 0)), share=float(body.get("share", 1.0)),
                            submissions=submissions)
        except (ValueError, TypeError, AttributeError, OverflowError) as error:
            return _error(400, "INVALID_REQUEST", str(error))
        if (mode not in FAULT_MODES or not 0.0 <= faults.share <= 1.0 or not seconds >= 0
                or (submissions is not None and submissions < 1)):
            return _error(400, "INVALID_REQUEST", f"mode is one of {', '.join(FAULT_MODES)}; share in [0, 1]; "
                                                  "seconds >= 0; submissions >= 1")
        self.faults = faults
        seconds_or_none = None if math.isinf(seconds) else seconds  # JSON has no infinity
        log.info("partner_sim_faults", mode=mode, seconds=seconds_or_none, submissions=submissions,
                 retry_after_s=faults.retry_after_s, extra_latency_ms=faults.extra_latency_ms, share=faults.share)
        return web.json_response({"mode": mode, "seconds": seconds_or_none, "submissions": submissions})

    async def submissions(self, request: web.Request) -> web.StreamResponse:
        """What a query would say of each submission: one still being received (its journal entry not yet
        fsynced) has no status yet, as a query waits for that, so a test that sees PENDING here knows the
        submission survives a SIGKILL."""
        receiving = self._receipts.held_keys()
        seen = self.book.submissions()
        for sid in receiving & seen.keys():
            seen[sid] = {**seen[sid], "status": None}
        return web.json_response({"submissions": seen})

    async def stats(self, request: web.Request) -> web.StreamResponse:
        book = self.book
        statuses = Counter(t.status for t in book.transfers())
        return web.json_response({
            "transfers": sum(statuses.values()), "accepted": statuses["ACCEPTED"], "declined": statuses["DECLINED"],
            "posts": sum(book.posts.values()), "replays": sum(book.replays.values()),
            "queries": sum(book.queries.values()), "throttled": sum(book.throttled.values()),
            "in_progress": self.in_progress, "max_in_progress": self.max_in_progress,
            "faults": self.faults.mode if self.faults.on() else "none"})


def load_book(config: SimulatorConfig) -> tuple[PartnerBook, Journal]:
    book = PartnerBook(config)
    journal = Journal(config.data_dir)
    entries = journal.load_into(book)
    log.info("partner_sim_loaded", entries=entries, data_dir=str(config.data_dir))
    return book, journal


async def serve(config: SimulatorConfig, host: str, port: int, stop: threading.Event,
                tick: Callable[[], None] | None = None) -> None:
    """Serve until `stop` is set, then finish the requests in progress; `tick` is called while the event
    loop turns (a liveness probe's heartbeat)."""
    book, journal = load_book(config)
    runner = web.AppRunner(SimulatedPartnerApp(book, journal).application(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=1024).start()
        log.info("partner_sim_listening", url=f"http://{host}:{port}")
        while not stop.is_set():
            if tick is not None:
                tick()
            await asyncio.sleep(0.2)
    finally:
        await runner.cleanup()
        journal.close()
