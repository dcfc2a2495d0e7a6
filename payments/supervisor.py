"""Run services as separate OS processes (`payments run ...`): for the demo, tests and chaos runs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

STOP_TIMEOUT_S = 30


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
            self.process = subprocess.Popen([sys.executable, "-m", "payments.cli", "run", *self.args], env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def kill(self) -> None:
        """SIGKILL: a crash, with no chance to finish a transaction or leave the group."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S. Returns the exit code."""
        assert self.process is not None
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
