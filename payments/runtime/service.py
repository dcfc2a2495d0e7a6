"""The life of one service process: signals, rebuild-on-fatal with a bound, and the exit code it ends with.

The exit codes a supervisor (systemd, Kubernetes, `ops.supervisor`) sees are the EXIT_* constants
below; docs/operations.md lists them with what to do about each.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Final, Protocol

import structlog

from payments.runtime.errors import FatalProcessorError, TopologyError

EXIT_OK: Final = 0  # stopped by SIGTERM/SIGINT after finishing its checkpoint
EXIT_CRASH: Final = 1  # an unexpected exception (a bug): Python's own exit code for one
EXIT_CONFIG: Final = 2  # bad configuration or topology (a topic with the wrong partition count): fix, then restart
EXIT_REBUILDS_EXHAUSTED: Final = 3  # fatal errors kept coming after `rebuilds_max` rebuilds: restart and alert

REBUILDS_MAX: Final = 20
REBUILD_PAUSE_S: Final = 1.0

log = structlog.get_logger(__name__)


class Runnable(Protocol):
    def run(self, stop: threading.Event) -> None: ...


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM and SIGINT ask the loop to finish its checkpoint and leave the group cleanly."""
    def handler(signum: int, _frame: object) -> None:
        log.info("stop_requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_until_stopped(build: Callable[[], Runnable], stop: threading.Event, name: str, *,
                      rebuilds_max: int = REBUILDS_MAX, pause_s: float = REBUILD_PAUSE_S) -> int:
    """Build and run the service until `stop`; after a fatal (e.g. fenced) error, rebuild it from
    committed state. Returns the process's exit code.

    Rebuilding is bounded: a service that keeps failing exits with EXIT_REBUILDS_EXHAUSTED so the
    supervisor restarts it and the alert fires. A topology error exits at once (EXIT_CONFIG).
    """
    for attempt in range(1, rebuilds_max + 1):
        try:
            build().run(stop)
            return EXIT_OK
        except TopologyError as error:
            log.error("service_misconfigured", service=name, error=str(error))
            return EXIT_CONFIG
        except FatalProcessorError as error:
            log.error("service_rebuild", service=name, attempt=attempt, error=str(error))
            if stop.is_set():
                return EXIT_OK
            if attempt < rebuilds_max:
                stop.wait(pause_s)
    log.error("service_rebuilds_exhausted", service=name, rebuilds=rebuilds_max)
    return EXIT_REBUILDS_EXHAUSTED
