"""A watchdog for the blocking calls of a service's main loop, and a bound on how long stopping may take.

librdkafka's transactional calls can block past their own timeout (librdkafka #5456, #5511: open in
2.16; `send_offsets_to_transaction` waits on a coordinator request whose timeout is never checked), and
psycopg blocks for as long as a stopped (SIGSTOP) PostgreSQL server does not answer. Neither can be
interrupted from Python. So the main loop declares each blocking call with a deadline
(`with watchdog.guard("commit_transaction", 25.0): ...`), and a daemon thread checks the declarations
once a second: a call that outlives its deadline is logged with its name and the process exits with
EXIT_STUCK. That is safe: every service rebuilds from committed Kafka (or PostgreSQL) state, and the
supervisor (systemd, Kubernetes, `ops.supervisor`) restarts it.

Stopping is bounded the same way. Python runs signal handlers only when the main thread is back in the
interpreter, which a call stuck in C never is, so the watchdog also watches a `signal.set_wakeup_fd`
pipe, which the C-level handler writes at once: `stop_grace_s` after SIGTERM or SIGINT, a process
that has not finished its checkpoint and left its group exits with EXIT_STUCK.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

import structlog

EXIT_STUCK: Final = 4  # a blocking call outlived its deadline, or stopping outlived its grace period
log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class _Call:
    name: str
    started: float
    deadline_s: float


class Watchdog:
    def __init__(self, name: str, *, stop_grace_s: float = 30.0, check_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 exit_process: Callable[[int], None] = os._exit) -> None:
        self.name = name
        self.stop_grace_s = stop_grace_s
        self.check_interval_s = check_interval_s
        self._clock = clock
        self._exit = exit_process
        self._calls: list[_Call] = []  # a stack: the main thread pushes and pops, the watchdog reads a copy
        self._stop_deadline: float | None = None
        self._wakeup_read: int | None = None
        self._thread: threading.Thread | None = None

    # -- for the main loop ----------------------------------------------------------------------

    @contextmanager
    def guard(self, call: str, deadline_s: float) -> Iterator[None]:
        """Declare a blocking call: if it has not returned after `deadline_s`, the process exits."""
        entry = _Call(call, self._clock(), deadline_s)
        self._calls = [*self._calls, entry]
        try:
            yield
        finally:
            self._calls = [c for c in self._calls if c is not entry]

    def stop_requested(self) -> None:
        """From now on, the process has `stop_grace_s` to finish and exit by itself."""
        if self._stop_deadline is None:
            self._stop_deadline = self._clock() + self.stop_grace_s

    # -- the watching thread -------------------------------------------------------------------

    def watch_signals(self) -> None:
        """Learn of SIGTERM/SIGINT even while the main thread is stuck in C (call from the main thread)."""
        read_end, write_end = os.pipe()
        os.set_blocking(write_end, False)
        signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        self._wakeup_read = read_end

    def start(self) -> Watchdog:
        self._thread = threading.Thread(target=self._run, name=f"watchdog-{self.name}", daemon=True)
        self._thread.start()
        return self

    def check(self) -> None:
        """One round of checks (the thread calls this every `check_interval_s`; tests call it directly)."""
        now = self._clock()
        for call in list(self._calls):
            blocked_s = now - call.started
            if blocked_s > call.deadline_s:
                log.error("watchdog_call_stuck", service=self.name, call=call.name, blocked_s=round(blocked_s, 1),
                          deadline_s=call.deadline_s, exit_code=EXIT_STUCK)
                self._exit(EXIT_STUCK)
                return
        if self._stop_deadline is not None and now > self._stop_deadline:
            stuck = [c.name for c in self._calls]
            log.error("watchdog_stop_forced", service=self.name, grace_s=self.stop_grace_s, in_calls=stuck,
                      exit_code=EXIT_STUCK)
            self._exit(EXIT_STUCK)

    def _run(self) -> None:
        while True:
            if self._wakeup_read is not None:
                ready, _, _ = select.select([self._wakeup_read], [], [], self.check_interval_s)
                if ready and self._signalled(os.read(self._wakeup_read, 64)):
                    self.stop_requested()
            else:
                time.sleep(self.check_interval_s)
            self.check()

    @staticmethod
    def _signalled(data: bytes) -> bool:
        return any(number in (signal.SIGTERM, signal.SIGINT) for number in data)
