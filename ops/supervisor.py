"""Run services as separate OS processes (`payments run ...`): for the demo, tests and chaos runs.

`Supervisor` keeps a set of them running the way systemd or Kubernetes would: a process that exits
(a watchdog exit, rebuilds exhausted, a crash) is started again, and every exit code is recorded.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

STOP_TIMEOUT_S = 30
READY_TIMEOUT_S = 60
# What a service logs once it owns partitions and has restored its state (a simulator: once it listens).
READY_EVENTS = ('"event": "partitions_restored"', '"event": "projection_assigned"',
                '"event": "partner_sim_listening"', '"event": "http_intake_listening"')


def _ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections (Linux; the IANA range elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 49152, 65535


_PORTS_FLOOR = 20000  # the local stack's fixed ports (19092, 15432, ...) sit below it
_handed_out: set[int] = set()
_ports_lock = threading.Lock()
_rng = random.Random()


def free_port() -> int:
    """A TCP port nobody listens on right now (for a process's health or API port, a broker's listener).

    Chosen below the kernel's ephemeral range: a port the kernel picks for `bind(0)` is one it may also give
    an outgoing connection (a Kafka client's, a database driver's) in the seconds before the process we
    hand the port to binds it, and that process then fails with "address already in use". Never the same
    port twice in one process."""
    low, _ = _ephemeral_ports()
    if low - _PORTS_FLOOR >= 2000:
        with _ports_lock:
            for _ in range(200):
                port = _rng.randrange(_PORTS_FLOOR, low)
                if port not in _handed_out and _bindable(port):
                    _handed_out.add(port)
                    return port
    with socket.socket() as probe:  # a narrow or unknown range: what the kernel gives
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _bindable(port: int) -> bool:
    for host in ("127.0.0.1", "0.0.0.0"):  # noqa: S104 (a probe, closed at once: is the port free anywhere)
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                return False
    return True


class ServiceProcess:
    """One service process with its own log file; it can be stopped cleanly or SIGKILLed."""

    def __init__(self, args: list[str], *, log_dir: Path, env: dict[str, str] | None = None,
                 instance_id: str = "0", health_port: int = 0, niceness: int = 0) -> None:
        self.args = args
        self.niceness = niceness  # added to the process's nice value (the chaos run: brokers have their own cores)
        self.instance_id = instance_id
        self.health_port = health_port
        self.env = {**os.environ, "PAYMENTS_INSTANCE_ID": instance_id, **(env or {})}
        if health_port:
            self.env["PAYMENTS_HEALTH_PORT"] = str(health_port)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{'-'.join(args)}-{instance_id}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._started_at_byte = 0  # where this run's lines begin in the log (a restart appends to it)

    @property
    def name(self) -> str:
        """`payments run` args, e.g. "projection ledger", with `#<instance id>` unless it is the default "0"."""
        label = " ".join(self.args)
        return label if self.instance_id == "0" else f"{label}#{self.instance_id}"

    def start(self) -> ServiceProcess:
        self._started_at_byte = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            nice = ["nice", "-n", str(self.niceness)] if self.niceness else []  # nice execs: the pid stays the same
            # A niced process gets a session, hence (with CONFIG_SCHED_AUTOGROUP) a scheduling group, of its own:
            # the kernel shares the CPU between groups first, so a nice value alone would not reach past them.
            self.process = subprocess.Popen([*nice, sys.executable, "-m", "ops.cli", "run", *self.args], env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=bool(self.niceness))
        if self.niceness:
            with contextlib.suppress(OSError):  # no autogroups on this kernel: `nice` is all there is
                Path(f"/proc/{self.process.pid}/autogroup").write_text(f"{self.niceness}\n")
        return self

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> ServiceProcess:
        """Wait until the service has been assigned partitions (and restored its state) in this run."""
        deadline = time.monotonic() + timeout_s
        while not any(event in self.run_log() for event in READY_EVENTS):
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

    def health(self, path: str = "/healthz") -> tuple[bool, str]:
        """What the process's health endpoint says (it must have been started with a `health_port`)."""
        assert self.health_port, "started without a health port"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=5) as response:
                return True, str(json.loads(response.read())["reason"])
        except urllib.error.HTTPError as error:
            return False, str(json.loads(error.read()).get("reason", error.code))
        except OSError as error:  # not listening (starting, or gone)
            return False, f"no answer: {error}"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def run_log(self) -> str:
        """What this run (since the last `start`) wrote to the log."""
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as log:
            log.seek(self._started_at_byte)
            return log.read().decode(errors="replace")


def start_all(services: list[ServiceProcess], timeout_s: float = READY_TIMEOUT_S) -> list[ServiceProcess]:
    """Start every service, then wait until each is ready: traffic sent before that would wait on a
    participant that is not listening yet, and a saga with short timers would give up on it."""
    try:
        for service in services:
            service.start()
        for service in services:
            service.wait_ready(timeout_s)
    except BaseException:
        terminate_all(services)  # none is left behind, retrying a broker that its caller will stop
        raise
    return services


def terminate_all(services: list[ServiceProcess], grace_s: float = 10.0) -> None:
    """SIGTERM every started service at once, SIGKILL those still running after `grace_s` in all."""
    running = [s.process for s in services if s.process is not None and s.process.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


class Supervisor:
    """Keeps `services` running: one that exits is started again after `restart_pause_s`; exits are recorded."""

    def __init__(self, services: list[ServiceProcess], *, restart_pause_s: float = 1.0,
                 check_interval_s: float = 0.5) -> None:
        self.services = services
        self.restart_pause_s = restart_pause_s
        self.check_interval_s = check_interval_s
        self.exits: list[tuple[list[str], int]] = []  # (args, exit code) of every exit it restarted from
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, ready_timeout_s: float = READY_TIMEOUT_S) -> Supervisor:
        start_all(self.services, ready_timeout_s)
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()
        return self

    def exit_codes(self) -> list[int]:
        return [code for _, code in self.exits]

    def stop(self) -> dict[str, int]:
        """Stop watching, then stop every service (SIGTERM); their exit codes, by `payments run` args (and
        `#instance` when two instances run the same args)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(10)
        return {service.name: service.stop() for service in self.services}

    def _watch(self) -> None:
        while not self._stopping.wait(self.check_interval_s):
            for service in self.services:
                process = service.process
                if process is None or process.poll() is None:
                    continue
                self.exits.append((service.args, int(process.returncode)))
                if self._stopping.wait(self.restart_pause_s):
                    return
                service.start()
