"""The life of one service process: signals, rebuild-on-fatal with backoff and a bound, and the exit code.

The exit codes a supervisor (systemd, Kubernetes, `ops.supervisor`) sees are the EXIT_* constants
below; docs/operations.md lists them with what to do about each.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from typing import Final, Protocol

import structlog
from confluent_kafka import KafkaException

from payments.runtime import metrics
from payments.runtime.errors import FatalProcessorError, TopologyError
from payments.runtime.watchdog import EXIT_STUCK, Watchdog

EXIT_OK: Final = 0  # stopped by SIGTERM/SIGINT after finishing its checkpoint
EXIT_CRASH: Final = 1  # an unexpected exception (a bug): Python's own exit code for one
# Bad configuration or topology (a topic with the wrong partition count, or one Kafka refuses to create:
# authorization, a policy, a replication factor): fix, then restart.
EXIT_CONFIG: Final = 2
EXIT_REBUILDS_EXHAUSTED: Final = 3  # fatal errors kept coming, rebuild after rebuild: restart and alert
EXIT_WATCHDOG: Final = EXIT_STUCK  # 4: a blocking call outlived its deadline, or stopping its grace period

REBUILDS_MAX: Final = 20  # consecutive rebuilds that each failed before `healthy_run_s`
REBUILD_PAUSE_S: Final = 1.0  # the first pause; it doubles per consecutive failure, up to REBUILD_PAUSE_MAX_S
REBUILD_PAUSE_MAX_S: Final = 30.0
HEALTHY_RUN_S: Final = 60.0  # a run that lasted this long before failing resets the count

log = structlog.get_logger(__name__)


class Runnable(Protocol):
    def run(self, stop: threading.Event) -> None: ...


def install_signal_handlers(stop: threading.Event, watchdog: Watchdog | None = None) -> None:
    """SIGTERM and SIGINT ask the loop to finish its checkpoint and leave the group cleanly; the
    watchdog bounds how long that may take, even when the main thread is stuck in a call."""
    def handler(signum: int, _frame: object) -> None:
        log.info("stop_requested", signal=signal.Signals(signum).name)
        stop.set()
        if watchdog is not None:
            watchdog.stop_requested()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    if watchdog is not None:
        watchdog.watch_signals()


def run_until_stopped(build: Callable[[], Runnable], stop: threading.Event, name: str, *,
                      rebuilds_max: int = REBUILDS_MAX, pause_s: float = REBUILD_PAUSE_S,
                      pause_max_s: float = REBUILD_PAUSE_MAX_S, healthy_run_s: float = HEALTHY_RUN_S,
                      clock: Callable[[], float] = time.monotonic) -> int:
    """Build and run the service until `stop`; after a fatal error (fenced, a broker or database gone for
    longer than a call's retries), rebuild it from committed state. Returns the process's exit code.

    Rebuilds back off (pause doubling up to `pause_max_s`), so an outage is waited out rather than
    turned into a crash loop. Only `rebuilds_max` consecutive failures, each within `healthy_run_s`
    of its start, end the process (EXIT_REBUILDS_EXHAUSTED); a run that lasted longer resets the count.
    A topology error exits at once (EXIT_CONFIG).
    """
    failures = 0
    metrics.REBUILDS.add(0, {"service": name})  # the series exists from the start: increase() works at once
    while not stop.is_set():
        started = clock()
        try:
            build().run(stop)
            return EXIT_OK
        except TopologyError as error:
            log.error("service_misconfigured", service=name, error=str(error))
            return EXIT_CONFIG
        except (FatalProcessorError, KafkaException) as error:  # a raw Kafka error here is fatal too: rebuild
            failures = 1 if clock() - started >= healthy_run_s else failures + 1
            log.error("service_rebuild", service=name, attempt=failures, error=str(error))
            metrics.REBUILDS.add(1, {"service": name})
            if failures >= rebuilds_max:
                log.error("service_rebuilds_exhausted", service=name, rebuilds=failures)
                return EXIT_REBUILDS_EXHAUSTED
            stop.wait(min(pause_max_s, pause_s * 2 ** (failures - 1)))
    return EXIT_OK
