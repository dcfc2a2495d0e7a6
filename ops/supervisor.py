"""Run services as separate OS processes (`payments run ...`): for the demo, tests and chaos runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

STOP_TIMEOUT_S = 30
READY_TIMEOUT_S = 60
# What a service logs once it owns partitions and has restored its state: from then on it answers.
READY_EVENTS = ('"event": "partitions_assigned"', '"event": "projection_assigned"')


class ServiceProcess:
    """One service process with its own log file; it can be stopped cleanly or SIGKILLed."""

    def __init__(self, args: list[str], *, log_dir: Path, env: dict[str, str] | None = None,
                 instance_id: str = "0") -> None:
        self.args = args
        self.env = {**os.environ, "PAYMENTS_INSTANCE_ID": instance_id, **(env or {})}
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{'-'.join(args)}-{instance_id}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen([sys.executable, "-m", "ops.cli", "run", *self.args], env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> ServiceProcess:
        """Wait until the service has been assigned partitions (and restored its state)."""
        deadline = time.monotonic() + timeout_s
        while not any(event in self.log_tail(1_000_000) for event in READY_EVENTS):
            if not self.alive():
                raise RuntimeError(f"{self.args} exited before it was ready:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.args} not ready after {timeout_s:.0f}s:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to finish a transaction or leave the group."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S. Returns the exit code (0 if it never started)."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return int(self.process.returncode)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def start_all(services: list[ServiceProcess], timeout_s: float = READY_TIMEOUT_S) -> list[ServiceProcess]:
    """Start every service, then wait until each is ready: traffic sent before that would wait on a
    participant that is not listening yet, and a saga with short timers would give up on it."""
    for service in services:
        service.start()
    for service in services:
        service.wait_ready(timeout_s)
    return services
