"""Calls a service makes outside its transactions, many at once: the partner gateway's HTTP calls.

A Logic that calls out (`payments.runtime.logic.Calling`) records each call in its state; the
exactly-once loop starts the call only after the transaction that recorded it committed, and feeds
its result back through `Calling.complete` in a later transaction. So no transaction is ever held
open while a call waits on the network, and a call is never made for a decision that was not kept.

After a crash or a rebalance, the new owner restores the state and finds the calls that were recorded
but not answered. It starts them again with `recovered=True`: they may have reached the other side
already, and the performer must find out (the partner gateway asks the partner) before acting again.

`CallRunner` runs the calls on an asyncio loop in one background thread and never performs more than
`limit` of them at once: a call started beyond that waits in the runner for a slot, unsent (no request
made, so no timeout of its own running), and is performed when an earlier one finishes.

What the loop does with that: it takes no more input records than `room()` (each may become a call),
and pauses its partitions when there is none for long. Calls started for new records therefore never
make more than `limit` unfinished. Recovered calls do: a restore starts every call its state records,
however many (a partition's previous owner may have had `limit` out, and several partitions may come
back at once). They queue for slots like any other; `room()` counts them, so it goes negative, and the
loop reads no input until they have drained below `limit`. Results wait for the loop's next checkpoint
(`take`, then `settled` after the commit). So at any moment: at most `limit` calls are performed; the
runner holds the unfinished calls (at most `limit`, plus recovered calls not yet finished) and the
results not yet settled; absent recovered calls that is at most twice `limit`, as calls start only
after a checkpoint commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any, Protocol

import structlog

from payments.runtime.errors import ServiceError
from payments.runtime.logic import Call, CallKey, Completion

log = structlog.get_logger(__name__)

class Performer(Protocol):
    """Makes the calls (on the runner's event loop). `perform` returns a result for every call; an
    exception is a bug: the runner logs it and performs the call again later, as recovered."""

    async def open(self) -> None: ...

    async def perform(self, call: Call, recovered: bool) -> Any: ...

    async def close(self) -> None: ...


class Calls(Protocol):
    """What the exactly-once loop needs from a call runner (a fake in unit tests)."""

    def start(self, partition: int, key: str, call: Call, *, recovered: bool) -> None: ...

    def take(self) -> list[Completion]: ...

    def settled(self, completions: Iterable[Completion]) -> None: ...

    def revoke(self, partitions: Iterable[int]) -> None: ...

    def room(self) -> int: ...

    def busy(self) -> bool: ...

    def wait(self, timeout_s: float) -> bool: ...

    def close(self) -> None: ...


class CallRunnerError(ServiceError):
    """The call runner's event loop could not start (the performer's `open` failed)."""


class CallRunner:
    """Runs calls concurrently on an asyncio loop in a daemon thread; thread-safe towards the main loop."""

    def __init__(self, performer: Performer, *, limit: int, name: str, retry_pause_s: float = 1.0,
                 retry_pause_max_s: float = 30.0, open_timeout_s: float = 30.0) -> None:
        assert limit > 0
        self.limit = limit
        self._performer = performer
        self._retry_pause_s = retry_pause_s
        self._retry_pause_max_s = retry_pause_max_s
        self._lock = threading.Lock()
        self._known: dict[CallKey, object] = {}  # started and not settled (nor revoked): ident -> run token
        self._finished: set[CallKey] = set()  # of those, the ones whose result is in
        self._done: list[Completion] = []  # results not taken yet
        self._arrived = threading.Event()  # set when a result lands: wakes a loop waiting for room
        # Held while a call is performed: beyond `limit`, calls wait here unsent (the loop's room check
        # cannot stop recovered calls, which all start at once after a restore).
        self._slots = asyncio.Semaphore(limit)
        self._tasks: dict[CallKey, asyncio.Task[None]] = {}
        self._log = log.bind(runner=name)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"{name}-calls", daemon=True)
        self._thread.start()
        try:
            self._submit(self._performer.open()).result(open_timeout_s)
        except Exception as error:
            self._stop_loop()
            raise CallRunnerError(f"{name}: the call runner could not start: {error}") from error

    # -- the main loop's side -------------------------------------------------------------------

    def start(self, partition: int, key: str, call: Call, *, recovered: bool) -> None:
        """Start `call` unless it is already running or waiting to be settled. Never refused: with `limit`
        calls being performed it waits for a slot (and `room()` goes negative)."""
        ident = (partition, key, call.call_id)
        token = object()  # tells this run from an earlier one of the same call that was revoked
        with self._lock:
            if ident in self._known:
                return
            self._known[ident] = token
        self._loop.call_soon_threadsafe(self._spawn, ident, token, call, recovered)

    def take(self) -> list[Completion]:
        """The results that arrived since the last take (the runner remembers them until `settled`)."""
        with self._lock:
            done, self._done = self._done, []
        return done

    def settled(self, completions: Iterable[Completion]) -> None:
        """These results are committed (or no longer wanted): forget them, which makes room."""
        with self._lock:
            for completion in completions:
                self._known.pop(completion.ident, None)
                self._finished.discard(completion.ident)

    def revoke(self, partitions: Iterable[int]) -> None:
        """The partitions went to another owner: drop their calls, cancel the ones still running (the new
        owner recovers them from the committed state)."""
        numbers = set(partitions)
        with self._lock:
            dropped = {ident for ident in self._known if ident[0] in numbers}
            for ident in dropped:
                del self._known[ident]
            self._finished -= dropped
            self._done = [c for c in self._done if c.partition not in numbers]
        if dropped and not self._loop.is_closed():
            # The loop may close meanwhile: close() has then cancelled every task already.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._cancel, dropped)

    def room(self) -> int:
        """How many more calls may start: `limit` minus the calls not finished (performed or waiting for
        a slot). Negative when recovered calls put more than `limit` in the runner."""
        with self._lock:
            return self.limit - (len(self._known) - len(self._finished))

    def busy(self) -> bool:
        with self._lock:
            return bool(self._known)

    def wait(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for a result to arrive; True if one did (then `take` it)."""
        arrived = self._arrived.wait(timeout_s)
        self._arrived.clear()
        return arrived

    def close(self, timeout_s: float = 5.0) -> None:
        """Cancel what is running, close the performer, stop the thread. Idempotent."""
        if not self._thread.is_alive():
            return
        try:
            self._submit(self._shutdown()).result(timeout_s)
        except Exception as error:  # a stuck close must not keep the process from stopping
            self._log.warning("call_runner_close_failed", error=repr(error))
        self._stop_loop()

    # -- the event loop's side ------------------------------------------------------------------

    def _submit(self, coroutine: Any) -> Future[Any]:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def _spawn(self, ident: CallKey, token: object, call: Call, recovered: bool) -> None:
        with self._lock:
            if self._known.get(ident) is not token:  # revoked before it started
                return
        self._tasks[ident] = self._loop.create_task(self._run(ident, token, call, recovered))

    async def _run(self, ident: CallKey, token: object, call: Call, recovered: bool) -> None:
        failures = 0
        try:
            while True:
                try:
                    async with self._slots:  # a bug's pause below holds no slot
                        result = await self._performer.perform(call, recovered)
                    break
                except Exception:  # a bug in the performer: never lose the call, try again as recovered
                    failures += 1
                    pause = min(self._retry_pause_max_s, self._retry_pause_s * 2 ** (failures - 1))
                    self._log.exception("call_failed", key=ident[1], call_id=ident[2], retry_in_s=pause)
                    recovered = True
                    await asyncio.sleep(pause)
            with self._lock:
                if self._known.get(ident) is token:
                    self._finished.add(ident)
                    self._done.append(Completion(ident[0], ident[1], ident[2], result))
                    self._arrived.set()
        finally:
            if self._tasks.get(ident) is asyncio.current_task():
                del self._tasks[ident]

    def _cancel(self, idents: set[CallKey]) -> None:
        for ident in idents:
            task = self._tasks.pop(ident, None)
            if task is not None:
                task.cancel()

    async def _shutdown(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._performer.close()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)
        if not self._thread.is_alive():
            self._loop.close()
