"""Process plumbing shared by the Kafka and PostgreSQL launchers: pid files, locks, bounded waits."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import psutil

from ops.errors import StackError

POLL_INTERVAL_S = 0.2


def wait_until(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    abort_if: Callable[[], bool] | None = None,
) -> None:
    """Poll `condition` until it holds; raise StackError after `timeout_s` or when `abort_if` holds."""
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return
        if abort_if is not None and abort_if():
            raise StackError(f"gave up waiting for {what}: the process exited")
        if time.monotonic() >= deadline:
            raise StackError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(POLL_INTERVAL_S)


class FileLock:
    """An exclusive advisory lock on a file, held for the `with` block (blocks until acquired)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._fd: int | None = None

    def __enter__(self) -> FileLock:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self._path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def fetch_once(done: Callable[[], bool], lock: Path, make: Callable[[], None]) -> None:
    """Run `make` unless `done()` holds, once across processes: under `lock`, asking `done` again there
    (another process may have made it while this one waited)."""
    if done():
        return
    with FileLock(lock):
        if not done():
            make()


def run_checked(command: list[str], cwd: str, timeout_s: float, env: dict[str, str] | None = None) -> str:
    """Run a fetch or build step; its stdout, or StackError with the end of its stderr."""
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, check=False,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise StackError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr[-2000:]}")
    return result.stdout


class ProcessHandle:
    """A detached child process tracked by a pid file.

    `marker` must appear in the process's command line: a pid file left by a crash may name a
    pid the kernel has since given to an unrelated process, which must never be signalled.
    """

    def __init__(self, pid_file: Path, marker: str) -> None:
        self.pid_file = pid_file
        self.marker = marker

    def alive(self) -> psutil.Process | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            process = psutil.Process(pid)
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            if any(self.marker in part for part in process.cmdline()):
                return process
        except (FileNotFoundError, ValueError, psutil.Error):
            return None
        return None

    def spawn(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        """Start the process; the caller polls the returned handle while it starts up (until `exec`
        completes the child's command line is still ours, so `alive()` cannot tell yet)."""
        with open(log, "ab") as out:
            # A new session: the node outlives the command that started it and ignores its Ctrl-C.
            child = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        self.pid_file.write_text(f"{child.pid}\n")
        return child

    def terminate(self, timeout_s: float) -> None:
        process = self.alive()
        if process is not None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except psutil.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.pid_file.unlink(missing_ok=True)

    def kill(self) -> None:
        process = self.alive()
        if process is not None:
            process.kill()
            process.wait(10)

